"""The user's own classifiers: a factory named ``package.module:function``, a model object's checks,
and a model's identity (what a run directory records of the model it attacked).

- :func:`from_factory` imports ``package.module:function`` (the working directory on ``sys.path``,
  as ``python -c`` has it), calls it with ``kwargs``, loads a local weights file (safetensors, or
  ``torch.load(weights_only=True)``), wraps the normalisation (:class:`Normalized`) when
  ``mean``/``std`` are given and puts the model in eval mode.
- :func:`check_output` probes a model with one small forward pass: it must return logits
  ``(N, classes)``.
- :func:`model_identity`: label, class and a SHA-256 of the parameters and buffers (names, dtypes,
  shapes and bytes in name order); :func:`identity_mismatch` says how two identities differ.

Every problem is a one-line ``ValueError``.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from adv2._validate import eval_mode
from adv2.models.loading import _load_state, _read_state
from adv2.models.normalized import Normalized

_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_factory_ref(ref) -> bool:
    """Whether ``ref`` has the form ``package.module:function`` (``module:Class.method`` too)."""
    return isinstance(ref, str) and _REF.match(ref) is not None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _cwd_on_path() -> None:
    """Put the working directory on ``sys.path`` (first, as ``python -c`` and ``python -m`` do) unless
    it is there already (also as ``""``), so that ``mypkg.nets:make`` finds ``./mypkg``."""
    cwd = os.getcwd()
    for p in sys.path:
        if p in ("", ".") or (p and os.path.abspath(p) == cwd):
            return
    sys.path.insert(0, cwd)


def import_factory(ref: str):
    """The callable named by ``ref`` = ``package.module:function``; a ``ValueError`` naming the module
    and the import error when it does not import, or the missing attribute."""
    if not is_factory_ref(ref):
        raise ValueError(f"model factory {ref!r}: expected 'package.module:function' (a module Python can import "
                         "from the working directory or PYTHONPATH, and a function in it)")
    module_name, _, attr = ref.partition(":")
    _cwd_on_path()
    importlib.invalidate_caches()  # a package written since the last import is found
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 — whatever the user's module raises, say it in one line
        raise ValueError(f"model factory {ref!r}: cannot import module {module_name!r} ({_one_line(e)}); "
                         f"the working directory is {os.getcwd()}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model factory {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model factory {ref!r}: {attr!r} is a {type(obj).__name__}, not a function or class")
    return obj


def check_output(model: nn.Module, size: int = 64, name: str = "model") -> int:
    """Run ``model`` once on two random ``size``×``size`` images in ``[0, 1]`` (in eval mode, without
    gradients, on the model's device) and return its number of classes; a ``ValueError`` when the
    forward pass fails or its output is not logits ``(N, classes)``."""
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    x = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(x)
    except Exception as e:  # noqa: BLE001 — the user's forward pass, any error
        raise ValueError(f"{name}: its forward pass fails on a batch of 2 images (2, 3, {size}, {size}) in [0, 1] "
                         f"({_one_line(e)})") from None
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{name}: its forward pass returns a {type(out).__name__}, not a tensor of logits "
                         "(N, classes); wrap it so that forward returns the logits")
    if out.dim() != 2 or out.shape[0] != 2 or out.shape[1] < 2 or not out.is_floating_point():
        raise ValueError(f"{name}: its forward pass returns {tuple(out.shape)} ({out.dtype}) for a batch of 2 images; "
                         "a classifier must return float logits (N, classes) with at least 2 classes")
    return int(out.shape[1])


def from_factory(ref: str, kwargs: Mapping | None = None, weights: str | Path | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 device: str | torch.device | None = None, size: int = 64) -> nn.Module:
    """The classifier ``ref(**kwargs)`` (``ref`` = ``package.module:function``), with ``weights``
    (a ``.safetensors`` or ``.pth`` state dict; keys must match) loaded, wrapped in
    :class:`Normalized` when ``mean`` and ``std`` are given, in eval mode, on ``device``, checked
    by a forward pass on ``size``×``size`` images (:func:`check_output`)."""
    fn = import_factory(ref)
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"model factory {ref!r}: kwargs must be a mapping of keyword arguments, got {kwargs!r}")
    try:
        net = fn(**dict(kwargs or {}))
    except Exception as e:  # noqa: BLE001 — the user's factory, any error
        raise ValueError(f"model factory {ref!r} failed ({_one_line(e)})") from None
    if not isinstance(net, nn.Module):
        raise ValueError(f"model factory {ref!r} returned a {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_state(net, _read_state(Path(weights)), str(weights))
    if (mean is None) != (std is None):
        raise ValueError(f"model factory {ref!r}: give both mean and std (the normalisation), or neither")
    if mean is not None:
        if isinstance(net, Normalized):
            raise ValueError(f"model factory {ref!r} returns a Normalized model already; mean/std would normalise "
                             "twice: leave them out")
        net = Normalized(net, mean, std)
    net.eval()
    if device is not None:
        net.to(device)
    check_output(net, size, name=f"model factory {ref!r}")
    return net


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside wrappers such as ``Normalized`` (``.model`` / ``.module``)."""
    while True:
        inner = getattr(model, "model", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def class_name(model: nn.Module) -> str:
    """The qualified class name of the network inside any wrapper (``mypkg.nets.TinyNet``)."""
    cls = type(unwrap(model))
    return f"{cls.__module__}.{cls.__qualname__}"


def weights_hash(model: nn.Module) -> tuple[str, int]:
    """SHA-256 over the model's parameters and buffers (name, dtype, shape and bytes of each, in name
    order; normalisation buffers included) and the number of their elements."""
    h, count = hashlib.sha256(), 0
    named = dict(itertools.chain(model.named_parameters(), model.named_buffers()))
    for key in sorted(named):
        t = named[key].detach()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
        count += t.numel()
    return h.hexdigest(), count


def model_identity(model: nn.Module, label: str) -> dict:
    """What a run directory records of its model: ``label``, ``class`` (of the network inside any
    wrapper), ``sha256`` of its parameters and buffers (:func:`weights_hash`) and ``parameters``."""
    digest, count = weights_hash(model)
    return {"label": label, "class": class_name(model), "sha256": digest, "parameters": count}


def identity_mismatch(old: Mapping, new: Mapping) -> str | None:
    """How two model identities differ (``label …; class …; weights …``), ``None`` when they agree.
    ``transfer`` entries (label → identity) are compared too."""
    diffs = []
    if old.get("label") != new.get("label"):
        diffs.append(f"label differs ({old.get('label')!r} there, {new.get('label')!r} now)")
    if old.get("class") != new.get("class"):
        diffs.append(f"class differs ({old.get('class')} there, {new.get('class')} now)")
    if old.get("sha256") != new.get("sha256"):
        diffs.append(f"weights differ (sha256 {str(old.get('sha256'))[:12]}… there, {str(new.get('sha256'))[:12]}… "
                     "now)")
    old_t, new_t = old.get("transfer") or {}, new.get("transfer") or {}
    for label in sorted(set(old_t) | set(new_t)):
        if label not in old_t or label not in new_t:
            diffs.append(f"transfer model {label!r} {'added' if label in new_t else 'removed'}")
        else:
            sub = identity_mismatch({**old_t[label], "transfer": None}, {**new_t[label], "transfer": None})
            if sub:
                diffs.append(f"transfer model {label!r}: {sub}")
    return "; ".join(diffs) or None
