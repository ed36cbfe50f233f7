"""ADV² against MASK at the library's defaults, on a model the defaults were not tuned on.

Trains a small ResNet (width 8, one block per stage: half the embedded model's width) on shapes
images the embedded models never saw (training seed 1, 20 000 images, 10 epochs, flips and
quarter turns; cached in ``--cache``), then attacks ``n`` of its correctly classified test images with
``ADV2(model, Mask(model))`` and no other argument, against PGD (100 steps, ε = 8/255), and
judges both over defender seeds the attack never used (0 and 100, as the runner does). Prints
one table: success, the judged figure ``(ADV² − floor) / (PGD − floor)``, IoU, and seconds per
image of ADV²-MASK against MASK's own map (the cost ratio).

Bars: judged ≤ 0.5, success ≥ 95%, ADV²-MASK ≤ 25 × MASK's own seconds per image.

    python benchmarks/mask_defaults.py [--n 16] [--cache runs/bench-mask-defaults]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import adv2
from adv2.attacks import ADV2, PGD
from adv2.data.selection import target_classes
from adv2.interpreters import Mask
from adv2.models.normalized import Normalized
from adv2.models.zoo import SHAPES_MEAN, SHAPES_STD, shapes_resnet

DEFENDERS = (0, 100)


def train(cache: Path, seed: int = 1, n_train: int = 20000, epochs: int = 10) -> torch.nn.Module:
    """A width-8 shapes ResNet trained from ``seed`` on its own images (cached)."""
    model = Normalized(shapes_resnet(width=8), SHAPES_MEAN, SHAPES_STD)
    path = cache / f"resnet-w8-seed{seed}-{n_train}x{epochs}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    torch.manual_seed(seed)
    x, y, _ = adv2.data.shapes(n_train, split="train", seed=seed)
    bs = 128
    steps = epochs * math.ceil(n_train / bs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n_train, generator=g)
        for i in range(0, n_train, bs):
            idx = perm[i:i + bs]
            xb = x[idx]
            if torch.rand(1, generator=g).item() < 0.5:
                xb = xb.flip(3)
            xb = torch.rot90(xb, int(torch.randint(0, 4, (1,), generator=g)), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--cache", default="runs/bench-mask-defaults")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = train(Path(args.cache))
    train_s = time.perf_counter() - t0
    x, y, _ = adv2.data.shapes(4000, split="test", seed=0)
    with torch.no_grad():
        acc_pred = model(x[:1000]).argmax(1)
    acc = (acc_pred == y[:1000]).float().mean().item()
    ok = acc_pred == y[:1000]
    idx = torch.nonzero(ok)[: args.n, 0]
    x, y = x[idx], y[idx]
    ct = target_classes(y, idx, 0, 10)

    g = Mask(model)
    t = time.perf_counter()
    g(x, y)
    mask_s = (time.perf_counter() - t) / len(x)
    torch.manual_seed(0)
    pgd = PGD(model, eps=8 / 255, alpha=1 / 255, steps=100)(x, ct)
    atk = ADV2(model, Mask(model))
    t = time.perf_counter()
    res = atk(x, ct)
    adv2_s = (time.perf_counter() - t) / len(x)

    l1, floor = adv2.metrics.defender_distances(g, x, y, {"pgd": (pgd.x_adv, ct), "adv2": (res.x_adv, ct)},
                                                seeds=DEFENDERS)
    judged = adv2.metrics.judged_ratio(l1["adv2"], l1["pgd"], floor, res.success, pgd.success)
    benign = g(x, y)
    iou = {k: adv2.metrics.iou_test(g(r.x_adv, ct), benign)[r.success].mean().item()
           for k, r in (("pgd", pgd), ("adv2", res))}
    print(f"model: shapes ResNet width 8, trained from seed 1 on 20 000 images of its own ({train_s:.0f} s incl. "
          f"cache), clean accuracy {acc:.3f}; {len(x)} test images; ADV2(model, Mask(model)): {atk!r}")
    print("| success (bar ≥ 0.95) | PGD L1 (defenders) | ADV² L1 (defenders) | floor | judged (bar ≤ 0.5) "
          "| IoU PGD / ADV² | MASK s/img | ADV²-MASK s/img | cost ratio (bar ≤ 25) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {res.success.float().mean():.3f} | {l1['pgd'].mean():.4f} | {l1['adv2'].mean():.4f} "
          f"| {floor.mean():.4f} | **{judged:.3f}** | {iou['pgd']:.3f} / {iou['adv2']:.3f} | {mask_s:.2f} "
          f"| {adv2_s:.1f} | **{adv2_s / mask_s:.1f}** |")


if __name__ == "__main__":
    main()
