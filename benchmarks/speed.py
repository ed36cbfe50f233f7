"""Speed: time per ADV² joint iteration over time per PGD iteration (same model, same batch).

Bars: CAM ≤ 1.2×, Grad-CAM ≤ 2×, GRAD ≤ 4× on shapes-resnet (batch 32, 64×64); at 224×224 (batch
4) CAM ≤ 1.2×, Grad-CAM ≤ 1.3×, GRAD ≤ 3.5× on a randomly initialised torchvision ResNet-50 and on
the real EfficientNet-Lite0 (ReLU6 activations, depthwise convolutions; optional extra
``adv2[imagenet]``, skipped without it). MASK has no
bar: its outer iteration (``n_step`` = 4 differentiated Adam steps + the line search) is
reported, without the from-scratch re-solves every ``n_reset`` iterations, whose cost is one
MASK run (``benchmarks/quality.py`` prints it per image). RTS has no bar either: one
forward and backward of its saliency network per iteration, on top of the classifier's.

The flow variant (``ADV2(perturbation="flow")``): its time per joint iteration over the
L∞ variant's for the same interpreter, bar ≤ 1.3× (the warp, the flow loss and Adam instead of
a signed step; MASK's L∞ line search is replaced by Adam too).

    python benchmarks/speed.py [--repeats 5] [--quick] [--models shapes-resnet,resnet50,efficientnet-lite0]
                               [--interpreters cam,gradcam,grad,mask,rts] [--device cuda]

Prints one table; the PGD baseline is measured in the same run, the same way.
"""

from __future__ import annotations

import argparse
import time

import torch

import adv2
from adv2.attacks import ADV2, PGD

BARS = {"cam": 1.2, "gradcam": 2.0, "grad": 4.0, "mask": None, "rts": None}
#: At 224×224 (ResNet-50 with random weights, the real EfficientNet-Lite0 with ReLU6 activations).
BARS_224 = {"cam": 1.2, "gradcam": 1.3, "grad": 3.5, "mask": None, "rts": None}
FLOW_BAR = 1.3


def interpreter(interp, model):
    """MASK: a short solve for the target map (the outer iteration does not depend on it). RTS: the
    shipped network of an embedded model, else an untrained one (timings only)."""
    if interp == "rts":
        try:
            return adv2.interpreters.get("rts", model)
        except ValueError:
            net = adv2.interpreters.RTSNet(1000).eval().to(next(model.parameters()).device)
            return adv2.interpreters.RTS(model, net=net)
    return adv2.interpreters.get(interp, model, **({"steps": 20} if interp == "mask" else {}))


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def per_iteration(make, x, t, iters: int, repeats: int) -> float:
    """Seconds per iteration: (time of ``1 + iters`` iterations − time of 1) / ``iters``, the
    median over ``repeats``, after a warm-up. The difference removes the fixed per-call costs
    (input checks, the benign map, the final evaluation) that are not part of an iteration."""
    short, long = make(1), make(1 + iters)
    short(x, t)  # warm-up (allocations, first-call overheads)
    times = []
    for _ in range(repeats):
        times.append((_timed(lambda: long(x, t)) - _timed(lambda: short(x, t))) / iters)
    return sorted(times)[len(times) // 2]


def bench(name, model, x, t, iters, repeats, bars=BARS, names=("cam", "gradcam", "grad", "mask", "rts")):
    rows = []
    pgd = per_iteration(lambda k: PGD(model, steps=k), x, t, iters, repeats)
    for interp in names:
        g = interpreter(interp, model)
        benign = g(x, t).detach()
        # MASK: no re-solve between the first and the last iteration, so differencing leaves the
        # outer iteration alone
        extra = {"n_reset": 10**6} if interp == "mask" else {}

        def make(k, g=g, benign=benign, extra=extra, perturbation="linf"):
            atk = ADV2(model, g, perturbation=perturbation, warmup=0, steps=k, **extra)
            return lambda a, b: atk(a, b, target_map=benign)

        sec = per_iteration(make, x, t, iters, repeats)
        flow = per_iteration(lambda k, make=make: make(k, perturbation="flow"), x, t, iters, repeats)
        rows.append((name, tuple(x.shape), interp, pgd * 1e3, sec * 1e3, sec / pgd, bars[interp], flow * 1e3))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="shapes-resnet only")
    ap.add_argument("--models", default="shapes-resnet,resnet50,efficientnet-lite0", help="rows to measure")
    ap.add_argument("--interpreters", default="cam,gradcam,grad,mask,rts")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:K")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    models = ["shapes-resnet"] if args.quick else args.models.split(",")
    names = tuple(args.interpreters.split(","))
    x224 = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(dev)
    t224 = torch.tensor([1, 2, 3, 4], device=dev)
    if "shapes-resnet" in models:
        m = adv2.models.load("shapes-resnet", device=dev)
        x, y, _ = adv2.data.shapes(32, split="test", seed=0)
        rows += bench("shapes-resnet", m, x.to(dev), (y.to(dev) + 1) % 10, iters=10, repeats=args.repeats, names=names)
    if "resnet50" in models:
        r50 = adv2.models.load("resnet50", device=dev)  # random init: timings only
        rows += bench("resnet50 (random init)", r50, x224, t224, iters=3, repeats=args.repeats,
                      bars=BARS_224, names=names)
    if "efficientnet-lite0" in models:
        try:
            lite = adv2.models.load("efficientnet-lite0", device=dev)
        except ValueError as e:  # the optional extra is missing
            print(f"skipping efficientnet-lite0: {e}")
        else:
            rows += bench("efficientnet-lite0", lite, x224, t224, iters=3,
                          repeats=args.repeats, bars=BARS_224, names=names)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"threads: {torch.get_num_threads()}"
    print(f"{where}  torch {torch.__version__}")
    print(f"| {'model':24s} | {'batch':16s} | {'interp':7s} | {'PGD ms/it':>9s} | {'ADV² ms/it':>10s} "
          f"| {'ratio':>5s} | {'bar':>4s} | ok | {'flow ms/it':>10s} | {'flow/L∞':>7s} | {'bar':>4s} | ok |")
    print("|" + "---|" * 12)
    for name, shape, interp, p, a, r, bar, fl in rows:
        ok = "-" if bar is None else ("yes" if r <= bar else "NO")
        bar_s = "-" if bar is None else f"{bar:.1f}"
        ok_fl = "yes" if fl / a <= FLOW_BAR else "NO"
        print(f"| {name:24s} | {str(shape):16s} | {interp:7s} | {p:9.1f} | {a:10.1f} | {r:5.2f} | {bar_s:>4s} | {ok} "
              f"| {fl:10.1f} | {fl / a:7.2f} | {FLOW_BAR:4.1f} | {ok_fl} |")


if __name__ == "__main__":
    main()
