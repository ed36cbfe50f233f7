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

Second-order gradients are what the GRAD attack pays for, so the mode also writes out, as
single autograd nodes, the backward passes whose generic double backward is slow on the CPU: each
covered activation's backward (``grad · D(z)``, whose derivative ``gg · grad · D'(z)`` is given
in closed form); batch normalisation in eval mode (its backward is the per-channel affine map
``grad · γ/√(var + ε)``); and grouped convolutions (depthwise, as in MobileNet and EfficientNet),
whose backward is written with ``conv_transpose2d`` so that differentiating it costs a
convolution's backward, not one small convolution per channel. Forward values are always those
of the original operations. Under the mode the model's parameters are constants: what is
differentiated is the input (an attack's variable), and no gradient reaches a parameter through a
rewritten operation (batch normalisation, grouped convolutions, PReLU).

In-place calls are executed out of place under the mode (the result is returned, as the modules
and torchvision's models use it).
"""

from __future__ import annotations

import warnings

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
        return _SmoothGradFn.apply(grad, z, None, "relu", (), *ctx.params), None, None, None


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


def _dh(z: torch.Tensor, kind: str, tau: float, beta: float) -> torch.Tensor:
    """``h'(z)``, the derivative of the smooth step (the indicator of ``"paper"`` counts as flat)."""
    if kind in ("sqrt", "paper"):
        r = torch.rsqrt(z * z + tau)
        return (0.5 if kind == "sqrt" else 1.0) * tau * r * r * r
    s = torch.sigmoid(beta * z)
    return beta * s * (1 - s)


def smooth_derivatives(act: str, z: torch.Tensor, p: tuple, w: torch.Tensor | None, kind: str, tau: float,
                       beta: float, second: bool = False):
    """The surrogate derivative ``D(z)`` of activation ``act`` (each step of its true derivative
    made the smooth step ``h``) and, with ``second=True``, also ``D'(z)``: ``(D, D' or None)``."""

    def step(u):
        return _h(u, kind, tau, beta)

    def dstep(u):
        return _dh(u, kind, tau, beta)

    if act == "relu":
        return step(z), dstep(z) if second else None
    if act == "hardtanh":
        lo, hi = p
        return step(z - lo) - step(z - hi), (dstep(z - lo) - dstep(z - hi)) if second else None
    if act in ("leaky_relu", "prelu"):
        a = p[0] if act == "leaky_relu" else _prelu_weight(w, z)
        return a + (1 - a) * step(z), (1 - a) * dstep(z) if second else None
    bump = (step(z + 3) - step(z - 3)) / 6
    dbump = (dstep(z + 3) - dstep(z - 3)) / 6 if second else None
    if act == "hardsigmoid":
        return bump, dbump
    # hardswish = z · hardsigmoid(z): D = hardsigmoid(z) + z · bump(z)
    d2 = ((z > -3) & (z < 3)).to(z.dtype) / 6 + bump + z * dbump if second else None
    return F.hardsigmoid(z) + z * bump, d2


class _SmoothGradFn(torch.autograd.Function):
    """``grad · D(z)``, the backward of a covered activation, as one node whose own backward is
    written out (``gg · D(z)`` and ``gg · grad · D'(z)``; ``D`` is kept from the forward):
    differentiating the backward costs a few element-wise operations instead of autograd's replay
    of every operation in ``D``."""

    @staticmethod
    def forward(ctx, grad, z, w, act, p, kind, tau, beta):
        if act == "hardtanh" and kind == "sqrt":
            d = _hardtanh_sqrt(z, p, tau)
        else:
            d, _ = smooth_derivatives(act, z, p, w, kind, tau, beta)
        ctx.save_for_backward(grad, z, d, w) if w is not None else ctx.save_for_backward(grad, z, d)
        ctx.spec = (act, p, kind, tau, beta)
        return grad * d

    @staticmethod
    def backward(ctx, gg):
        grad, z, d, w = (*ctx.saved_tensors, None)[:4]
        act, p, kind, tau, beta = ctx.spec
        if act == "hardtanh" and kind == "sqrt" and not torch.is_grad_enabled():
            return gg * d, _hardtanh_sqrt(z, p, tau, second=True).mul_(gg).mul_(grad), *([None] * 6)
        _, d2 = smooth_derivatives(act, z, p, w, kind, tau, beta, second=True)
        return gg * d, gg * grad * d2, None, None, None, None, None, None


def _hardtanh_sqrt(z: torch.Tensor, p: tuple, tau: float, second: bool = False) -> torch.Tensor:
    """``D(z)`` (or, with ``second``, ``D'(z)``) for hardtanh (ReLU6) under the ``"sqrt"`` step,
    with few passes over memory: ``D = ½ (a·r_a − b·r_b)``, ``D' = ½ τ (r_a³ − r_b³)``,
    ``a = z − min``, ``b = z − max``, ``r = (· ² + τ)^(−½)``. Not differentiable itself."""
    lo, hi = p
    a = z if lo == 0 else z - lo
    b = z - hi
    ra = (a * a).add_(tau).rsqrt_()
    rb = (b * b).add_(tau).rsqrt_()
    if second:
        return ra.pow_(3).sub_(rb.pow_(3)).mul_(0.5 * tau)
    return ra.mul_(a).sub_(rb.mul_(b)).mul_(0.5)


class _SmoothPiecewiseFn(torch.autograd.Function):
    """Exact forward of a piecewise-linear activation, smooth (and differentiable) backward; PReLU's
    weight ``w`` is a constant here."""

    @staticmethod
    def forward(ctx, z, w, act, p, kind, tau, beta):
        ctx.save_for_backward(z, w) if w is not None else ctx.save_for_backward(z)
        ctx.spec = (act, p, kind, tau, beta)
        return exact(act, z, p, w)

    @staticmethod
    def backward(ctx, grad):
        act, p, kind, tau, beta = ctx.spec
        z, w = (*ctx.saved_tensors, None)[:2]
        return _SmoothGradFn.apply(grad, z, w, act, p, kind, tau, beta), None, None, None, None, None, None


class _EvalBatchNormFn(torch.autograd.Function):
    """Batch normalisation with running statistics (eval mode): ``F.batch_norm`` forward, and a
    backward written as the per-channel affine map it is (``grad · γ / √(var + ε)``), so that
    differentiating it again costs one multiplication, not PyTorch's generic double backward of
    batch normalisation."""

    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, eps):
        scale = torch.rsqrt(var + eps)
        ctx.scale = (scale if weight is None else weight * scale).reshape((1, -1) + (1,) * (x.dim() - 2))
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None, None, None, None, None


def _eval_batch_norm(args, kwargs):
    """``F.batch_norm`` in eval mode (running statistics) through :class:`_EvalBatchNormFn`; ``None``
    where it uses batch statistics."""
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    defaults = (None, None, None, None, None, False, 0.1, 1e-5)
    a = {n: _arg(args, kwargs, i, n, d) for i, (n, d) in enumerate(zip(names, defaults, strict=True))}
    if a["training"] or a["running_mean"] is None or a["running_var"] is None:
        return None
    w, b = (None if v is None else v.detach() for v in (a["weight"], a["bias"]))
    return _EvalBatchNormFn.apply(a["input"], a["running_mean"], a["running_var"], w, b, a["eps"])


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
        ctx.save_for_backward(w)
        ctx.conf = (x.shape, stride, padding, dilation, groups)
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.conf
        out_pad = [shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                   + dilation[i] * (w.shape[2 + i] - 1) + 1) for i in range(2)]
        return F.conv_transpose2d(grad, w, None, stride, padding, out_pad, groups, dilation), *([None] * 6)


