"""AID: adversarial interpretation distillation (the ADV² paper's defense, appendix A2, Eqn 16).

The RTS interpreter is fine-tuned by alternating two steps:

1. its own interpretation loss (:func:`~adv2.interpreters.rts.rts_loss`) on a benign
   batch, so its benign maps stay good;
2. the distillation loss ``ℓ_aid(θ) = −mean |g(x̂; c_t; θ) − g(x; y; θ)|`` on a fresh batch, where
   ``x̂`` is ADV² (target: the benign map) against the **current** ``g``, regenerated at every
   such step: the interpreter learns to give adversarial inputs maps unlike the benign ones, so an
   attack can no longer hide in the benign map. The benign map is held fixed in this step (its
   quality is step 1's job).

Batch-norm statistics stay frozen during the fine-tuning (the network runs in eval mode in both
steps, as it does under attack). Everything random in step ``k`` comes from ``(seed, k)``, and
training is resumable from its checkpoint like :func:`~adv2.interpreters.rts.train_rts` (the
same loop, :func:`adv2.models.training_loop.train_loop`).

The evaluation of the defense (``adv2 eval-aid``) is an experiment:
:func:`adv2.experiments.aid_eval.eval_aid`.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from adv2._validate import check_images, check_targets, num_classes_of
from adv2.attacks import ADV2
from adv2.data import shapes
from adv2.interpreters.rts import RECIPE, RTS, check_recipe, finish_training, run_training, tensor_hash
from adv2.models.training_loop import step_generator

#: AID fine-tuning (``adv2 train-aid``): ``steps`` alternations at learning rate ``lr``; the AID
#: step's weight ``aid``, its batch ``aid_batch`` and the ADV² budget of the attack regenerated
#: at every step (``attack``: ``ADV2`` keyword arguments). Measured choices (README).
AID_RECIPE = dict(steps=300, lr=5e-4, aid=2.0, aid_batch=32, attack=dict(warmup=10, steps=20, alpha=2 / 255),
                  eps=0.031, checkpoint_every=50)


def _check_aid_recipe(r: dict) -> dict:
    unknown = sorted(set(r) - set(AID_RECIPE))
    if unknown:
        raise ValueError(f"unknown AID setting(s) {unknown}; allowed: {sorted(AID_RECIPE)}")
    for k in ("steps", "aid_batch", "checkpoint_every"):
        if not isinstance(r[k], int) or isinstance(r[k], bool) or r[k] < 1:
            raise ValueError(f"{k} must be a positive integer, got {r[k]!r}")
    for k in ("lr", "eps"):
        if not isinstance(r[k], (int, float)) or isinstance(r[k], bool) or not r[k] > 0:
            raise ValueError(f"{k} must be a positive number, got {r[k]!r}")
    if not isinstance(r["aid"], (int, float)) or not r["aid"] >= 0:
        raise ValueError(f"aid must be a non-negative number, got {r['aid']!r}")
    if not isinstance(r["attack"], dict):
        raise ValueError(f"attack must be a dict of ADV2 keyword arguments, got {r['attack']!r}")
    return r


def aid_step_fn(model, x, y, recipe: dict, seed: int):
    """The alternating distillation step of AID, for :func:`run_training`'s ``step_fn``."""
    num_classes = num_classes_of(model)

    def step(k: int, net, opt) -> dict:
        g = step_generator(seed + 7_777, k)
        idx = torch.randint(0, len(x), (recipe["aid_batch"],), generator=g)
        dev = next(net.parameters()).device
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        ct = ((yb + torch.randint(1, num_classes, yb.shape, generator=g).to(dev)) % num_classes)
        params = [p for p in net.parameters()]
        for p in params:
            p.requires_grad_(False)
        net.eval()
        current = RTS(model, net=net)
        with torch.no_grad():
            benign = net(xb, yb)[0]
        attack = ADV2(model, current, eps=recipe["eps"], **recipe["attack"])
        x_adv = attack(xb, ct, target_map=benign).x_adv
        for p in params:
            p.requires_grad_(True)
        adv_map = net(x_adv, ct)[0]
        dist = (adv_map - benign).abs().flatten(1).mean(1)
        loss = -recipe["aid"] * dist.mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)  # the encoder head takes no part
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr  # None: Adam leaves that parameter alone in this step
        opt.step()
        return {"aid": dist.mean().item()}

    return step


def aid(model, rts: RTS, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
        out: str | Path | None = None, name: str = "custom", seed: int = 0, resume: bool = True,
        progress: bool = True, stop_after: int | None = None, **overrides) -> RTS:
    """AID-train a copy of ``rts`` (an :class:`~adv2.interpreters.RTS` for ``model``) and return
    it: an ``RTS`` named ``"rts-aid"`` whose ``record`` holds the recipe, seed, wall time and loss
    log. ``rts`` itself is not changed.

    ``x``, ``y``: training images ``(N, 3, H, W)`` in ``[0, 1]`` and labels (default: the shapes
    train split drawn with ``seed``, as RTS training). ``out``: folder for
    ``rts-aid-<name>.safetensors``, its JSON record and the resumable checkpoint.
    ``overrides``: :data:`AID_RECIPE` entries (e.g. ``steps=100``; ``attack={"steps": 10}`` changes
    that entry of the attack budget and keeps the others).
    """
    if not isinstance(rts, RTS):
        raise ValueError(f"rts must be an adv2.interpreters.RTS, got {type(rts).__name__}")
    r = {**AID_RECIPE, **overrides}
    if isinstance(r["attack"], dict):  # a partial attack setting keeps the other entries
        r["attack"] = {**AID_RECIPE["attack"], **r["attack"]}
    r = _check_aid_recipe(r)
    try:  # bad attack keywords now, not at the first step
        ADV2(model, rts, eps=r["eps"], **r["attack"])
    except TypeError as e:
        raise ValueError(f"bad AID attack setting: {e}") from None
    base = dict(RECIPE)
    if rts.meta.get("recipe"):
        base.update(json.loads(rts.meta["recipe"]))
    recipe = check_recipe({**base, "steps": r["steps"], "lr": r["lr"], "checkpoint_every": r["checkpoint_every"]})
    if x is None:
        x, y, _ = shapes(recipe["n_train"], split="train", seed=seed)
    check_images(x)
    y = check_targets(y, x.shape[0], num_classes_of(model), name="y")
    net = copy.deepcopy(rts.net)
    for p in net.parameters():
        p.requires_grad_(True)
    out = Path(out) if out is not None else None
    ckpt = out / f"rts-aid-{name}.ckpt" if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = run_training(net, model, x, y, recipe, seed, ckpt, resume, f"train-aid {name}",
                       step_fn=aid_step_fn(model, x, y, r, seed),
                       meta={"aid": r, "start": tensor_hash(rts.net.state_dict())}, progress=progress,
                       stop_after=stop_after, train_mode=False)
    record = {"name": name, "seed": seed, "aid": r, "recipe": recipe, "train_seconds": round(time.time() - t0, 1),
              "log": log}
    return finish_training(net, model, out, f"rts-aid-{name}", record, ckpt, aid=r, recipe=recipe)
