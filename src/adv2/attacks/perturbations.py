"""Perturbation models of the ADV² loop: each owns its geometry, its warm start and its step rule.

- :class:`Linf`: the L∞ box ``‖x̂ − x‖∞ ≤ eps`` ∩ ``[0, 1]``; PGD warm start; signed steps of
  size ``alpha`` decaying by ``schedule`` (the default for GRAD, CAM, Grad-CAM, RTS).
- :class:`LinfSearch`: the same box, moved by MASK's per-example line search along the
  L2-normalised gradient (``max_length`` halved up to ``halvings`` times until the image stays
  classified as the target); PGD warm start with ``alpha`` (the default for MASK).
- :class:`Flow`: StAdv's flow field (:mod:`adv2.attacks.flow`); the image is ``warp(x, flow)``,
  the penalty ``tau · ℓ_flow``, the step Adam with rate ``lr`` decaying by ``lr_schedule``.

A perturbation object holds settings only; :meth:`begin` makes the per-call state the loop
drives (``start``, ``warm``, ``image``, ``penalty``, ``step``). Every rule is per example.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adv2._validate import check_eps, check_positive
from adv2.attacks.flow import flow_loss, warp_unchecked
from adv2.attacks.pgd import pgd_step
from adv2.attacks.settings import Settings
from adv2.attacks.steps import SearchStep, SignStep

#: Step-size and learning-rate schedules over the joint iterations.
SCHEDULES = ("constant", "cosine", "linear")


def decayed(base: float, t: int, steps: int, schedule: str) -> float:
    """``base`` at joint iteration ``t`` of ``steps`` under ``schedule`` (:data:`SCHEDULES`):
    constant, or decaying from ``base`` to ``base/10`` (``"cosine"``, ``"linear"``)."""
    if schedule == "constant" or steps <= 1:
        return base
    frac = t / (steps - 1)
    lo = base / 10
    if schedule == "linear":
        return base + (lo - base) * frac
    return lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * frac))


def _check_schedule(schedule, name: str) -> str:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown {name} {schedule!r}; expected one of {SCHEDULES}")
    return schedule


def _check_count(v, name: str, lo: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        what = "a non-negative integer" if lo == 0 else f"an integer ≥ {lo}"
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return v


class Perturbation(Settings):
    """Base class: ``name`` (``"linf"`` or ``"flow"``), ``eps`` (``None`` for no ε-ball)."""

    name = ""
    eps: float | None = None

    def begin(self, model, x: torch.Tensor, steps: int):
        """The per-call state for ``steps`` joint iterations on clean images ``x`` ``(N, 3, H, W)``."""
        raise NotImplementedError


class Linf(Perturbation):
    """The L∞ box with signed steps: ``x̂ ← Π(x̂ − α_t · sign(∇))``.

    ``eps``: the box's radius on ``[0, 1]`` images (default 0.031 ≈ 8/255); ``alpha``: the step
    (also the PGD warm start's); ``schedule``: ``"cosine"`` (default) or ``"linear"`` decay from
    ``alpha`` to ``alpha/10`` over the joint iterations, or ``"constant"`` (the authors').
    """

    name = "linf"
    step_rule = "sign"

    def __init__(self, eps: float = 0.031, alpha: float = 1 / 255, schedule: str = "cosine"):
        self.eps = check_eps(eps)
        self.alpha = check_positive(alpha, "alpha")
        self.schedule = _check_schedule(schedule, "alpha schedule")

    def settings(self) -> dict:
        return {"eps": self.eps, "alpha": self.alpha, "schedule": self.schedule}

    def alpha_at(self, t: int, steps: int) -> float:
        """The step at joint iteration ``t`` of ``steps``."""
        return decayed(self.alpha, t, steps, self.schedule)

    def rule(self, model, steps: int):
        return SignStep(lambda t: self.alpha_at(t, steps))

    def begin(self, model, x, steps):
        return _BoxRun(model, self, self.rule(model, steps))


class LinfSearch(Linf):
    """The L∞ box moved by MASK's line search (:class:`~adv2.attacks.steps.SearchStep`): per example,
    the longest of ``max_length, max_length/2, …`` (``halvings`` halvings) along ``−∇/‖∇‖₂`` that
    keeps the target class. ``max_length`` is an L2 length in pixel units of ``[0, 1]`` images
    (Table 10: 0.08 with 12 halvings); ``alpha`` is the PGD warm start's step."""

    step_rule = "search"

    def __init__(self, eps: float = 0.031, alpha: float = 1 / 255, max_length: float = 0.08, halvings: int = 12):
        self.eps = check_eps(eps)
        self.alpha = check_positive(alpha, "alpha")
        self.max_length = check_positive(max_length, "max_length")
        self.halvings = _check_count(halvings, "halvings", 0)

    def settings(self) -> dict:
        return {"eps": self.eps, "alpha": self.alpha, "max_length": self.max_length, "halvings": self.halvings}

    def rule(self, model, steps: int):
        return SearchStep(model, self.max_length, self.halvings)


class Flow(Perturbation):
    """StAdv's flow field: the variable is a per-pixel flow ``(N, 2, H, W)`` (pixels), the image
    ``warp(x, flow)``, the penalty ``tau · ℓ_flow`` (Xiao et al.'s smoothness loss), the step Adam
    with rate ``lr`` (decaying to ``lr/10`` by ``lr_schedule``) and ``betas``; the warm start (if
    any) takes Adam steps on the cross-entropy and the penalty. ``tau=None``: the interpreter's
    Table 11 row."""

    name = "flow"

    def __init__(self, tau: float | None = None, lr: float = 0.01, lr_schedule: str = "constant",
                 betas: tuple[float, float] = (0.9, 0.999)):
        if tau is not None and (not isinstance(tau, (int, float)) or isinstance(tau, bool)
                                or not 0 <= tau < math.inf):
            raise ValueError(f"tau must be a non-negative number, got {tau!r}")
        self.tau = tau
        self.lr = check_positive(lr, "lr")
        self.lr_schedule = _check_schedule(lr_schedule, "lr_schedule")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))

    def settings(self) -> dict:
        return {"tau": self.tau, "lr": self.lr, "lr_schedule": self.lr_schedule, "betas": self.betas}

    def begin(self, model, x, steps):
        if self.tau is None:
            raise ValueError("Flow(tau=None) has no τ: pass tau, or let ADV2 fill in the interpreter's row")
        return _FlowRun(model, self, x, steps)


