"""The ``adv2`` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from adv2.experiments.demo import run_demo

    run_demo(model=args.model, fast=args.fast, n=args.n, out=args.out, seed=args.seed,
             batch_size=args.batch_size, interpreter_names=tuple(args.interpreters.split(",")),
             eps=args.eps, overrides=args.set, progress=not args.no_progress)
    return 0


def _train_zoo(args) -> int:
    from adv2.models.loading import weights_dir
    from adv2.models.train import train_zoo

    rec = train_zoo(args.name, args.out or weights_dir(), seed=args.seed, progress=not args.no_progress)
    print(f"{args.name}: val accuracy {rec['log'][-1]['val_acc']:.4f} in {rec['train_seconds']:.0f} s")
    return 0


def _list(args) -> int:
    from adv2 import interpreters
    from adv2.models import EMBEDDED

    print("models:       " + ", ".join(EMBEDDED) + " (embedded); any torchvision classifier with --weights")
    print("interpreters: " + ", ".join(interpreters.names()))
    print("attacks:      pgd, adv2 (sign steps; line search for mask)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adv2", description="ADV²: attacks on interpretable deep learning systems")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="PGD and ADV² against grad, cam, gradcam and mask on an embedded model")
    d.add_argument("--fast", action="store_true", help="fewer images and smaller budgets (a few minutes on 2 cores)")
    d.add_argument("--model", default="shapes-resnet", help="shapes-resnet (default) or shapes-densenet")
    d.add_argument("--n", type=int, default=None, help="number of test images (default 32, --fast 12)")
    d.add_argument("--out", default=None, help="run directory (default runs/demo-MODEL[-fast])")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--eps", type=float, default=0.031, help="L∞ budget on [0, 1] images (default 0.031 ≈ 8/255)")
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--interpreters", default="grad,cam,gradcam,mask", help="comma-separated interpreter names")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an attack budget entry, e.g. mask.n_step=2, mask.interpreter.steps=100, pgd.steps=50")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_demo)
    t = sub.add_parser("train-zoo", help="reproduce an embedded model's weights from a seed")
    t.add_argument("name", help="shapes-resnet or shapes-densenet")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="output folder (default: the package's weights folder)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train_zoo)
    lst = sub.add_parser("list", help="models, interpreters and attacks known by name")
    lst.set_defaults(func=_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"adv2: error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"adv2: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adv2: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