def _grouped_conv(args, kwargs):
    """``F.conv2d(input, weight, bias, stride, padding, dilation, groups)`` through
    :class:`_GroupedConvFn` where it is grouped with integer padding; ``None`` where not."""
    defaults = {"input": None, "weight": None, "bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    a = {n: _arg(args, kwargs, i, n, d) for i, (n, d) in enumerate(defaults.items())}
    if a["groups"] == 1 or isinstance(a["padding"], str) or a["input"].dim() != 4:
        return None
    bias = None if a["bias"] is None else a["bias"].detach()
    return _GroupedConvFn.apply(a["input"], a["weight"].detach(), bias, _pair(a["stride"]), _pair(a["padding"]),
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


def renamed_temperature(temperature: float, tau: float | None) -> float:
    """The surrogate's temperature, from its old keyword ``tau`` if given (with a ``DeprecationWarning``)."""
    if tau is None:
        return temperature
    warnings.warn("the surrogate's `tau` is now `temperature` (`tau` is the flow penalty's weight)",
                  DeprecationWarning, stacklevel=3)
    return tau


class smooth_relu(TorchFunctionMode):
    """Context manager: piecewise-linear activations keep their forward value and get a smooth
    backward (see the module's documentation for what is covered).

    >>> with smooth_relu(kind="sqrt", temperature=1e-4):
    ...     logits = model(x)          # identical logits

    ``temperature``: the ``sqrt`` surrogate's smoothing (``τ`` in the module's formulas; spelled
    ``tau`` before, which still works with a ``DeprecationWarning``: ``tau`` now means only the
    flow penalty); ``beta``: the ``paper`` surrogate's softplus sharpness.
    """

    def __init__(self, kind: str = "sqrt", temperature: float = 1e-4, beta: float = 10.0, *, tau: float | None = None):
        super().__init__()
        temperature = renamed_temperature(temperature, tau)
        if kind not in KINDS:
            raise ValueError(f"unknown surrogate kind {kind!r}; expected one of {KINDS}")
        if not temperature > 0 or not beta > 0:
            raise ValueError(f"temperature and beta must be positive, got temperature={temperature}, beta={beta}")
        self.kind, self.temperature, self.beta = kind, float(temperature), float(beta)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            return _SmoothReLUFn.apply(args[0], self.kind, self.temperature, self.beta)
        if func is F.batch_norm:
            out = _eval_batch_norm(args, kwargs)
            if out is not None:
                return out
        if func is F.conv2d:
            out = _grouped_conv(args, kwargs)
            if out is not None:
                return out
        spec = _PIECEWISE.get(func)
        if spec is not None:
            act, p = spec(args, kwargs)
            w = _arg(args, kwargs, 1, "weight", None).detach() if act == "prelu" else None
            return _SmoothPiecewiseFn.apply(args[0], w, act, p, self.kind, self.temperature, self.beta)
        return func(*args, **kwargs)
