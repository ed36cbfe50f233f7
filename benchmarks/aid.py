"""AID under an adaptive attacker: ADV² re-run against the AID-trained RTS itself.

Bars: ADV²'s L1 (to the interpreter's own benign map) against RTS+AID at least 2× its
L1 against plain RTS, with the benign pointing game at most 5 points lower. Also the same
attack with 3× the iterations against RTS+AID (does a stronger adaptive attacker close the gap?).

    python benchmarks/aid.py [--n 64] [--models shapes-resnet,shapes-densenet]
"""

from __future__ import annotations

import argparse

from adv2.experiments.aid_eval import eval_aid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--models", default="shapes-resnet,shapes-densenet")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        r = eval_aid(name, out=f"runs/bench-aid-{name}", n=args.n, progress=False)
        rows.append((name, r))
    print("| model | pointing RTS → RTS+AID (drop ≤ 5) | ADV² succ RTS / AID / AID 3× | ADV² L1 RTS | ADV² L1 AID "
          "| ratio (≥ 2) | ADV² L1 AID, 3× iterations | ratio 3× | ADV² IoU RTS / AID | PGD L1 RTS / AID | ok |")
    print("|" + "---|" * 11)
    for name, r in rows:
        a, d = r["rts"], r["rts-aid"]
        drop = 100 * (a["pointing_game"] - d["pointing_game"])
        ratio, ratio3 = d["adv2_l1"] / a["adv2_l1"], d["adv2_l1_large"] / a["adv2_l1"]
        ok = ratio >= 2 and drop <= 5
        print(f"| {name} | {a['pointing_game']:.3f} → {d['pointing_game']:.3f} ({-drop:+.1f}) "
              f"| {a['adv2_success']:.3f} / {d['adv2_success']:.3f} / {d['adv2_success_large']:.3f} "
              f"| {a['adv2_l1']:.4f} | {d['adv2_l1']:.4f} | {ratio:.2f} | {d['adv2_l1_large']:.4f} | {ratio3:.2f} "
              f"| {a['adv2_iou']:.3f} / {d['adv2_iou']:.3f} | {a['pgd_l1']:.4f} / {d['pgd_l1']:.4f} "
              f"| {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
