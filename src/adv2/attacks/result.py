"""``AttackResult``: what every attack returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttackResult:
    """Outcome of an attack on a batch of ``N`` images.

    - ``x_adv``: ``(N, 3, H, W)`` in ``[0, 1]``, detached.
    - ``success``: ``(N,)`` bool, ``f(x_adv).argmax(1) == target_class``.
    - ``confidence``: ``(N,)`` float, probability of the target class under ``f``.
    - ``map``: ``(N, 1, h, w)`` in ``[0, 1]``, the interpreter's map of ``x_adv`` for the
      target class (``None`` for an attack run without an interpreter).
    - ``success_quantized``: ``(N,)`` bool, still classified as the target after rounding
      ``x_adv`` to 8-bit pixels (as a saved PNG is).
    - ``map_distance``: ``(N,)`` float or ``None``, the attack's interpretation loss at
      ``x_adv`` (mean squared error to the target map), where it has one.
    - ``flow``: ``(N, 2, H, W)`` or ``None``, the flow field (pixels) of a flow-perturbation
      attack (:class:`~adv2.attacks.stadv.StAdv`).
    - ``prediction``: ``(N,)`` long, ``f(x_adv).argmax(1)``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    confidence: torch.Tensor
    map: torch.Tensor | None
    success_quantized: torch.Tensor
    map_distance: torch.Tensor | None = None
    flow: torch.Tensor | None = None
    prediction: torch.Tensor | None = None


@torch.no_grad()
def _predict(model, x):
    p = torch.softmax(model(x), dim=1)
    return p


def finish(model, x_adv, target_class, interpreter=None, map_distance=None) -> AttackResult:
    """Evaluate ``x_adv`` and build the :class:`AttackResult`."""
    x_adv = x_adv.detach()
    p = _predict(model, x_adv)
    success = p.argmax(1) == target_class
    conf = p.gather(1, target_class[:, None])[:, 0]
    xq = torch.round(x_adv * 255) / 255
    success_q = _predict(model, xq).argmax(1) == target_class
    m = interpreter(x_adv, target_class).detach() if interpreter is not None else None
    return AttackResult(x_adv, success, conf, m, success_q, map_distance, prediction=p.argmax(1))
