"""Quality: ADV² vs PGD on an embedded model at the default budgets, with the noise floor.

Bars (issue 2, 64 test images): ADV² success ≥ 98% for grad, cam, gradcam; ADV² L1 ≤ 1/3 of
PGD's for cam and gradcam, ≤ 0.4 of it for grad; ADV² IoU above PGD's. The noise floor is the
L1 between benign maps of x and of x + N(0, (1/255)²): the distance ADV² should approach.

    python benchmarks/quality.py [--model shapes-resnet] [--n 64]
"""

from __future__ import annotations

import argparse

import torch

import adv2
from adv2.experiments.demo import BUDGETS, run_demo
from adv2.experiments.sampling import correctly_classified_shapes

BARS = {"grad": 0.4, "cam": 1 / 3, "gradcam": 1 / 3}


def noise_floor(model, name, x, y, sigma=1 / 255, seed=0):
    g = adv2.interpreters.get(name, model)
    gen = torch.Generator().manual_seed(seed)
    xn = (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return adv2.metrics.lp_distance(g(x, y), g(xn, y), p=1).mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or f"runs/bench-quality-{args.model}"
    summary = run_demo(model=args.model, n=args.n, out=out, budgets=BUDGETS["default"], verbose=False)
    model = adv2.models.load(args.model)
    x, y, _, _ = correctly_classified_shapes(model, args.n, seed=0)
    by = {(r["attack"], r["interpreter"]): r for r in summary["rows"]}
    print(f"model {args.model}, n={args.n}, budgets {BUDGETS['default']}, {summary['seconds']:.0f} s")
    print("| interpreter | PGD succ | ADV² succ | ADV² succ (8-bit) | PGD L1 | ADV² L1 | L1 ratio | bar | "
          "noise-floor L1 | PGD L2 | ADV² L2 | PGD IoU | ADV² IoU | ok |")
    print("|" + "---|" * 14)
    for interp in ("grad", "cam", "gradcam"):
        p, a = by[("pgd", interp)], by[("adv2", interp)]
        ratio = a["l1"] / p["l1"]
        nf = noise_floor(model, interp, x, y)
        ok = a["success_rate"] >= 0.98 and ratio <= BARS[interp] and a["iou"] > p["iou"]
        print(f"| {interp} | {p['success_rate']:.3f} | {a['success_rate']:.3f} | {a['success_rate_quantized']:.3f} "
              f"| {p['l1']:.4f} | {a['l1']:.4f} | {ratio:.3f} | {BARS[interp]:.3f} | {nf:.4f} "
              f"| {p['l2']:.4f} | {a['l2']:.4f} | {p['iou']:.3f} | {a['iou']:.3f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
