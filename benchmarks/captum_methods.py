"""ADV² against interpreters wrapped from Captum, both embedded models.

Bar: ADV² against captum's Saliency, IntegratedGradients and LayerGradCam reaches success ≥ 95%
with L1 ≤ 1/2 of PGD's (L1 between the map of the adversarial image, target class, and the benign
map; PGD at the same ε and a budget as long as ADV²'s warm-up + joint iterations).

    python benchmarks/captum_methods.py [--models shapes-resnet,shapes-densenet] [--n 16] [--steps 300] [--warmup 50]
"""

from __future__ import annotations

import argparse
import time

import torch

import adv2
from adv2 import metrics
from adv2.attacks import ADV2, PGD
from adv2.experiments.audit import build_interpreter
from adv2.experiments.sampling import correctly_classified_shapes, target_classes

SUCCESS_BAR, L1_BAR = 0.95, 0.5
METHODS = ("captum-saliency", "captum-integratedgradients", "captum-layergradcam")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shapes-resnet,shapes-densenet")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()
    print(f"n={args.n} per model, ADV² warm-up {args.warmup} + {args.steps} joint iterations (ε 0.031, α 1/255), "
          f"PGD {args.warmup + args.steps} iterations; IntegratedGradients with 8 steps")
    print("| model | method | PGD succ | ADV² succ | PGD L1 | ADV² L1 | L1 ratio | ADV² IoU | ADV² s/img | ok |")
    print("|" + "---|" * 10)
    for model in args.models.split(","):
        net = adv2.models.load(model)
        x, y, _, idx = correctly_classified_shapes(net, args.n)
        ct = target_classes(y, idx, 0, 10)
        pgd = PGD(net, eps=0.031, alpha=1 / 255, steps=args.warmup + args.steps)(x, ct)
        for name in args.methods.split(","):
            g = build_interpreter(name, net)
            benign = g(x, y).detach()
            t0 = time.time()
            res = ADV2(net, g, steps=args.steps, warmup=args.warmup)(x, ct, target_map=benign)
            sec = (time.time() - t0) / args.n
            ok_a, ok_p = res.success, pgd.success
            pmap = g(pgd.x_adv, ct).detach()
            l1_a = float(metrics.lp_distance(res.map, benign)[ok_a].mean())
            l1_p = float(metrics.lp_distance(pmap, benign)[ok_p].mean())
            iou = float(metrics.iou_test(res.map, benign)[ok_a].mean())
            ratio = l1_a / l1_p
            good = float(ok_a.float().mean()) >= SUCCESS_BAR and ratio <= L1_BAR
            print(f"| {model} | {name} | {float(ok_p.float().mean()):.3f} | {float(ok_a.float().mean()):.3f} | "
                  f"{l1_p:.4f} | {l1_a:.4f} | {ratio:.3f} | {iou:.3f} | {sec:.2f} | {'yes' if good else 'NO'} |",
                  flush=True)
            del res
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