class _BoxRun:
    """One call's L∞ state: the variable is the image."""

    def __init__(self, model, pert: Linf, rule):
        self.model, self.p, self.rule = model, pert, rule

    def start(self, x):
        return x.clone()

    def warm(self, var, x, target_class):
        return pgd_step(self.model, var, x, target_class, self.p.eps, self.p.alpha)

    def image(self, var):
        return var

    def penalty(self, var):
        return None

    def step(self, ctx, var, grad, t, logits):
        return self.rule(ctx, var, grad, t, logits)


class _FlowRun:
    """One call's flow state: the flow variable, its Adam optimiser and the clean images."""

    def __init__(self, model, pert: Flow, x, steps: int):
        self.model, self.p, self.x, self.steps = model, pert, x, steps

    def start(self, x):
        flow = torch.zeros(x.shape[0], 2, *x.shape[-2:], device=x.device, dtype=x.dtype, requires_grad=True)
        self.opt = torch.optim.Adam([flow], lr=self.p.lr, betas=self.p.betas)
        return flow

    def image(self, var):
        return warp_unchecked(self.x, var)

    def penalty(self, var):
        return self.p.tau * flow_loss(var)

    def warm(self, var, x, target_class):
        loss = F.cross_entropy(self.model(self.image(var)), target_class, reduction="none") + self.penalty(var)
        (grad,) = torch.autograd.grad(loss.sum(), var)
        return self.step(None, var, grad, None, None)

    def step(self, ctx, var, grad, t, logits):
        if t is not None:  # a joint iteration: the learning rate follows lr_schedule
            for group in self.opt.param_groups:
                group["lr"] = decayed(self.p.lr, t, self.steps, self.p.lr_schedule)
        var.grad = grad
        self.opt.step()
        var.grad = None
        return var
