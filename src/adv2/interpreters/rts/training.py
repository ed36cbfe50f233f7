"""Training of RTS saliency networks (Dabkowski & Gal 2017; the ADV² paper's Eqn 15).

Per example with class ``c`` and the network's mask ``m`` (upsampled to the image), the loss is::

    λ₁ r_tv(m) + λ₂ r_av(m) − log f_c(φ(x; m)) + λ₃ f_c(φ(x; 1 − m))^λ₄  (+ λ_enc CE(head(x), y))

smoothness (:func:`~adv2.interpreters.mask.tv_term`, β = 2), area ``r_av = mean(m)^p``,
preservation of the kept region and destruction of the removed one, with
``φ(x; m) = m ⊙ x + (1 − m) ⊙ fill(x)`` (the image's mean colour by default, or its blur: see
:func:`fill_of`) and ``f_c`` the softmax probability of the classifier
being explained (frozen: only the network's parameters get gradients, the classifier's mode,
parameters and buffers are never touched). The encoder's own head learns the classes by
cross-entropy. As Dabkowski & Gal did, a fraction ``fake`` of the examples is shown a class the
image does not have: for those only the area and smoothness terms count, so the mask of an
absent class is empty and the class selector matters.

Everything random in step ``k`` (the batch, the fake classes) comes from a generator seeded by
``(seed, k)``, and a checkpoint (network, AdamW state, step; safetensors) is written every
``checkpoint_every`` steps by the shared loop (:func:`adv2.models.training_loop.train_loop`), so an
interrupted run resumed from its checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from adv2._validate import check_images, check_targets, num_classes_of
from adv2.data import shapes
from adv2.interpreters.mask import blur, tv_term
from adv2.interpreters.rts.interpreter import RTS
from adv2.interpreters.rts.network import RTSNet, fingerprint, save_rts, tensor_hash
from adv2.models.training_loop import step_generator, train_loop

#: The training recipe (``adv2 train-rts`` on the embedded models), chosen by measurement
#: (README): loss weights ``tv`` (λ₁), ``area`` (λ₂) with exponent ``area_power``, ``destroy``
#: (λ₃) with exponent ``destroy_power`` (λ₄), ``enc`` on the encoder head, ``fake`` the share
#: of examples shown an absent class, ``fill`` of the removed pixels (``blur_sigma`` for "blur").
RECIPE = dict(n_train=10000, steps=2500, batch_size=64, lr=2e-3, weight_decay=1e-4, width=16, tv=15.0, area=2.0,
              area_power=0.3, destroy=3.0, destroy_power=0.3, enc=1.0, fake=0.3, fill="mean", blur_sigma=5.0,
              checkpoint_every=250)
FILLS = ("mean", "blur")


def check_recipe(recipe: dict) -> dict:
    """Validate a recipe (unknown keys, types, ranges) with messages that name the key."""
    unknown = sorted(set(recipe) - set(RECIPE))
    if unknown:
        raise ValueError(f"unknown RTS training setting(s) {unknown}; allowed: {sorted(RECIPE)}")
    for k in ("n_train", "steps", "batch_size", "width", "checkpoint_every"):
        v = recipe[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    for k in ("lr", "blur_sigma", "area_power", "destroy_power"):
        v = recipe[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < math.inf:
            raise ValueError(f"{k} must be a positive number, got {v!r}")
    for k in ("weight_decay", "tv", "area", "destroy", "enc"):
        v = recipe[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < math.inf:
            raise ValueError(f"{k} must be a non-negative number, got {v!r}")
    if recipe["fill"] not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {recipe['fill']!r}")
    if not isinstance(recipe["fake"], (int, float)) or not 0 <= recipe["fake"] < 1:
        raise ValueError(f"fake must be in [0, 1), got {recipe['fake']!r}")
    return recipe


def fill_of(x: torch.Tensor, recipe: dict) -> torch.Tensor:
    """What removed pixels are replaced with: each image's mean colour (``fill="mean"``) or a
    Gaussian blur of it (``"blur"``, σ = ``blur_sigma``)."""
    if recipe["fill"] == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    return blur(x, recipe["blur_sigma"])


def rts_loss(model, net: RTSNet, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor,
             recipe: dict) -> tuple[torch.Tensor, dict]:
    """The training loss (mean over the batch) of ``net`` explaining ``model``, and its parts.

    ``x`` ``(N, 3, H, W)`` in ``[0, 1]``, ``y`` the true classes, ``c`` the classes shown to the
    selector (``c ≠ y`` marks a fake example: area and smoothness only)."""
    mask, head = net(x, c)
    real = (c == y).float()
    up = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
    fill = fill_of(x, recipe)
    both = torch.cat([up * x + (1 - up) * fill, (1 - up) * x + up * fill])
    logp = torch.log_softmax(model(both), 1)
    n = x.shape[0]
    lp_keep = logp[:n].gather(1, c[:, None])[:, 0]
    p_del = logp[n:].gather(1, c[:, None])[:, 0].exp()
    tv = tv_term(mask, beta=2.0)
    area = (mask.flatten(1).mean(1) + 1e-4).pow(recipe["area_power"])
    preserve = -lp_keep
    destroy = (p_del + 1e-6).pow(recipe["destroy_power"])
    per = recipe["tv"] * tv + recipe["area"] * area + real * (preserve + recipe["destroy"] * destroy)
    enc = F.cross_entropy(head, y)
    loss = per.mean() + recipe["enc"] * enc
    parts = {"loss": loss.item(), "area": mask.mean().item(), "preserve": (real * preserve).sum().item()
             / max(real.sum().item(), 1), "destroy": (real * p_del).sum().item() / max(real.sum().item(), 1),
             "enc": enc.item()}
    return loss, parts


def sample_batch(x, y, num_classes: int, seed: int, step: int, batch_size: int, fake: float):
    """``(images, labels, selector classes)`` of training step ``step``: a random batch (with
    replacement), with a share ``fake`` of the selector classes replaced by another class."""
    g = step_generator(seed, step)
    idx = torch.randint(0, len(x), (batch_size,), generator=g)
    shift = torch.randint(1, num_classes, (batch_size,), generator=g)
    is_fake = torch.rand(batch_size, generator=g) < fake
    idx, shift, is_fake = idx.to(y.device), shift.to(y.device), is_fake.to(y.device)
    yb = y[idx]
    c = torch.where(is_fake, (yb + shift) % num_classes, yb)
    return x[idx], yb, c


def lr_at(step: int, steps: int, lr: float) -> float:
    """Cosine decay from ``lr`` to ``lr/20`` with a 5% linear warm-up."""
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    return lr / 20 + 0.5 * (lr - lr / 20) * (1 + math.cos(math.pi * frac))


def run_training(net: RTSNet, model, x, y, recipe: dict, seed: int, ckpt: Path | None, resume: bool, desc: str,
                 step_fn: Callable | None = None, meta: dict | None = None, progress: bool = True,
                 stop_after: int | None = None, train_mode: bool = True) -> list[dict]:
    """RTS training on :func:`adv2.models.training_loop.train_loop`, shared by :func:`train_rts`
    and AID (:func:`adv2.defenses.aid`).

    Each step ``k`` samples its batch from ``(seed, k)`` and takes one AdamW step on
    :func:`rts_loss`; ``step_fn(k, net, opt)``, if given, may take further steps (AID's
    alternating distillation step). Checkpoints (network and optimiser) every
    ``recipe["checkpoint_every"]`` steps to ``ckpt``; ``resume`` continues from it. The classifier
    runs in eval mode (its mode is restored afterwards). ``stop_after``: stop (as if interrupted)
    after that many steps of this call, checkpoint written — for tests. ``train_mode=False`` runs
    the network in eval mode (batch-norm statistics frozen, as AID fine-tunes). Returns the log
    (one entry per 50 steps, and the step it stopped at)."""
    was_training = model.training
    model.eval()  # the classifier is explained as it is used: its batch-norm statistics must not move
    try:
        num_classes, steps = net.num_classes, recipe["steps"]
        opt = torch.optim.AdamW(net.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        meta = {"recipe": recipe, "seed": seed, "classifier": fingerprint(model),
                "data": tensor_hash({"x": x, "y": y}), **(meta or {})}
        params = list(net.parameters())

        def step(k: int) -> dict:
            net.train(train_mode)
            xb, yb, cb = sample_batch(x, y, num_classes, seed, k, recipe["batch_size"], recipe["fake"])
            dev = next(net.parameters()).device
            xb, yb, cb = xb.to(dev), yb.to(dev), cb.to(dev)
            for gr in opt.param_groups:
                gr["lr"] = lr_at(k, steps, recipe["lr"])
            loss, parts = rts_loss(model, net, xb, yb, cb, recipe)
            grads = torch.autograd.grad(loss, params)
            for p, gr in zip(params, grads, strict=True):
                p.grad = gr
            opt.step()
            if step_fn is not None:
                parts.update(step_fn(k, net, opt) or {})
            return parts

        log = train_loop(step, steps, state={"net": net, "opt": opt}, meta=meta, ckpt=ckpt, resume=resume,
                         checkpoint_every=recipe["checkpoint_every"], desc=desc, progress=progress,
                         stop_after=stop_after)
        net.eval()
        return log
    finally:
        model.train(was_training)


def train_rts(model, x: torch.Tensor | None = None, y: torch.Tensor | None = None, out: str | Path | None = None,
              name: str = "custom", seed: int = 0, resume: bool = True, progress: bool = True,
              stop_after: int | None = None, **overrides) -> RTS:
    """Train an RTS network for classifier ``model`` (frozen) and return it as an :class:`RTS`
    whose ``record`` holds the recipe, seed, wall time and loss log.

    ``x`` ``(N, 3, H, W)`` in ``[0, 1]`` and ``y`` ``(N,)``: the training images and labels
    (default: ``RECIPE["n_train"]`` images of the shapes train split drawn with ``seed``).
    ``out``: folder for ``rts-<name>.safetensors``, its JSON record and the resumable checkpoint
    ``rts-<name>.ckpt`` (safetensors; removed when training ends); ``None`` keeps it in memory.
    ``overrides``: recipe entries (:data:`RECIPE`), e.g. ``steps=100``.
    """
    recipe = check_recipe({**RECIPE, **overrides})
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    k = num_classes_of(model)
    if x is None:
        x, y, _ = shapes(recipe["n_train"], split="train", seed=seed)
    check_images(x)
    y = check_targets(y, x.shape[0], k, name="y")
    torch.manual_seed(seed)
    net = RTSNet(k or int(y.max()) + 1, recipe["width"]).to(next(model.parameters()).device)
    out = Path(out) if out is not None else None
    ckpt = out / f"rts-{name}.ckpt" if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = run_training(net, model, x, y, recipe, seed, ckpt, resume, f"train-rts {name}", progress=progress,
                       stop_after=stop_after)
    record = {"name": name, "seed": seed, "recipe": recipe, "train_seconds": round(time.time() - t0, 1), "log": log}
    return finish_training(net, model, out, f"rts-{name}", record, ckpt, recipe=recipe)


def finish_training(net: RTSNet, model, out: Path | None, stem: str, record: dict, ckpt: Path | None,
                    aid: dict | None = None, **meta) -> RTS:
    """The trained network as an :class:`RTS` (frozen, in eval mode, ``record`` attached). If the
    run reached its last step and ``out`` is given, also write ``out/<stem>.safetensors`` and
    ``.json`` and remove the checkpoint."""
    finished = not record["log"] or record["log"][-1]["step"] == record["recipe"]["steps"]
    if out is not None and finished:
        extra = {"aid": aid} if aid is not None else {}
        save_rts(net, out / f"{stem}.safetensors", model, classifier=record["name"], seed=record["seed"],
                 **meta, **extra)
        (out / f"{stem}.json").write_text(json.dumps(record, indent=2))
        ckpt.unlink(missing_ok=True)
    net.eval()
    for p in net.parameters():
        p.grad = None
        p.requires_grad_(False)
    g = RTS(model, net=net, aid=aid is not None)
    g.record = record
    return g
