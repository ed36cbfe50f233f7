"""MASK as an interpreter: benign pointing game, noise floor and cost, with and without its jitter.

Bar: benign pointing game ≥ 80% on the embedded test images, MASK at its defaults.
Beside the defaults (jitter ±1 px) the same run measures MASK without jitter (``jitter=0``: a
deterministic MASK, which the attack meets the bars against; docs/results.md). The noise floor is the
mean L1 between the maps of two jitter seeds (0 and 1) on the same benign image: 0 without jitter.

    python benchmarks/mask_pointing.py [--n 64]
"""

from __future__ import annotations

import argparse
import time

import torch

import adv2


def measure(model, x, y, masks, jitter: int, batch: int = 32) -> dict:
    """Pointing game, the seed-0 vs seed-1 noise floor and seconds per image of MASK (defaults but ``jitter``)."""
    maps, seconds = {}, {}
    for seed in (0, 1):
        g = adv2.interpreters.get("mask", model, jitter=jitter, seed=seed)
        t = time.perf_counter()
        with torch.no_grad():
            maps[seed] = torch.cat([g(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)])
        seconds[seed] = time.perf_counter() - t
    return {
        "pointing": adv2.metrics.pointing_game(maps[0], masks).float().mean().item(),
        "floor": (maps[0] - maps[1]).abs().flatten(1).mean(1).mean().item(),
        "s_per_img": seconds[0] / len(x),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="the first N test images (default 64)")
    args = ap.parse_args()
    if args.n < 1:
        raise SystemExit("--n must be at least 1")
    print(f"| model | pointing, defaults (n={args.n}; ≥ 0.80) | pointing, jitter 0 | noise floor L1, defaults "
          "| noise floor L1, jitter 0 | MASK s/img |")
    print("|" + "---|" * 6)
    x, y, masks = adv2.data.shapes(args.n, split="test", seed=0)
    for name in adv2.models.EMBEDDED:
        model = adv2.models.load(name)
        d, j0 = measure(model, x, y, masks, 1), measure(model, x, y, masks, 0)
        ok = "met" if d["pointing"] >= 0.8 else "NOT met"
        print(f"| {name} | **{d['pointing']:.3f}** ({ok}) | {j0['pointing']:.3f} | {d['floor']:.4f} "
              f"| {j0['floor']:.4f} | {d['s_per_img']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
