"""StAdv (Xiao et al., ICLR 2018): targeted spatially transformed adversarial examples, the
baseline of ADV²'s flow-field variant. The adversary moves pixels (a flow field, see
:mod:`adv2.attacks.flow`) instead of changing their values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adv2._validate import check_images, check_positive, check_targets, model_call, num_classes_of
from adv2.attacks.flow import flow_loss, warp, warp_unchecked
from adv2.attacks.result import AttackResult, finish


def mean_flow(flow: torch.Tensor) -> torch.Tensor:
    """A flow field's size per example: the mean of ``|Δu|`` and ``|Δv|`` in pixels,
    ``(N, 2, H, W)`` → ``(N,)`` (the runs' ``flow_mean``)."""
    return flow.abs().flatten(1).mean(1)


class StAdv:
    """Targeted StAdv: ``min_r CE(f(warp(x, r)), c_t) + tau · ℓ_flow(r)`` by Adam on the flow ``r``
    (``lr``, ``betas``; the paper's (0.01, 0.9, 0.999)) for ``steps`` steps from a zero flow.

    Per example, the result is the iterate with the smallest ``ℓ_flow`` among those classified as
    ``c_t`` (the last iterate if none is); Adam and the loss act per element and per example, so
    a result does not depend on the batch. Call: ``atk(x, target_class)`` with ``x``
    ``(N, 3, H, W)`` in ``[0, 1]`` → :class:`AttackResult` whose ``flow`` ``(N, 2, H, W)`` (pixels;
    channel 0 Δu along columns, 1 Δv along rows) made ``x_adv``; ``map`` is the ``interpreter``'s
    map of ``x_adv`` for ``target_class`` if one is given.

    ``atk(x, target_class, flow_mean=f)`` (``f`` ``(N,)`` pixels) is StAdv *at a given flow
    size*: per example, the iterate classified as ``c_t`` whose mean flow (:func:`mean_flow`) is
    closest to ``f`` instead. With a small ``tau`` (``tau=0``: the cross-entropy alone) the flow
    keeps growing after the target is reached, so the iterates pass through any size up to what
    ``steps`` allow: the baseline for a flow attack whose flows are larger than StAdv's own.
    """

    def __init__(self, model: torch.nn.Module, tau: float = 5e-4, steps: int = 300, lr: float = 0.01,
                 betas: tuple[float, float] = (0.9, 0.999), interpreter=None, progress: bool = False):
        self.model = model
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0 <= tau < float("inf"):
            raise ValueError(f"tau must be a non-negative number, got {tau!r}")
        self.tau = float(tau)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        self.steps = steps
        self.lr = check_positive(lr, "lr")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = tuple(float(b) for b in betas)
        self.interpreter = interpreter
        self.progress = progress

    @model_call
    def __call__(self, x: torch.Tensor, target_class: torch.Tensor, target_map=None,
                 flow_mean: torch.Tensor | None = None) -> AttackResult:
        check_images(x)
        n = x.shape[0]
        target_class = check_targets(target_class, n, num_classes_of(self.model))
        if flow_mean is not None:
            flow_mean = torch.as_tensor(flow_mean, dtype=x.dtype, device=x.device)
            if flow_mean.shape != (n,) or not bool(torch.isfinite(flow_mean).all()) or bool((flow_mean < 0).any()):
                raise ValueError(f"flow_mean must be ({n},) non-negative finite sizes in pixels, "
                                 f"got shape {tuple(flow_mean.shape)}")
        x = x.detach()
        flow = torch.zeros(n, 2, *x.shape[-2:], device=x.device, dtype=x.dtype, requires_grad=True)
        opt = torch.optim.Adam([flow], lr=self.lr, betas=self.betas)
        best_flow = torch.zeros_like(flow)
        best = torch.full((n,), float("inf"), device=x.device)
        for _ in tqdm(range(self.steps + 1), desc="stadv", disable=not self.progress, leave=False):
            logits = self.model(warp_unchecked(x, flow))
            smooth = flow_loss(flow)
            with torch.no_grad():
                score = smooth if flow_mean is None else (mean_flow(flow) - flow_mean).abs()
                better = (logits.argmax(1) == target_class) & (score < best)
                best = torch.where(better, score, best)
                best_flow = torch.where(better[:, None, None, None], flow, best_flow)
            if _ == self.steps:
                break
            loss = (F.cross_entropy(logits, target_class, reduction="none") + self.tau * smooth).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        found = torch.isfinite(best)
        flow_out = torch.where(found[:, None, None, None], best_flow, flow.detach())
        with torch.no_grad():
            x_adv = warp(x, flow_out)
        res = finish(self.model, x_adv, target_class, self.interpreter)
        res.flow = flow_out
        return res

    def __repr__(self):
        return f"StAdv(tau={self.tau:.4g}, steps={self.steps}, lr={self.lr:.4g})"


#: ``(tau, lr)`` of the StAdv runs :func:`stadv_at_flow` matches from: StAdv's own, then ones whose
#: flows grow further (a smaller τ, none, a larger rate).
AT_FLOW_SETTINGS = ((5e-4, 0.01), (5e-5, 0.01), (1e-5, 0.01), (0.0, 0.01), (0.0, 0.03), (0.0, 0.1))


def stadv_at_flow(model: torch.nn.Module, x: torch.Tensor, target_class: torch.Tensor, flow_mean: torch.Tensor,
                  settings=AT_FLOW_SETTINGS, steps: int = 300, interpreter=None) -> AttackResult:
    """StAdv matched to given flow sizes ``flow_mean`` ``(N,)`` (pixels, :func:`mean_flow`), e.g. a
    flow attack's own, so that two flow attacks are compared at equal perturbation.

    One :class:`StAdv` per ``(tau, lr)`` of ``settings`` (a smaller τ or a larger rate lets the
    flow grow further past the target; StAdv's own τ keeps it small), each keeping per example the
    successful iterate closest to its size; per example the closest of these is the result
    (``x_adv``, ``flow``, ``map`` of the ``interpreter`` if given). A size that none reaches within
    ``steps`` is matched as closely as it can be: compare the result's :func:`mean_flow` with the
    wanted one."""
    flow_mean = torch.as_tensor(flow_mean, dtype=x.dtype, device=x.device)
    best = out = None
    for tau, lr in settings:
        res = StAdv(model, tau=tau, steps=steps, lr=lr)(x, target_class, flow_mean=flow_mean)
        gap = (mean_flow(res.flow) - flow_mean).abs()
        gap = torch.where(res.success, gap, torch.full_like(gap, float("inf")))
        if best is None:
            best, out = gap, res.flow
        else:
            take = gap < best
            best = torch.where(take, gap, best)
            out = torch.where(take[:, None, None, None], res.flow, out)
    with torch.no_grad():
        x_adv = warp(x.detach(), out)
    res = finish(model, x_adv, target_class, interpreter)
    res.flow = out
    return res
