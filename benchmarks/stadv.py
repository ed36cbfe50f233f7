"""StAdv-based ADV² vs plain StAdv on an embedded model at the demo's budgets.

Bars (32 test images per interpreter, both embedded models): ADV²-StAdv success ≥ 95%, its L1 ≤ 1/2
of StAdv's, its IoU above StAdv's. Also the flow's size for both attacks (mean |Δu|, |Δv| in pixels
and ℓ_flow, over the successful examples): stealth in the image as well as in the map.

    python benchmarks/stadv.py [--model shapes-resnet] [--n 32] [--interpreters grad,cam,gradcam,mask,rts]
"""

from __future__ import annotations

import argparse
import copy

from adv2.experiments.demo import BUDGETS, apply_overrides, run_demo

SUCCESS_BAR, L1_BAR = 0.95, 0.5


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--out", default=None)
    ap.add_argument("--interpreters", default="grad,cam,gradcam,mask,rts")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="budget override, as adv2 demo")
    args = ap.parse_args()
    names = tuple(args.interpreters.split(","))
    budgets = apply_overrides(copy.deepcopy(BUDGETS["default"]), args.set)
    summary = run_demo(model=args.model, n=args.n, out=args.out or f"runs/bench-stadv-{args.model}", budgets=budgets,
                       interpreter_names=names, attacks=("stadv", "adv2-stadv"), restart=True, verbose=False)
    by = {(r["attack"], r["interpreter"]): r for r in summary["rows"]}
    flow = {k: budgets[k].get("flow", {}) for k in names}
    print(f"model {args.model}, n={args.n}, stadv {budgets['stadv']}, adv2-stadv {flow}, {summary['seconds']:.0f} s")
    print("| interpreter | StAdv succ | ADV²-StAdv succ | StAdv L1 | ADV²-StAdv L1 | L1 ratio | StAdv IoU | "
          "ADV²-StAdv IoU | StAdv mean |Δ| px | ADV²-StAdv mean |Δ| px | StAdv ℓ_flow | ADV²-StAdv ℓ_flow | "
          "ADV²-StAdv s/img | ok |")
    print("|" + "---|" * 14)
    for interp in names:
        s, a = by[("stadv", interp)], by[("adv2-stadv", interp)]
        ratio = a["l1"] / s["l1"]
        ok = a["success_rate"] >= SUCCESS_BAR and ratio <= L1_BAR and a["iou"] > s["iou"]
        print(f"| {interp} | {s['success_rate']:.3f} | {a['success_rate']:.3f} | {s['l1']:.4f} | {a['l1']:.4f} "
              f"| {ratio:.3f} | {s['iou']:.3f} | {a['iou']:.3f} | {s['flow_mean']:.3f} | {a['flow_mean']:.3f} "
              f"| {s['flow_loss']:.0f} | {a['flow_loss']:.0f} | {a['seconds']:.2f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
