"""Smooth surrogate of piecewise-linear activations, for second-order gradients.

The gradient map ``∂f_c/∂x`` of a network built from piecewise-linear activations (ReLU, ReLU6,
hardtanh, LeakyReLU, PReLU, hardsigmoid) is piecewise constant in ``x``: its derivative (what an
attack on the map needs) is zero almost everywhere. :class:`smooth_relu` is a context manager
under which every such activation of any model keeps its exact forward value but gets a smooth
derivative in the backward pass, so the backward pass is itself differentiable with a non-zero
derivative. It works through a ``TorchFunctionMode``, so it needs no module swapping and covers
module calls (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh``, ``nn.LeakyReLU``, ``nn.PReLU``,
``nn.Hardswish``, ``nn.Hardsigmoid``; reused or in-place) and their functional forms
(``F.relu`` / ``torch.relu`` / ``Tensor.relu``, ``F.relu6``, ``F.hardtanh``, ``F.leaky_relu``,
``F.prelu`` / ``torch.prelu``, ``F.hardswish``, ``F.hardsigmoid``, and the in-place ``_``
variants). Smooth activations (SiLU, GELU, sigmoid, softplus, ...) already have second
derivatives and pass through untouched.

Every covered activation's derivative is a step function; the surrogate replaces each step of
height ``Δ`` at a kink ``k`` by ``Δ · h(z − k)``, a smooth step ``h`` (``kind``):

- ``"sqrt"`` (default): ``h(z) = ½ (1 + z / √(z² + τ))``, continuous, ``τ = 1e-4`` by default.
- ``"paper"``: the authors' ``h(z) = z/√(z²+τ)`` for ``z ≥ 0``, ``1 + z/√(z²+τ)`` for ``z < 0``
  (discontinuous at 0).
- ``"softplus"``: ``h(z) = sigmoid(β z)`` (softplus-β, Dombrowski et al.), ``β`` passed as ``beta``.

So ReLU's derivative becomes ``h(z)``, ReLU6's ``h(z) − h(z − 6)``, hardtanh's
``h(z − min) − h(z − max)``, LeakyReLU's and PReLU's ``a + (1 − a) h(z)``, hardsigmoid's
``(h(z + 3) − h(z − 3)) / 6`` and hardswish's (``z · hardsigmoid(z)``)
``hardsigmoid(z) + z (h(z + 3) − h(z − 3)) / 6``.

Grouped convolutions (depthwise, as in MobileNet and EfficientNet) are computed by the same
``F.conv2d`` but get a backward written with convolutions, so that second-order gradients through
them cost a convolution's backward, not one small convolution per channel.

In-place calls are executed out of place under the mode (the result is returned, as the modules
and torchvision's models use it).
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


def _prelu_weight(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """PReLU's slope broadcast against ``z`` (one slope, or one per channel of dimension 1)."""
    if w.numel() == 1 or z.dim() < 2:
        return w.reshape(()) if w.numel() == 1 else w
    return w.reshape(1, -1, *([1] * (z.dim() - 2)))


def exact(act: str, z: torch.Tensor, p: tuple, w: torch.Tensor | None = None) -> torch.Tensor:
    """The exact (out-of-place) activation ``act`` with parameters ``p`` (and PReLU's weight ``w``)."""
    if act == "hardtanh":
        return F.hardtanh(z, p[0], p[1])
    if act == "leaky_relu":
        return F.leaky_relu(z, p[0])
    if act == "prelu":
        return torch.prelu(z, w)
    if act == "hardsigmoid":
        return F.hardsigmoid(z)
    return F.hardswish(z)


def smooth_derivative(act: str, z: torch.Tensor, p: tuple, w: torch.Tensor | None, step) -> torch.Tensor:
    """The surrogate derivative of ``act`` at ``z`` (each step of the true derivative made ``step``)."""
    if act == "hardtanh":
        lo, hi = p
        return step(z - lo) - step(z - hi)
    if act == "leaky_relu":
        return p[0] + (1 - p[0]) * step(z)
    if act == "prelu":
        a = _prelu_weight(w, z)
        return a + (1 - a) * step(z)
    bump = (step(z + 3) - step(z - 3)) / 6
    if act == "hardsigmoid":
        return bump
    return F.hardsigmoid(z) + z * bump  # hardswish


