"""Progress a person can trust: the longest time the run's bar goes without advancing, on the demo
(``adv2 demo --fast`` by default, all interpreters), measured in this run. Bar: at most 10 s on
2 cores (the bar moves with the model's forward passes inside each attack × interpreter cell).

    python benchmarks/progress.py [--full] [--n 12] [--interpreters grad,cam,gradcam,mask,rts] [--threads 2]
                                  [--set KEY=VALUE] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from adv2.experiments import runner
from adv2.experiments.budgets import INTERPRETERS
from adv2.experiments.demo import run_demo

BAR = 10.0


class Recorder(tqdm):
    """The run's bar, recording when it advanced and what it showed."""

    events: list = []  # (time, n advanced, postfix)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Recorder.events.append((time.perf_counter(), 0.0, "start"))
        self._what = "start"

    def update(self, n=1):
        if n > 0:
            Recorder.events.append((time.perf_counter(), n, self._what))
        return super().update(n)

    def set_postfix_str(self, s="", refresh=True):
        self._what = s.split(",")[0]
        return super().set_postfix_str(s, refresh=refresh)

    def close(self):
        if not getattr(self, "_closed", False):  # tqdm closes again when collected: count the first
            self._closed = True
            Recorder.events.append((time.perf_counter(), 0.0, "end"))
        return super().close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the default budgets (32 images) instead of --fast")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--interpreters", default=",".join(INTERPRETERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="keep the run directory here (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runner.tqdm = Recorder
    names = tuple(args.interpreters.split(","))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_demo(fast=not args.full, n=args.n, out=args.out or tmp, interpreter_names=names, overrides=args.set,
                 restart=True, verbose=False)
    wall = time.perf_counter() - t0
    ev = Recorder.events[:next(i for i, e in enumerate(Recorder.events) if e[2] == "end") + 1]
    if args.out:  # the bar's timeline, for a closer look
        Path(args.out, "progress-events.json").write_text(json.dumps([[t - ev[0][0], n, w] for t, n, w in ev]))
    gaps = [(b[0] - a[0], b[2]) for a, b in zip(ev[:-1], ev[1:], strict=True)]
    gap, where = max(gaps)
    moves = sum(n > 0 for _, n, _ in ev)
    print(f"adv2 demo {'(default budgets)' if args.full else '--fast'}, n={args.n or 'default'}, interpreters "
          f"{args.interpreters}, {args.threads} threads, {torch.get_num_threads()} torch threads")
    print("| run | wall s | bar advances | longest gap s | during | bar | ok |")
    print("|---|---|---|---|---|---|---|")
    print(f"| demo{'' if args.full else ' --fast'} | {wall:.0f} | {moves} | {gap:.2f} | {where} | ≤ {BAR:g} | "
          f"{'yes' if gap <= BAR else 'NO'} |")


if __name__ == "__main__":
    main()
