"""Captum attribution methods as adv2 interpreters, and adv2 interpreters for Captum / Quantus users.

:func:`from_captum` wraps a Captum attribution object so that ADV² (and the presets) can attack it.
Captum computes gradients with ``torch.autograd.grad`` without ``create_graph`` (captum #361), so
its maps cannot be differentiated with respect to the input; the wrapper runs the method while
``torch.autograd.grad`` keeps the graph, and (for the input-gradient methods, whose maps of a ReLU
network are piecewise constant in the input) under the smooth-ReLU surrogate, exactly as adv2's
own :class:`~adv2.interpreters.Grad` does. Which methods this makes differentiable:

=========================  ============================================================
differentiable (wrapped)   ``Saliency``, ``InputXGradient``, ``IntegratedGradients``,
                           ``LayerGradCam``, and ``NoiseTunnel`` (SmoothGrad, SmoothGrad²,
                           VarGrad) around one of the input methods: captum's NoiseTunnel
                           runs under ``no_grad``, so the adapter applies the same formula
                           itself, with noise from a seeded generator (``seed=0``; one draw
                           per sample, shared by the batch, so a map does not depend on the
                           batch; attacks draw with ``seed + 1``, so an attack cannot fit the
                           very noise the reported map uses)
refused                    perturbation methods (``Occlusion``, ``FeatureAblation``,
                           ``ShapleyValueSampling``, ``Lime``, ``KernelShap``, ...: piecewise
                           constant in the input, no useful gradient), and methods that
                           rewrite the backward pass with hooks (``GuidedBackprop``,
                           ``Deconvolution``, ``GuidedGradCam``, ``DeepLift``, ``LRP``, ...:
                           their second derivatives are not defined by those hooks)
=========================  ============================================================

The reverse direction: :func:`explain_func` turns an adv2 interpreter into a Quantus
``explain_func`` (numpy in, numpy out), and :class:`CaptumStyle` gives it Captum's
``attribute(inputs, target=...)``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adv2.interpreters.base import Interpreter, minmax
from adv2.interpreters.smooth_relu import renamed_temperature, smooth_relu

#: Captum classes the wrapper makes differentiable: input-gradient methods and layer methods.
INPUT_METHODS = ("Saliency", "InputXGradient", "IntegratedGradients")
LAYER_METHODS = ("LayerGradCam",)
SUPPORTED = (*INPUT_METHODS, *LAYER_METHODS, "NoiseTunnel")


@contextlib.contextmanager
def _graph_through_grad(enabled: bool):
    """While active, every ``torch.autograd.grad`` call keeps its graph (``create_graph=True``)."""
    if not enabled:
        yield
        return
    original = torch.autograd.grad

    def grad(*args, **kwargs):
        kwargs["create_graph"] = True
        kwargs.setdefault("retain_graph", True)
        return original(*args, **kwargs)

    torch.autograd.grad = grad
    try:
        yield
    finally:
        torch.autograd.grad = original


def _kind(method) -> str:
    name = type(method).__name__
    if name == "NoiseTunnel":
        inner = type(getattr(method, "attribution_method", None)).__name__
        if inner not in INPUT_METHODS:
            raise ValueError(f"NoiseTunnel around {inner} is not differentiable here; wrap one of "
                             f"{', '.join(INPUT_METHODS)}")
        return "input"
    if name in INPUT_METHODS:
        return "input"
    if name in LAYER_METHODS:
        return "layer"
    raise ValueError(f"captum's {name} cannot be attacked through its map: adv2 wraps the differentiable methods "
                     f"{', '.join(SUPPORTED)} (perturbation methods have no useful input gradient; hook-based "
                     "methods such as GuidedBackprop, DeepLift or LRP define no second derivative)")


class CaptumInterpreter(Interpreter):
    """A Captum attribution method as an adv2 interpreter (:func:`from_captum`).

    Maps: input methods ``(N, 1, H/pool, W/pool)`` from the ``(N, 3, H, W)`` attributions reduced
    over colour channels (``reduce="max"``: max of ``|a|``, which makes ``Saliency`` equal to
    :class:`~adv2.interpreters.Grad`; ``"sum"``: ``|Σ_c a|``, the usual display of signed
    attributions); layer methods ``(N, 1, h, w)`` at the layer's resolution (``LayerGradCam`` with
    ReLU, equal to :class:`~adv2.interpreters.GradCAM`). Every map is min–max normalised to
    ``[0, 1]``."""

    def __init__(self, method, reduce: str | None = None, pool: int = 1, smooth: bool | None = None,
                 surrogate: str = "sqrt", temperature: float = 1e-4, *, tau: float | None = None,
                 **attribute_kwargs):
        temperature = renamed_temperature(temperature, tau)
        self.kind = _kind(method)
        model = getattr(method, "forward_func", None)
        if not isinstance(model, nn.Module):
            model = getattr(model, "__self__", None)
        if not isinstance(model, nn.Module):
            raise ValueError("the captum method's forward_func must be the classifier (an nn.Module)")
        super().__init__(model)
        base = type(method).__name__
        inner = type(method.attribution_method).__name__ if base == "NoiseTunnel" else base
        self.method, self.inner = method, inner
        if reduce is None:
            reduce = "max" if inner == "Saliency" else "sum"
        if reduce not in ("max", "sum"):
            raise ValueError(f"reduce must be 'max' or 'sum', got {reduce!r}")
        if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
            raise ValueError(f"pool must be a positive integer, got {pool!r}")
        self.reduce, self.pool = reduce, pool
        self.smooth = self.kind == "input" if smooth is None else bool(smooth)
        self.surrogate, self.temperature = surrogate, temperature
        if self.kind == "layer":
            attribute_kwargs.setdefault("relu_attributions", True)
        self.noise = None
        if base == "NoiseTunnel":  # captum's runs under no_grad: the same formula, here, differentiable
            self.noise = {"nt_type": attribute_kwargs.pop("nt_type", "smoothgrad"),
                          "nt_samples": attribute_kwargs.pop("nt_samples", 5),
                          "stdevs": attribute_kwargs.pop("stdevs", 1.0), "seed": attribute_kwargs.pop("seed", 0)}
            attribute_kwargs.pop("nt_samples_batch_size", None)
            if self.noise["nt_type"] not in ("smoothgrad", "smoothgrad_sq", "vargrad"):
                raise ValueError(f"nt_type must be smoothgrad, smoothgrad_sq or vargrad, got {self.noise['nt_type']!r}")
            if not isinstance(self.noise["nt_samples"], int) or self.noise["nt_samples"] < 1:
                raise ValueError(f"nt_samples must be a positive integer, got {self.noise['nt_samples']!r}")
            if not isinstance(self.noise["stdevs"], (int, float)) or self.noise["stdevs"] < 0:
                raise ValueError(f"stdevs must be a non-negative number, got {self.noise['stdevs']!r}")
            method = method.attribution_method
            self.method = method
        self.kwargs = attribute_kwargs
        self.name = f"captum-{base.lower()}" if base != "NoiseTunnel" else f"captum-noisetunnel-{inner.lower()}"
        # ADV²'s default budget: that of adv2's own interpreter of the same family
        self.defaults_like = "gradcam" if self.kind == "layer" else "grad"

    def logits_and_map(self, x, target, create_graph=False, smooth=False):
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        use = smooth and self.smooth
        surrogate = smooth_relu(self.surrogate, self.temperature) if use else contextlib.nullcontext()
        with torch.enable_grad():
            logits = self.model(x)
            with surrogate, _graph_through_grad(create_graph or smooth):
                a = self._attribute(x, target, attack=smooth)
        if self.kind == "input":
            m = a.abs().amax(1, keepdim=True) if self.reduce == "max" else a.sum(1, keepdim=True).abs()
            if self.pool > 1:
                m = F.avg_pool2d(m, self.pool)
        else:
            m = a if a.dim() == 4 else a[:, None]
            m = m.sum(1, keepdim=True) if m.shape[1] > 1 else m
        return logits, minmax(m.to(logits.dtype))

    def _attribute(self, x, target, attack: bool = False):
        def one(inp):
            a = self.method.attribute(inp, target=target, **self.kwargs)
            return a[0] if isinstance(a, tuple) else a

        if self.noise is None:
            return one(x)
        nz = self.noise  # NoiseTunnel: average over noisy copies
        # one draw of shape (3, H, W) per sample, shared by the batch: an example's map does not
        # depend on the batch; attacks (smooth) draw with another seed than the reported maps
        gen = torch.Generator().manual_seed(nz["seed"] + (1 if attack else 0))
        total = total_sq = 0
        for _ in range(nz["nt_samples"]):
            eps = (torch.randn(x.shape[1:], generator=gen) * nz["stdevs"]).to(x)
            a = one(x + eps)
            total, total_sq = total + a, total_sq + a * a
        mean, mean_sq = total / nz["nt_samples"], total_sq / nz["nt_samples"]
        if nz["nt_type"] == "smoothgrad":
            return mean
        if nz["nt_type"] == "smoothgrad_sq":
            return mean_sq
        return mean_sq - mean * mean

    def __repr__(self):
        return f"CaptumInterpreter({self.name}, reduce={self.reduce!r}, kwargs={sorted(self.kwargs)})"


def from_captum(method, **attribute_kwargs) -> CaptumInterpreter:
    """Wrap a Captum attribution object (``Saliency(model)``, ``IntegratedGradients(model)``,
    ``LayerGradCam(model, model.layer4)``, ``NoiseTunnel(Saliency(model))``, ...) as an adv2
    interpreter whose maps are differentiable with respect to the input, so that
    :class:`~adv2.attacks.ADV2` and the presets can attack it.

    ``attribute_kwargs`` go to ``method.attribute`` (``n_steps=16``, ``nt_type="smoothgrad"``,
    ``nt_samples=8``, ``baselines=...``); the adapter's own options are ``reduce`` (``"max"`` |
    ``"sum"`` over colour channels), ``pool``, ``smooth`` (use the smooth-ReLU surrogate in
    attacks; default for the input methods) and ``surrogate`` / ``temperature``. A ``ValueError`` for a
    method whose map cannot be differentiated (see the module docstring)."""
    return CaptumInterpreter(method, **attribute_kwargs)


class CaptumStyle:
    """An adv2 interpreter with Captum's interface: ``attribute(inputs, target=...)`` returns the
    ``(N, 1, h, w)`` maps (``g(inputs, target)``, inputs clipped to ``[0, 1]``)."""

    def __init__(self, interpreter: Interpreter):
        self.interpreter = interpreter
        self.forward_func = interpreter.model

    def attribute(self, inputs, target=None, **_):
        if isinstance(inputs, tuple):  # captum's own calls pass a tuple of inputs: answer in kind
            return (self.attribute(inputs[0], target=target),)
        inputs = inputs.clamp(0, 1)  # captum's perturbations (sensitivity_max) may step outside [0, 1]
        if target is None:
            with torch.no_grad():
                target = self.interpreter.model(inputs).argmax(1)
        elif isinstance(target, int):
            target = torch.full((inputs.shape[0],), target, dtype=torch.long, device=inputs.device)
        return self.interpreter(inputs, torch.as_tensor(target, device=inputs.device).long())


def explain_func(interpreter: Interpreter, size: str = "input"):
    """A Quantus ``explain_func(model, inputs, targets, **kwargs) -> np.ndarray`` from an adv2
    interpreter: ``inputs`` ``(N, 3, H, W)`` arrays in ``[0, 1]``, ``targets`` ``(N,)``; returns
    the maps ``(N, 1, H, W)`` (``size="input"``: upsampled to the input, as Quantus' metrics
    expect) or ``(N, 1, h, w)`` (``size="native"``). The ``model`` Quantus passes is ignored:
    the interpreter's own classifier explains (they must be the same network). Inputs are
    clipped to ``[0, 1]`` (Quantus' perturbations may step slightly outside)."""
    if size not in ("input", "native"):
        raise ValueError(f"size must be 'input' or 'native', got {size!r}")

    def explain(model=None, inputs=None, targets=None, **kwargs):
        dev = next(interpreter.model.parameters()).device
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=dev).clamp(0, 1)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=dev).reshape(-1)
        m = interpreter(x, t).detach()
        if size == "input" and m.shape[-2:] != x.shape[-2:]:
            m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        return m.cpu().numpy()

    explain.__name__ = f"adv2_{getattr(interpreter, 'name', 'interpreter')}"
    return explain
