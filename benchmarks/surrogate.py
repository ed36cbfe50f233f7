"""Which smooth-ReLU surrogate for the GRAD attack? ADV² against Grad with each candidate.

Same images, targets and budget for every candidate; maps are evaluated with the exact ReLU.

    python benchmarks/surrogate.py [--model shapes-resnet] [--n 32] [--steps 300]
"""

from __future__ import annotations

import argparse
import time

import adv2
from adv2.attacks import ADV2, PGD
from adv2.experiments.sampling import correctly_classified_shapes, target_classes

CANDIDATES = [
    ("sqrt", dict(surrogate="sqrt", temperature=1e-4)),
    ("sqrt", dict(surrogate="sqrt", temperature=1e-2)),
    ("paper", dict(surrogate="paper", temperature=1e-4)),
    ("softplus", dict(surrogate="softplus", beta=10.0)),
    ("softplus", dict(surrogate="softplus", beta=50.0)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()
    model = adv2.models.load(args.model)
    x, y, _, idx = correctly_classified_shapes(model, args.n, seed=0)
    ct = target_classes(y, idx, 0, 10)
    exact = adv2.interpreters.Grad(model)
    benign = exact(x, y)
    pgd = PGD(model, steps=100, interpreter=exact)(x, ct)
    l1_pgd = adv2.metrics.lp_distance(pgd.map, benign).mean().item()
    print(f"{args.model}, n={args.n}, warmup {args.warmup} + {args.steps} joint steps; PGD L1 {l1_pgd:.4f}")
    print("| surrogate | parameter | ADV² succ | ADV² L1 | L1 / PGD L1 | ADV² IoU | s |")
    print("|" + "---|" * 7)
    for kind, kw in CANDIDATES:
        g = adv2.interpreters.Grad(model, **kw)
        t0 = time.time()
        res = ADV2(model, g, warmup=args.warmup, steps=args.steps)(x, ct, target_map=benign)
        ok = res.success
        l1 = adv2.metrics.lp_distance(res.map, benign)[ok].mean().item()
        iou = adv2.metrics.iou_test(res.map, benign)[ok].mean().item()
        param = f"temperature={kw['temperature']:g}" if "temperature" in kw else f"beta={kw['beta']:g}"
        print(f"| {kind} | {param} | {ok.float().mean():.3f} | {l1:.4f} | {l1 / l1_pgd:.3f} | {iou:.3f} "
              f"| {time.time() - t0:.0f} |")


if __name__ == "__main__":
    main()
