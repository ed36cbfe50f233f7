"""Smooth-ReLU surrogate for second-order gradients of ReLU networks.

The gradient map ``∂f_c/∂x`` of a ReLU network is piecewise constant in ``x``: its derivative
(what an attack on the map needs) is zero almost everywhere. :class:`smooth_relu` is a context
manager under which every ReLU of any model (``nn.ReLU`` modules, reused or in-place, and
functional ``F.relu(..., inplace=True)`` / ``torch.relu`` / ``Tensor.relu``) keeps its exact
forward value but gets a smooth derivative ``h(z)`` in the backward pass, so the backward pass is
itself differentiable with a non-zero derivative. It works through a ``TorchFunctionMode``, so
it needs no module swapping and covers functional calls too.

Surrogate derivatives ``h`` (``kind``):

- ``"sqrt"`` (default): ``h(z) = ½ (1 + z / √(z² + τ))``, continuous, ``τ = 1e-4`` by default.
- ``"paper"``: the authors' ``h(z) = z/√(z²+τ)`` for ``z ≥ 0``, ``1 + z/√(z²+τ)`` for ``z < 0``
  (discontinuous at 0).
- ``"softplus"``: ``h(z) = sigmoid(β z)`` (softplus-β, Dombrowski et al.), ``β = 1/τ``-style
  parameter passed as ``beta``.

In-place ReLU calls are executed out of place under the mode (the result is returned, as
torchvision's models use it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

KINDS = ("sqrt", "paper", "softplus")


def _h(z: torch.Tensor, kind: str, tau: float, beta: float) -> torch.Tensor:
    if kind == "sqrt":
        return 0.5 * (1 + z * torch.rsqrt(z * z + tau))
    if kind == "paper":
        return z * torch.rsqrt(z * z + tau) + (z < 0).to(z.dtype)
    return torch.sigmoid(beta * z)


class _SmoothReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, kind, tau, beta):
        ctx.save_for_backward(z)
        ctx.params = (kind, tau, beta)
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * _h(z, *ctx.params), None, None, None


_RELUS = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
}


class smooth_relu(TorchFunctionMode):
    """Context manager: ReLUs keep their forward value and get a smooth backward.

    >>> with smooth_relu(kind="sqrt", tau=1e-4):
    ...     logits = model(x)          # identical logits
    """

    def __init__(self, kind: str = "sqrt", tau: float = 1e-4, beta: float = 10.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown surrogate kind {kind!r}; expected one of {KINDS}")
        if not tau > 0 or not beta > 0:
            raise ValueError(f"tau and beta must be positive, got tau={tau}, beta={beta}")
        self.kind, self.tau, self.beta = kind, float(tau), float(beta)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            return _SmoothReLUFn.apply(args[0], self.kind, self.tau, self.beta)
        return func(*args, **kwargs)
