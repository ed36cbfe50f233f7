"""The flow-field perturbation of StAdv (Xiao et al., ICLR 2018): building blocks.

A flow ``r`` ``(N, 2, H, W)`` gives every output pixel ``i = (v, u)`` (row, column) a
displacement ``(Δu_i, Δv_i)`` in pixels; the adversarial pixel is the bilinear interpolation of
the source image at ``(u + Δu_i, v + Δv_i)``. Sampling positions are clamped to the image
(``[0, W − 1] × [0, H − 1]``: the border pixels repeat), and interpolation weights are computed
from the displacement itself rather than through ``grid_sample``'s normalised coordinates, so a
zero flow is exactly the identity and an integer flow moves pixels exactly.

Used by :class:`~adv2.attacks.stadv.StAdv` and ``ADV2(perturbation="flow")``.
"""

from __future__ import annotations

import torch


def check_flow(flow, x: torch.Tensor) -> torch.Tensor:
    """``flow`` must be a finite float tensor ``(N, 2, H, W)`` matching images ``x`` ``(N, C, H, W)``."""
    n, _, h, w = x.shape
    if not isinstance(flow, torch.Tensor) or tuple(flow.shape) != (n, 2, h, w):
        shape = tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise ValueError(f"flow must be a tensor of shape ({n}, 2, {h}, {w}) for these images, got {shape}")
    if not flow.is_floating_point():
        raise ValueError(f"flow must be a float tensor, got dtype {flow.dtype}")
    with torch.no_grad():
        if not torch.isfinite(flow).all():
            raise ValueError("flow contains NaN or Inf values")
    return flow


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Images ``x`` ``(N, C, H, W)`` resampled by ``flow`` ``(N, 2, H, W)`` (channel 0: Δu, the
    column displacement; channel 1: Δv, the row displacement; in pixels). Differentiable w.r.t.
    ``flow`` and ``x``; values stay within the range of ``x`` (up to rounding)."""
    check_flow(flow, x)
    return warp_unchecked(x, flow)


def warp_unchecked(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """:func:`warp` without the input checks, for loops whose flow is their own variable."""
    n, c, h, w = x.shape
    cols = torch.arange(w, dtype=flow.dtype, device=x.device).view(1, 1, w)
    rows = torch.arange(h, dtype=flow.dtype, device=x.device).view(1, h, 1)
    u = (cols + flow[:, 0]).clamp(0, w - 1)
    v = (rows + flow[:, 1]).clamp(0, h - 1)
    u0, v0 = u.detach().floor(), v.detach().floor()
    du, dv = (u - u0)[:, None], (v - v0)[:, None]  # (N, 1, H, W) in [0, 1)
    i00 = (v0 * w + u0).long().reshape(n, 1, h * w)
    right = (u0 < w - 1).long().reshape(n, 1, h * w)  # 0 on the last column: the border repeats
    down = (v0 < h - 1).long().reshape(n, 1, h * w) * w
    flat = x.reshape(n, c, h * w)

    def at(idx):
        return flat.gather(2, idx.expand(n, c, h * w)).reshape(n, c, h, w)

    # two linear interpolations along the row, one between them (exact where du or dv is 0)
    top = torch.lerp(at(i00), at(i00 + right), du)
    bottom = torch.lerp(at(i00 + down), at(i00 + down + right), du)
    return torch.lerp(top, bottom, dv)


def flow_loss(flow: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """StAdv's smoothness loss per example ``(N,)``:
    ``Σ_i Σ_{j ∈ N(i)} (√(‖Δu_i − Δu_j‖² + ‖Δv_i − Δv_j‖² + eps) − √eps)``.

    ``N(i)`` are the **4-connected** neighbours (left, right, up, down) as in the StAdv paper (the
    ADV² authors' code used the diagonal ones), each ordered pair counted once, so every
    unordered neighbour pair contributes twice. ``eps`` keeps the square root differentiable
    where neighbours agree; subtracting ``√eps`` makes a constant flow cost exactly zero."""
    if not isinstance(flow, torch.Tensor) or flow.dim() != 4 or flow.shape[1] != 2:
        shape = tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise ValueError(f"flow must be a tensor of shape (N, 2, H, W), got {shape}")
    root = torch.tensor(eps, dtype=flow.dtype, device=flow.device).sqrt()  # the same rounding as below
    dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    horiz = ((dx * dx).sum(1) + eps).sqrt() - root
    vert = ((dy * dy).sum(1) + eps).sqrt() - root
    return 2 * (horiz.flatten(1).sum(1) + vert.flatten(1).sum(1))
