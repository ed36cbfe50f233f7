"""How far can any attack move a GRAD map, in the audit's L1, while keeping the prediction?

For maps ``a, b`` in ``[0, 1]``, ``|a − b| ≤ a + b`` pixel by pixel, so the L1 of an attacked map
to the benign map is at most ``mean(benign) + mean(attacked)``. This script searches for the
brightest attacked map the model allows (sign steps of ``alpha`` on the surrogate map's mean,
the prediction kept by a cross-entropy term towards it, the exact map evaluated after every
step on the 8-bit grid, per example the brightest iterate that keeps the prediction), and prints
the bound that gives against random noise's L1 (the audit's ``random_l1``: the worst of
``samples`` uniform draws in the ε-ball).

The audit's fragility bar asks for ≥ 3× random noise; a bound under 3 says no search can get
there with this model, interpreter and images, whatever its objective.

    python benchmarks/fragility_bound.py [--model efficientnet-lite0] [--eps 8/255] [--steps 80]
                                         [--alpha 1/255] [--pool 1] [--samples 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import torch
import torch.nn.functional as F

import adv2
from adv2.experiments.audit import random_l1


def brightest(model, g, x, y, eps: float, alpha: float, steps: int, ce: float = 0.05) -> torch.Tensor:
    """Per example, the largest mean of ``g``'s exact map over iterates that keep class ``y``."""
    best = g(x, y).detach().flatten(1).mean(1)
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        logits, m = g.logits_and_map(xa, y, smooth=True)
        obj = m.flatten(1).mean(1).sum() - ce * F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(obj, xa)
        with torch.no_grad():
            xa = (xa + alpha * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
            xq = torch.minimum(torch.maximum(torch.round(xa * 255) / 255, x - eps), x + eps).clamp(0, 1)
            keep = model(xq).argmax(1) == y
        mean = g(xq, y).detach().flatten(1).mean(1)
        best = torch.where(keep, torch.maximum(best, mean), best)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--alpha", default="1/255")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--pool", type=int, default=1, help="GRAD's average pooling (4: the authors' 56×56 at 224)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    eps, alpha = float(Fraction(args.eps)), float(Fraction(args.alpha))
    t0 = time.perf_counter()
    model = adv2.models.load(args.model)
    x, _ = adv2.data.photos(size=224, augment="mirror")
    with torch.no_grad():
        y = model(x).argmax(1)
    g = adv2.interpreters.Grad(model, pool=args.pool)
    benign = g(x, y).detach()
    rnd = random_l1(g, x, y, benign, eps, args.samples, args.seed)
    unrelated = adv2.metrics.lp_distance(benign, benign.roll(1, 0))
    bright = brightest(model, g, x, y, eps, alpha, args.steps)
    mean_b = benign.flatten(1).mean(1)
    bound = mean_b + bright
    print(f"{args.model}, {len(x)} photographs, GRAD pool {args.pool}, ε {args.eps}, {args.steps} steps of "
          f"{args.alpha}, worst of {args.samples} random draws, seed {args.seed}, threads {torch.get_num_threads()}")
    print("| benign map mean | brightest map mean (prediction kept) | L1 bound | random L1 | unrelated L1 "
          "| bound ÷ random (bar 3) |")
    print("|---|---|---|---|---|---|")
    print(f"| {mean_b.mean():.4f} | {bright.mean():.4f} | {bound.mean():.4f} | {rnd.mean():.4f} "
          f"| {unrelated.mean():.4f} | **{bound.mean() / rnd.mean():.2f}** |")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
