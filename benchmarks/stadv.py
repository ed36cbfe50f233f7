"""StAdv-based ADV² vs plain StAdv on an embedded model at the demo's budgets.

Bars (32 test images per interpreter, both embedded models): ADV²-StAdv success ≥ 95%, its L1 ≤ 1/2
of StAdv's, its IoU above StAdv's. Also the flow's size for both attacks (mean |Δu|, |Δv| in pixels
and ℓ_flow, over the successful examples): stealth in the image as well as in the map.

ADV²-StAdv's flows are larger than StAdv's, so the second table compares at equal perturbation:
StAdv matched per example to ADV²-StAdv's flow size (:func:`adv2.attacks.stadv.stadv_at_flow`:
smaller τ or a larger rate, stopped at the closest size), over the images both succeeded on.
Bars: mean flows within ±10%, ADV²-StAdv's L1 ≤ 0.6 of the matched StAdv's (GRAD and CAM).

    python benchmarks/stadv.py [--model shapes-resnet] [--n 32] [--interpreters grad,cam,gradcam,mask,rts]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import adv2
from adv2.attacks.stadv import mean_flow, stadv_at_flow
from adv2.experiments.demo import BUDGETS, apply_overrides, run_demo

SUCCESS_BAR, L1_BAR, MATCHED_BAR = 0.95, 0.5, 0.6


def matched_rows(model_name: str, run: Path, names) -> list[str]:
    """Per interpreter: ADV²-StAdv against StAdv matched to its flow sizes (table rows)."""
    t = load_file(str(run / "tensors.safetensors"))
    model = adv2.models.load(model_name)
    x, ct = t["x"], t["target_class"]
    rows = []
    for name in names:
        g = adv2.interpreters.get(name, model)
        flow = t[f"flow_adv2-stadv_{name}"]
        want = mean_flow(flow)
        t0 = time.perf_counter()
        m = stadv_at_flow(model, x, ct, want, interpreter=g)
        secs = (time.perf_counter() - t0) / len(x)
        with torch.no_grad():
            ok_a = model(t[f"x_adv2-stadv_{name}"]).argmax(1) == ct
        both = ok_a & m.success
        benign = t[f"map_benign_{name}"]
        l1_a = adv2.metrics.lp_distance(t[f"map_adv2-stadv_{name}"], benign)[both].mean().item()
        l1_m = adv2.metrics.lp_distance(m.map, benign)[both].mean().item()
        fa, fm = want[both].mean().item(), mean_flow(m.flow)[both].mean().item()
        ok = abs(fm - fa) <= 0.1 * fa and l1_a / l1_m <= MATCHED_BAR
        rows.append(f"| {name} | {int(both.sum())} / {len(x)} | {fa:.3f} | {fm:.3f} ({fm / fa:.2f}) | {l1_m:.4f} "
                    f"| {l1_a:.4f} | **{l1_a / l1_m:.3f}** | {secs:.2f} | {'yes' if ok else 'NO'} |")
    return rows


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
    out = Path(args.out or f"runs/bench-stadv-{args.model}")
    summary = run_demo(model=args.model, n=args.n, out=out, budgets=budgets,
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

    print()
    print("At matched flow: StAdv per example at ADV²-StAdv's flow size, images both succeeded on "
          f"(bars: flows ±10%, L1 ratio ≤ {MATCHED_BAR})")
    print("| interpreter | images | ADV²-StAdv mean |Δ| px | matched StAdv mean |Δ| px | matched StAdv L1 "
          "| ADV²-StAdv L1 | L1 ratio | matched s/img | ok |")
    print("|" + "---|" * 9)
    for row in matched_rows(args.model, out, [k for k in names if k in ("grad", "cam", "gradcam")]):
        print(row)


if __name__ == "__main__":
    main()
