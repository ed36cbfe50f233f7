"""Scale-out: one process vs ``torchrun --nproc_per_node 2`` on the same 32-image demo run, one
thread per process, both measured in this run. Bar: 2 processes on 2 cores finish in at
most 0.65× the wall time of 1 process. Also checks the per-example rows are identical.

    python benchmarks/shards.py [--n 32] [--interpreters cam,grad] [--attacks pgd,adv2]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAR = 0.65


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "examples.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--interpreters", default="cam,grad")
    ap.add_argument("--attacks", default="pgd,adv2")
    args = ap.parse_args()
    common = ["demo", "-n", str(args.n), "--batch-size", str(args.batch_size), "--interpreters", args.interpreters,
              "--attacks", args.attacks, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "1 process": [sys.executable, "-m", "adv2", *common, "--out", f"{tmp}/one"],
            "torchrun, 2 processes": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc_per_node", "2", "-m", "adv2", *common, "--out", f"{tmp}/two"],
        }
        for name, cmd in runs.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            times[name] = time.perf_counter() - t0
        same = rows(Path(tmp) / "one") == rows(Path(tmp) / "two")
    base = times["1 process"]
    print(f"n={args.n}, batch {args.batch_size}, interpreters {args.interpreters}, attacks {args.attacks}, "
          f"1 thread per process, {os.cpu_count()} cores")
    print("| run | wall s | ratio to 1 process | bar | identical rows | ok |")
    print("|---|---|---|---|---|---|")
    for name, sec in times.items():
        ratio = sec / base
        bar = "-" if name == "1 process" else f"≤ {BAR}"
        ok = "-" if name == "1 process" else ("yes" if ratio <= BAR and same else "NO")
        print(f"| {name} | {sec:.1f} | {ratio:.3f} | {bar} | {same} | {ok} |")


if __name__ == "__main__":
    main()
