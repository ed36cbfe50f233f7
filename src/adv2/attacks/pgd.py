"""Targeted L∞ PGD (Madry et al.), the baseline ADV² is compared against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adv2._validate import check_eps, check_images, check_positive, check_targets, model_call, num_classes_of
from adv2.attacks.result import AttackResult, finish


class PGD:
    """Targeted L∞ projected gradient descent.

    ``x̂ ← clip_{[0,1] ∩ B∞(x, eps)}(x̂ − alpha · sign(∇ CE(f(x̂), c_t)))`` for ``steps``
    steps, from ``x`` (or a uniform random start in the ε-ball with ``random_start=True``,
    seeded by ``seed``), and returns the last iterate, as the paper's baseline does.

    Call: ``atk(x, target_class)`` with ``x`` ``(N, 3, H, W)`` in ``[0, 1]`` and
    ``target_class`` ``(N,)`` → :class:`AttackResult`. If an ``interpreter`` is given, the
    result's ``map`` is its map of ``x_adv`` for ``target_class``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float = 0.031,
        alpha: float = 1 / 255,
        steps: int = 300,
        random_start: bool = False,
        seed: int = 0,
        interpreter=None,
        progress: bool = False,
    ):
        self.model = model
        self.eps = check_eps(eps)
        self.alpha = check_positive(alpha, "alpha")
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        self.steps = steps
        self.random_start = random_start
        self.seed = seed
        self.interpreter = interpreter
        self.progress = progress

    @model_call
    def __call__(self, x: torch.Tensor, target_class: torch.Tensor, target_map=None) -> AttackResult:
        check_images(x)
        target_class = check_targets(target_class, x.shape[0], num_classes_of(self.model))
        x = x.detach()
        x_adv = x.clone()
        if self.random_start:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            noise = (torch.rand(x.shape, generator=g) * 2 - 1).to(x) * self.eps
            x_adv = (x + noise).clamp(0, 1)
        for _ in tqdm(range(self.steps), desc="pgd", disable=not self.progress, leave=False):
            x_adv = pgd_step(self.model, x_adv, x, target_class, self.eps, self.alpha)
        return finish(self.model, x_adv, target_class, self.interpreter)


def pgd_step(model, x_adv, x, target_class, eps, alpha, extra_loss=None):
    """One targeted sign step on cross-entropy towards ``target_class`` (per-example loss sum)."""
    x_adv = x_adv.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv), target_class, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    return project(x_adv.detach() - alpha * grad.sign(), x, eps)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L∞ ball of radius ``eps`` around ``x`` intersected with ``[0, 1]``."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def quantize(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Round ``x_adv`` to 8-bit pixel values (multiples of 1/255) while staying inside the L∞ ball
    of radius ``eps`` around ``x`` and ``[0, 1]``: what a saved PNG of the result would hold.
    Where the ball holds no 8-bit value the pixel is left as :func:`project` gives it."""
    q = torch.round(x_adv * 255) / 255
    lo = (torch.ceil((x - eps) * 255 - 1e-4) / 255).clamp_min(0)
    hi = (torch.floor((x + eps) * 255 + 1e-4) / 255).clamp_max(1)
    q = torch.min(torch.max(q, lo), hi)
    return torch.where(lo <= hi, q, project(x_adv, x, eps))
