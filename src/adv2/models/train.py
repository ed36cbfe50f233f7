"""Training of the embedded models (reproduces the shipped weights from a seed), on the shared
seeded, resumable loop of :mod:`adv2.models.training_loop`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from adv2._io import atomic_write_bytes, write_safetensors
from adv2.data.shapes import NUM_CLASSES, shapes
from adv2.models.normalized import Normalized
from adv2.models.training_loop import GeneratorState, train_loop
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


class _Epochs:
    """The zoo training's own state between steps: the epoch's permutation, its summed loss and
    the per-epoch log (saved in the checkpoint with the network, optimiser, schedule and generator)."""

    def __init__(self):
        self.perm, self.total, self.log = torch.zeros(0, dtype=torch.long), 0.0, []

    def state_dict(self) -> dict:
        return {"perm": self.perm, "total": self.total, "log": self.log}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.total, self.log = state["perm"], float(state["total"]), list(state["log"])


def train_zoo(name: str, out: str | Path, seed: int = 0, progress: bool = True, resume: bool = True,
              stop_after: int | None = None, checkpoint_every: int = 50, **overrides) -> dict:
    """Train embedded model ``name`` from ``seed`` and write ``out/<name>.safetensors`` + ``.json``.

    Runs on the shared seeded, resumable loop (:func:`adv2.models.training_loop.train_loop`): a
    checkpoint ``out/<name>.ckpt`` is written every ``checkpoint_every`` steps, and a rerun with
    ``resume`` continues it to the same weights as an uninterrupted training (the checkpoint is
    removed at the end). ``stop_after``: stop after that many steps (as if interrupted; for tests).
    Returns the training record (recipe, seed, per-epoch loss and validation accuracy, wall time).
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
    ep = _Epochs()

    def step(k: int) -> dict:
        epoch, i = divmod(k, steps_per_epoch)
        if i == 0:  # a new epoch: its order of the training images
            ep.perm, ep.total = torch.randperm(len(x), generator=g), 0.0
        model.train()
        idx = ep.perm[i * bs : (i + 1) * bs]
        xb = _augment(x[idx], g)
        loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ep.total += loss.item()
        if i + 1 == steps_per_epoch:
            acc = accuracy(model, xv, yv)
            ep.log.append({"epoch": epoch + 1, "loss": ep.total / steps_per_epoch, "val_acc": acc})
            if progress:
                print(f"epoch {epoch + 1}: loss {ep.total / steps_per_epoch:.4f} val acc {acc:.4f}", flush=True)
        return {"loss": loss.item()}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{name}.ckpt"
    steps = epochs * steps_per_epoch
    state = {"net": net, "opt": opt, "sched": sched, "generator": GeneratorState(g), "epochs": ep}
    train_loop(step, steps, state=state, meta={"name": name, "recipe": recipe, "seed": seed}, ckpt=ckpt, resume=resume,
               checkpoint_every=checkpoint_every, desc=f"train-zoo {name}", progress=progress, stop_after=stop_after,
               log_every=None)
    model.eval()
    record = {"name": name, "seed": seed, "recipe": recipe, "train_seconds": round(time.time() - t0, 1),
              "log": ep.log}
    if len(ep.log) < epochs:  # stopped early (stop_after): the checkpoint stays for the next call
        record["stopped"] = True
        return record
    weights = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    write_safetensors(out / f"{name}.safetensors", weights)
    atomic_write_bytes(out / f"{name}.json", json.dumps(record, indent=2).encode())
    ckpt.unlink(missing_ok=True)
    return record
