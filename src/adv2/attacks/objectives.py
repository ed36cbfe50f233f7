"""Objectives of the ADV² loop: each owns its losses and the weighting between them.

The loop minimises, per example, ``prediction_loss(logits) + λ_t · s · distance(map)`` where
``λ_t`` follows ``lam_schedule`` and ``s`` is the per-example multiplier of ``lam_adapt``.

- :class:`Hide` (ADV², the default): reach the target class ``c_t`` (cross-entropy) while the
  map stays at the target map ``m_t`` (mean squared error; ``m_t`` = the benign map by default).
- :class:`Manipulate` (Dombrowski et al. 2019): keep the prediction and its confidence
  (cross-entropy towards the benign output distribution), bring the map to a given ``m_t``.
- :class:`Fragility` (Ghorbani et al. 2019): keep the prediction, push the map away from the
  benign one: lower the mass of its top-``k`` pixels (``measure="topk"``), raise the mean
  absolute difference (``"l1"``) or move the centre of mass (``"center_of_mass"``).

``lam=None`` takes the interpreter's row (Table 10 / 11). Attack presets running the last two
are :class:`adv2.attacks.Manipulate` and :class:`adv2.attacks.Fragility`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adv2.attacks.settings import Settings
from adv2.metrics import topk_mask

#: λ schedules over the joint iterations: ramp from ``lam`` to ``2·lam`` (the authors'), or fixed.
LAM_SCHEDULES = ("linear", "constant")
#: What :class:`Fragility` pushes.
MEASURES = ("topk", "center_of_mass", "l1")
#: With ``lam_adapt=γ`` an example's λ multiplier is divided by ``γ ** LAM_ADAPT_DOWN`` at an
#: iteration that is not classified as ``c_t`` (one loss undoes this many gains) and kept in
#: ``LAM_SCALE_RANGE``.
LAM_ADAPT_DOWN = 20
LAM_SCALE_RANGE = (1e-3, 1e6)


def adapt_scale(scale: torch.Tensor, held: torch.Tensor, gamma: float) -> torch.Tensor:
    """One update of the per-example λ multipliers ``(N,)`` (``lam_adapt=gamma``): × ``gamma``
    where the iterate is classified as the target (``held``), ÷ ``gamma ** LAM_ADAPT_DOWN``
    where it is not, clamped to :data:`LAM_SCALE_RANGE`."""
    return torch.where(held, scale * gamma, scale / gamma**LAM_ADAPT_DOWN).clamp(*LAM_SCALE_RANGE)


def _center(m: torch.Tensor) -> torch.Tensor:
    """Differentiable centres of mass ``(N, 2)`` (row, column in pixels) of maps ``(N, 1, h, w)``."""
    h, w = m.shape[-2:]
    mass = m.flatten(1).sum(1).clamp_min(1e-12)
    rows = torch.arange(h, dtype=m.dtype, device=m.device)
    cols = torch.arange(w, dtype=m.dtype, device=m.device)
    return torch.stack([(m.sum(3)[:, 0] * rows).sum(1), (m.sum(2)[:, 0] * cols).sum(1)], 1) / mass[:, None]


class Objective(Settings):
    """Base: λ, its schedule and its per-example adaptation; subclasses define the two losses.

    ``lam``: weight of the map term on the per-pixel mean (``None``: the interpreter's row);
    ``lam_schedule``: :data:`LAM_SCHEDULES`; ``lam_adapt``: γ in ``[1, 2)``, 1 = off (per
    example, λ grows by γ while the iterate holds the target class and shrinks fast when not).
    """

    name = ""
    #: ``False``: keep the model's prediction (no warm start towards another class).
    moves_class = True
    #: ``True``: the map is brought to ``m_t`` (ADV², Manipulate); ``False``: pushed away from it
    #: (Fragility). Terms that play the interpreter's game at ``m_t`` (MASK's ``game_term``) apply
    #: only when it is ``True``.
    towards_target = True

    def __init__(self, lam: float | None = None, lam_schedule: str = "linear", lam_adapt: float = 1.0):
        if lam is not None and (not isinstance(lam, (int, float)) or isinstance(lam, bool) or lam < 0):
            raise ValueError(f"lam must be a non-negative number, got {lam!r}")
        if lam_schedule not in LAM_SCHEDULES:
            raise ValueError(f"unknown lam_schedule {lam_schedule!r}; expected one of {LAM_SCHEDULES}")
        if isinstance(lam_adapt, bool) or not isinstance(lam_adapt, (int, float)) or not 1 <= lam_adapt < 2:
            raise ValueError(f"lam_adapt must be a number in [1, 2) (1 = off), got {lam_adapt!r}")
        self.lam, self.lam_schedule, self.lam_adapt = lam, lam_schedule, float(lam_adapt)

    def settings(self) -> dict:
        return {"lam": self.lam, "lam_schedule": self.lam_schedule, "lam_adapt": self.lam_adapt}

    def lam_at(self, t: int, steps: int) -> float:
        """λ at joint iteration ``t`` (0-based) of ``steps``."""
        if self.lam_schedule == "constant" or steps <= 1:
            return self.lam
        return self.lam * (1 + t / (steps - 1))

    def distance(self, m: torch.Tensor, m_t: torch.Tensor) -> torch.Tensor:
        """The interpretation loss ``(N,)`` of maps ``m`` against ``m_t`` (same size; lower is better)."""
        return (m - m_t).pow(2).flatten(1).mean(1)

    def prediction_loss(self, logits: torch.Tensor, target_class: torch.Tensor, p_benign) -> torch.Tensor:
        """``(N,)``: cross-entropy towards ``target_class``, or towards the benign output
        distribution ``p_benign`` for objectives that keep the prediction."""
        if p_benign is None:
            return F.cross_entropy(logits, target_class, reduction="none")
        return F.cross_entropy(logits, p_benign, reduction="none")


class Hide(Objective):
    """ADV²: make the model predict ``c_t`` while the map stays at ``m_t`` (default: the benign map)."""

    name = "adv2"


class Manipulate(Objective):
    """Keep the prediction and its confidence; bring the map to a given ``m_t``."""

    name = "manipulate"
    moves_class = False


class Fragility(Objective):
    """Keep the prediction; push the map away from the benign one, as ``measure`` says
    (:data:`MEASURES`; ``k``: the top fraction of pixels for ``"topk"``)."""

    name = "fragility"
    moves_class = False
    towards_target = False

    def __init__(self, measure: str = "topk", k: float = 0.1, lam: float | None = None, lam_schedule: str = "linear",
                 lam_adapt: float = 1.0):
        super().__init__(lam, lam_schedule, lam_adapt)
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
            raise ValueError(f"k must be a number in (0, 1], got {k!r}")
        self.measure, self.k = measure, float(k)

    def settings(self) -> dict:
        return {"measure": self.measure, "k": self.k, **super().settings()}

    def distance(self, m, m_t):
        if self.measure == "topk":
            top = topk_mask(m_t, self.k).flatten(1).to(m.dtype)
            return (m.flatten(1) * top).sum(1) / top.sum(1)
        if self.measure == "l1":
            return -(m - m_t).abs().flatten(1).mean(1)
        h, w = m.shape[-2:]
        return -(_center(m) - _center(m_t)).norm(dim=1) / math.hypot(h, w)


#: Objective names (the audit's, the configs') → classes.
OBJECTIVES = {"adv2": Hide, "manipulate": Manipulate, "fragility": Fragility}
