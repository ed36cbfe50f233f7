"""The embedded models as benchmarks: clean accuracy, targeted PGD success, pointing game.

Bars: clean test accuracy ≥ 97%; targeted PGD (ε = 0.031, α = 1/255) success
≥ 98% within 300 steps; benign CAM map's maximum inside the object mask for ≥ 90% of the
correctly classified test images (reported for every interpreter).

    python benchmarks/zoo.py [--n-acc 2000] [--n-pgd 64] [--n-point 500]
"""

from __future__ import annotations

import argparse
import json

import torch

import adv2
from adv2.attacks.pgd import pgd_step
from adv2.experiments.sampling import correctly_classified_shapes, target_classes
from adv2.models import weights_dir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-acc", type=int, default=2000)
    ap.add_argument("--n-pgd", type=int, default=64)
    ap.add_argument("--n-point", type=int, default=500)
    args = ap.parse_args()
    rows = []
    for name in adv2.models.EMBEDDED:
        model = adv2.models.load(name)
        x, y, _ = adv2.data.shapes(args.n_acc, split="test", seed=0)
        with torch.no_grad():
            pred = torch.cat([model(x[i : i + 250]).argmax(1) for i in range(0, len(x), 250)])
        acc = (pred == y).float().mean().item()
        xs, ys, masks, idx = correctly_classified_shapes(model, max(args.n_point, args.n_pgd), seed=0)
        ct = target_classes(ys[: args.n_pgd], idx[: args.n_pgd], 0, 10)
        x0 = xs[: args.n_pgd]
        xa, succ = x0.clone(), {}
        for s in range(1, 301):
            xa = pgd_step(model, xa, x0, ct, 0.031, 1 / 255)
            if s in (10, 100, 300):
                with torch.no_grad():
                    succ[s] = (model(xa).argmax(1) == ct).float().mean().item()
        point = {}
        for g in ("cam", "gradcam", "grad"):
            interp = adv2.interpreters.get(g, model)
            maps = torch.cat([interp(xs[i : i + 100], ys[i : i + 100]) for i in range(0, len(xs), 100)])
            point[g] = adv2.metrics.pointing_game(maps, masks).float().mean().item()
        meta = json.loads((weights_dir() / f"{name}.json").read_text())
        size = (weights_dir() / f"{name}.safetensors").stat().st_size / 2**20
        rows.append((name, acc, succ, point, meta["train_seconds"], size))
    print(f"| model | clean acc (n={args.n_acc}) | PGD@10 | PGD@100 | PGD@300 (n={args.n_pgd}) "
          f"| pointing cam | pointing gradcam | pointing grad (n={args.n_point}) | train s | MB |")
    print("|" + "---|" * 10)
    for name, acc, succ, point, secs, mb in rows:
        print(f"| {name} | {acc:.3f} | {succ[10]:.3f} | {succ[100]:.3f} | {succ[300]:.3f} | {point['cam']:.3f} "
              f"| {point['gradcam']:.3f} | {point['grad']:.3f} | {secs:.0f} | {mb:.2f} |")


if __name__ == "__main__":
    main()
