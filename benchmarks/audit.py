"""``adv2 audit`` on both embedded models: worst case (fragility, manipulate, ADV²) vs random noise.

Bars, for Grad and CAM at every ε: the ``fragility`` preset's map distance (L1 to the benign map)
is ≥ 3× that of random noise of the same ε (worst of 8 draws per image), with the prediction kept;
``manipulate`` reaches an L1 to its target map (another image's map) ≤ 1/2 of the benign map's L1
to it (at the largest ε, 8/255, Dombrowski et al.'s setting; smaller budgets are shown).
"unrelated L1" is the mean L1 between two different images' benign maps: a random L1 near it
means noise alone already scrambles the map (GRAD at 224, docs/results.md).

    python benchmarks/audit.py [--models shapes-resnet,shapes-densenet] [--n 12] [--steps 80]
"""

from __future__ import annotations

import argparse

from adv2.experiments.audit import DEFAULT_EPS, run_audit

FRAGILITY_BAR, MANIPULATE_BAR = 3.0, 0.5


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shapes-resnet,shapes-densenet")
    ap.add_argument("--interpreters", default="grad,cam")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--steps", type=int, default=80)
    args = ap.parse_args()
    print("| model | interpreter | ε·255 | fragility succ | fragility L1 | random L1 | unrelated L1 | ratio | "
          "manipulate succ | manipulate L1 / start | ADV² succ | ADV² L1 | ok |")
    print("|" + "---|" * 13)
    for model in args.models.split(","):
        res = run_audit(model, tuple(args.interpreters.split(",")), DEFAULT_EPS, n=args.n, steps=args.steps,
                        out=f"runs/bench-audit-{model}", progress=False, verbose=False)
        by = {(r["interpreter"], r["objective"], r["eps"]): r for r in res["rows"]}
        for name in args.interpreters.split(","):
            for e in DEFAULT_EPS:
                f, m, a = by[(name, "fragility", e)], by[(name, "manipulate", e)], by[(name, "adv2", e)]
                ratio = f["ratio_to_random"] or 0.0
                mrat = m["l1"] / m["l1_start"] if m["l1"] is not None else float("inf")
                ok = f["success_rate"] == 1.0 and ratio >= FRAGILITY_BAR and (mrat <= MANIPULATE_BAR
                                                                              or e != max(DEFAULT_EPS))
                a_l1 = "-" if a["l1"] is None else f"{a['l1']:.4f}"
                print(f"| {model} | {name} | {e * 255:.0f} | {f['success_rate']:.3f} | {f['l1']:.4f} | "
                      f"{f['random_l1']:.4f} | {f['unrelated_l1']:.4f} | {ratio:.1f} | {m['success_rate']:.3f} | "
                      f"{mrat:.3f} | "
                      f"{a['success_rate']:.3f} | {a_l1} | {'yes' if ok else 'NO'} |", flush=True)
        print(f"({model}: {res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
