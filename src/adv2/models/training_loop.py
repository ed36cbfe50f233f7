"""One seeded, resumable training loop: the embedded models (:func:`adv2.models.train.train_zoo`),
RTS networks (:func:`adv2.interpreters.rts.train_rts`) and AID (:func:`adv2.defenses.aid`).

A training is ``steps`` calls of a *step function* ``step(k)``, the step's own work (draw its
batch, take its optimiser step) returning numbers to show and log. Everything a training carries
from step to step is in its *state*: named objects with ``state_dict()`` / ``load_state_dict()``
(the network, the optimiser, a scheduler, a random generator wrapped in :class:`GeneratorState`,
the caller's own bookkeeping). Every ``checkpoint_every`` steps the loop writes that state and the
step reached to a checkpoint (safetensors, atomically); a later call with ``resume`` continues from
it and gives the same results as an uninterrupted training, as long as every random draw of a
step comes from the state (or, as :func:`step_generator`, from ``(seed, step)``). The checkpoint
records ``meta`` (recipe, seed, data, ...): a checkpoint of another training is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from adv2._io import write_safetensors


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of training step ``step`` (a pure function of ``(seed, step)``)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 1)


class GeneratorState:
    """A ``torch.Generator`` as training state (its position is saved and restored)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


# ---------------------------------------------------------------------------- checkpoints
def _flatten(obj, key: str, tensors: dict[str, torch.Tensor]):
    """``obj`` (nested dicts, lists, tuples, tensors, numbers, strings) as JSON, its tensors moved
    to ``tensors`` under path-like names. Entries that are none of these (functions) are left out."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                continue
            enc = _flatten(v, f"{key}/{k}", tensors)
            if enc is not _SKIP:
                items.append([k, enc])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        enc = [_flatten(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]
        if any(e is _SKIP for e in enc):
            return _SKIP
        return {"__tuple__": enc} if isinstance(obj, tuple) else enc
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return _SKIP


_SKIP = object()


def _unflatten(enc, tensors: dict[str, torch.Tensor]):
    if isinstance(enc, dict):
        if "__tensor__" in enc:
            return tensors[enc["__tensor__"]]
        if "__tuple__" in enc:
            return tuple(_unflatten(v, tensors) for v in enc["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in enc["__dict__"]}
    if isinstance(enc, list):
        return [_unflatten(v, tensors) for v in enc]
    return enc


def _canonical(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)


def save_checkpoint(path: str | Path, state: dict[str, Any], step: int, meta: dict) -> None:
    """The ``state_dict()`` of every object in ``state``, the ``step`` reached and ``meta``, as one
    safetensors file written atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {name: _flatten(obj.state_dict(), name, tensors) for name, obj in state.items()}
    write_safetensors(path, tensors, metadata={"step": str(step), "meta": _canonical(meta),
                                               "state": json.dumps(skeleton)})


def load_checkpoint(path: str | Path, state: dict[str, Any], meta: dict) -> int:
    """Restore the objects of ``state`` from a checkpoint of :func:`save_checkpoint`; returns its
    step. A checkpoint of another training (other ``meta``: recipe, seed, data, classifier,
    starting network) or one that does not read back is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            info = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 — safe_open has no iterator
        step, saved_meta, skeleton = int(info["step"]), json.loads(info["meta"]), json.loads(info["state"])
    except Exception as e:  # noqa: BLE001 — any unreadable checkpoint is reported the same way
        raise ValueError(f"checkpoint {path} does not read back ({' '.join(str(e).split())}); delete it, or start "
                         "afresh with --restart (resume=False)") from None
    if saved_meta != json.loads(_canonical(meta)) or set(skeleton) != set(state):
        raise ValueError(f"checkpoint {path} belongs to another run (other recipe, seed, data, classifier or "
                         "starting network); delete it, or start afresh with --restart (resume=False)")
    for name, obj in state.items():
        obj.load_state_dict(_unflatten(skeleton[name], tensors))
    return step


# ---------------------------------------------------------------------------- the loop
def train_loop(step: Callable[[int], dict | None], steps: int, state: dict[str, Any] | None = None,
               meta: dict | None = None, ckpt: str | Path | None = None, resume: bool = True,
               checkpoint_every: int | None = None, desc: str = "", progress: bool = True,
               stop_after: int | None = None, log_every: int | None = 50,
               show: tuple[str, ...] = ("loss", "area", "aid")) -> list[dict]:
    """Run ``step(k)`` for ``k`` from the checkpoint's step (``0`` without one) to ``steps − 1``.

    ``step(k)`` returns a dict of numbers (or ``None``); the loop keeps their exponential moving
    averages (factor 0.9), shows those named in ``show`` on the progress bar and logs all of them
    every ``log_every`` steps and at the end. ``state`` (named objects with ``state_dict`` /
    ``load_state_dict``) is written to ``ckpt`` every ``checkpoint_every`` steps, at the last step
    and when stopping; with ``resume`` an existing ``ckpt`` is continued. ``stop_after``: stop (as
    if interrupted) after that many steps of this call, checkpoint written (for tests). Returns the
    log: one entry ``{"step": k + 1, name: average, ...}`` per logged step."""
    state, meta = state or {}, meta or {}
    ckpt = Path(ckpt) if ckpt is not None else None
    start = 0
    if ckpt is not None and resume and ckpt.exists():
        start = load_checkpoint(ckpt, state, meta)
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps)
    run: dict[str, float] = {}
    log: list[dict] = []
    done = 0
    for k in bar:
        parts = step(k) or {}
        for key, v in parts.items():
            run[key] = 0.9 * run.get(key, v) + 0.1 * v
        bar.set_postfix({key: f"{v:.3f}" for key, v in run.items() if key in show})
        done += 1
        last = k + 1 == steps
        stopping = stop_after is not None and done >= stop_after
        if log_every and ((k + 1) % log_every == 0 or last or stopping):
            log.append({"step": k + 1, **{key: round(v, 4) for key, v in run.items()}})
        if ckpt is not None and checkpoint_every and ((k + 1) % checkpoint_every == 0 or last or stopping):
            save_checkpoint(ckpt, state, k + 1, meta)
        if stopping and not last:
            break
    bar.close()
    return log
