"""MASK as an interpreter: pointing game, noise floor against PGD's map distance, and cost.

Bars, MASK at its defaults on both embedded models: pointing game ≥ 0.85 (ResNet) / ≥ 0.80
(DenseNet) on the first ``--n`` test images (192: at 64, the earlier default also printed as
"first 64", one image is 0.016 and the standard error about 0.05, so rounding-level changes of
MASK moved the figure by three images); noise floor ≤ 0.3 of PGD's map distance. The noise
floor is the mean L1 between the benign maps of two jitter seeds (0 and 100) of the same image;
PGD's distance is the L1 between the benign map and the map of PGD's example (100 steps, ε =
8/255, random targets), under the same seed, averaged over both seeds; both on the first
``--n-floor`` correctly classified of those images. Beside the defaults: Fong & Vedaldi's own
settings (300 steps, one jitter shift per step) and MASK without jitter (``jitter=0``, floor 0).

    python benchmarks/mask_pointing.py [--n 192] [--n-floor 24]
"""

from __future__ import annotations

import argparse
import time

import torch

import adv2
from adv2.attacks import PGD
from adv2.data.selection import target_classes

SETTINGS = {"defaults": {}, "Fong & Vedaldi (300 steps, 1 draw)": {"steps": 300, "jitter_draws": 1},
            "jitter 0": {"jitter": 0}}
BARS = {"shapes-resnet": 0.85, "shapes-densenet": 0.80}


def maps(model, x, y, seed: int, batch: int = 32, **kw) -> torch.Tensor:
    g = adv2.interpreters.get("mask", model, seed=seed, **kw)
    return torch.cat([g(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=192, help="pointing game on the first N test images (default 192)")
    ap.add_argument("--n-floor", type=int, default=24, help="floor and PGD on the first N correctly classified")
    args = ap.parse_args()
    if args.n < 1 or args.n_floor < 1:
        raise SystemExit("--n and --n-floor must be at least 1")
    print(f"| model | MASK | pointing (n={args.n}) | first 64 | floor L1 | PGD L1 | floor / PGD (bar ≤ 0.3) "
          "| s per map |")
    print("|" + "---|" * 8)
    x, y, masks = adv2.data.shapes(args.n, split="test", seed=0)
    for name in adv2.models.EMBEDDED:
        model = adv2.models.load(name)
        with torch.no_grad():
            ok = torch.nonzero(model(x).argmax(1) == y)[: args.n_floor, 0]
        xf, yf = x[ok], y[ok]
        ct = target_classes(yf, ok.tolist(), 0, 10)
        torch.manual_seed(0)
        xp = PGD(model, eps=8 / 255, alpha=1 / 255, steps=100)(xf, ct).x_adv
        for label, kw in SETTINGS.items():
            t = time.perf_counter()
            hits = adv2.metrics.pointing_game(maps(model, x, y, 0, **kw), masks).float()
            point, first = hits.mean().item(), hits[:64].mean().item()
            secs = (time.perf_counter() - t) / len(x)
            m = {s: (maps(model, xf, yf, s, **kw), maps(model, xp, ct, s, **kw)) for s in (0, 100)}
            floor = adv2.metrics.lp_distance(m[0][0], m[100][0]).mean().item()
            pgd = sum(adv2.metrics.lp_distance(m[s][1], m[s][0]).mean().item() for s in (0, 100)) / 2
            bar = f" (≥ {BARS[name]:.2f})" if label == "defaults" and name in BARS else ""
            print(f"| {name} | {label} | **{point:.3f}**{bar} | {first:.3f} | {floor:.4f} | {pgd:.4f} "
                  f"| **{floor / pgd:.3f}** | {secs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
