"""Training of the embedded models (reproduces the shipped weights from a seed)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from adv2.data.shapes import NUM_CLASSES, shapes
from adv2.models.normalized import Normalized
from adv2.models.zoo import ARCHS, SHAPES_MEAN, SHAPES_STD

#: Training recipes of the embedded models (``adv2 train-zoo NAME`` uses these).
RECIPES = {
    "shapes-resnet": dict(n_train=20000, epochs=12, batch_size=128, lr=0.1, weight_decay=5e-4),
    "shapes-densenet": dict(n_train=20000, epochs=12, batch_size=128, lr=0.1, weight_decay=5e-4),
}


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns (every shape class is closed under them)."""
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    k = int(torch.randint(0, 4, (1,), generator=g))
    return torch.rot90(x, k, dims=(2, 3))


def accuracy(model, x, y, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
    return correct / max(len(x), 1)


def train_zoo(name: str, out: str | Path, seed: int = 0, progress: bool = True, **overrides) -> dict:
    """Train embedded model ``name`` from ``seed`` and write ``out/<name>.safetensors`` + ``.json``.

    Returns the training record (recipe, seed, test accuracy, wall time).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown embedded model {name!r}; expected one of {sorted(RECIPES)}")
    recipe = {**RECIPES[name], **overrides}
    torch.manual_seed(seed)
    t0 = time.time()
    x, y, _ = shapes(recipe["n_train"], split="train", seed=seed)
    xv, yv, _ = shapes(1000, split="val", seed=seed)
    net = ARCHS[name](num_classes=NUM_CLASSES)
    model = Normalized(net, SHAPES_MEAN, SHAPES_STD)
    opt = torch.optim.SGD(
        net.parameters(), lr=recipe["lr"], momentum=0.9, weight_decay=recipe["weight_decay"], nesterov=True
    )
    bs, epochs = recipe["batch_size"], recipe["epochs"]
    steps_per_epoch = math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe["lr"], total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    g = torch.Generator().manual_seed(seed)
    log = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not progress)
        tot = 0.0
        for i in bar:
            idx = perm[i * bs : (i + 1) * bs]
            xb = _augment(x[idx], g)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
            bar.set_postfix(loss=f"{tot / (i + 1):.3f}")
        acc = accuracy(model, xv, yv)
        log.append({"epoch": epoch + 1, "loss": tot / steps_per_epoch, "val_acc": acc})
        if progress:
            print(f"epoch {epoch + 1}: loss {tot / steps_per_epoch:.4f} val acc {acc:.4f}", flush=True)
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    save_file(state, str(out / f"{name}.safetensors"))
    record = {"name": name, "seed": seed, "recipe": recipe, "train_seconds": round(time.time() - t0, 1), "log": log}
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))
    return record