class _SmoothPiecewiseFn(torch.autograd.Function):
    """Exact forward of a piecewise-linear activation, smooth (and differentiable) backward."""

    @staticmethod
    def forward(ctx, z, w, act, p, kind, tau, beta):
        ctx.save_for_backward(z, w) if w is not None else ctx.save_for_backward(z)
        ctx.spec = (act, p, kind, tau, beta)
        return exact(act, z, p, w)

    @staticmethod
    def backward(ctx, grad):
        act, p, kind, tau, beta = ctx.spec
        z, w = (*ctx.saved_tensors, None)[:2]

        def step(u):
            return _h(u, kind, tau, beta)

        gz = grad * smooth_derivative(act, z, p, w, step)
        gw = None
        if w is not None and ctx.needs_input_grad[1]:
            full = grad * z.clamp(max=0)
            gw = full.sum() if w.numel() == 1 else full.transpose(0, 1).reshape(w.numel(), -1).sum(1)
            gw = gw.reshape(w.shape)
        return gz, gw, None, None, None, None, None


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class _GroupedConvFn(torch.autograd.Function):
    """A grouped (e.g. depthwise) 2-D convolution whose backward is written with ``conv_transpose2d``
    and ``conv2d``, so that differentiating the backward (second-order gradients) costs first-order
    convolution backwards. PyTorch's own double backward of a grouped convolution loops over the
    groups on the CPU (one small convolution per channel for a depthwise layer), which made GRAD's
    attack on a MobileNet-style network ten times slower than needed. The forward is ``F.conv2d``."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation, groups, b is not None)
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            out_pad = [x.shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                         + dilation[i] * (w.shape[2 + i] - 1) + 1) for i in range(2)]
            gx = F.conv_transpose2d(grad, w, None, stride, padding, out_pad, groups, dilation)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, w.shape, grad, stride, padding, dilation, groups)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


def _grouped_conv(args, kwargs):
    """``F.conv2d(input, weight, bias, stride, padding, dilation, groups)`` through
    :class:`_GroupedConvFn` where it is grouped with integer padding; ``None`` where not."""
    defaults = {"input": None, "weight": None, "bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    a = {n: _arg(args, kwargs, i, n, d) for i, (n, d) in enumerate(defaults.items())}
    if a["groups"] == 1 or isinstance(a["padding"], str) or a["input"].dim() != 4:
        return None
    return _GroupedConvFn.apply(a["input"], a["weight"], a["bias"], _pair(a["stride"]), _pair(a["padding"]),
                                _pair(a["dilation"]), a["groups"])


_RELUS = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
}


def _arg(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _hardtanh(args, kwargs):
    return "hardtanh", (float(_arg(args, kwargs, 1, "min_val", -1.0)), float(_arg(args, kwargs, 2, "max_val", 1.0)))


def _leaky(args, kwargs):
    return "leaky_relu", (float(_arg(args, kwargs, 1, "negative_slope", 0.01)),)


#: Covered functions → (activation, parameters) from their arguments (after the input).
_PIECEWISE = {
    F.hardtanh: _hardtanh,
    F.hardtanh_: _hardtanh,
    torch._C._nn.hardtanh: _hardtanh,
    F.relu6: lambda a, k: ("hardtanh", (0.0, 6.0)),
    torch._C._nn.relu6: lambda a, k: ("hardtanh", (0.0, 6.0)),
    F.leaky_relu: _leaky,
    F.leaky_relu_: _leaky,
    torch._C._nn.leaky_relu: _leaky,
    F.prelu: lambda a, k: ("prelu", ()),
    torch.prelu: lambda a, k: ("prelu", ()),
    F.hardsigmoid: lambda a, k: ("hardsigmoid", ()),
    torch._C._nn.hardsigmoid: lambda a, k: ("hardsigmoid", ()),
    F.hardswish: lambda a, k: ("hardswish", ()),
    torch._C._nn.hardswish: lambda a, k: ("hardswish", ()),
}
#: What the surrogate covers (names for messages and docs).
COVERED = ("relu", "relu6", "hardtanh", "leaky_relu", "prelu", "hardsigmoid", "hardswish")


class smooth_relu(TorchFunctionMode):
    """Context manager: piecewise-linear activations keep their forward value and get a smooth
    backward (see the module's documentation for what is covered).

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
        if func is F.conv2d:
            out = _grouped_conv(args, kwargs)
            if out is not None:
                return out
        spec = _PIECEWISE.get(func)
        if spec is not None:
            act, p = spec(args, kwargs)
            w = _arg(args, kwargs, 1, "weight", None) if act == "prelu" else None
            return _SmoothPiecewiseFn.apply(args[0], w, act, p, self.kind, self.tau, self.beta)
        return func(*args, **kwargs)
