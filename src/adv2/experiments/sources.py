"""What an experiment attacks: the classifier of a config's ``model`` and the data of its ``data``.

A config's ``model`` is an embedded name, a torchvision or ``timm/<architecture>`` name (with a
local weights file), or the user's own factory ``package.module:function``
(:func:`adv2.models.from_factory`); from Python, :func:`model_for_run` takes the model object itself.
The data sources and the choice of examples live with the data (:mod:`adv2.data.sources`,
:mod:`adv2.data.selection`); their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from pathlib import Path

import torch
from torch import nn

from adv2 import models
from adv2._validate import eval_mode
from adv2.data.selection import check_classes, find_donors, select_examples
from adv2.data.sources import IMAGE_SUFFIXES, FolderData, PhotosData, ShapesData, build_data
from adv2.models.factory import class_name

__all__ = ["IMAGE_SUFFIXES", "FolderData", "PhotosData", "ShapesData", "build_data", "build_model", "check_classes",
           "data_size", "find_donors", "model_for_run", "model_name", "model_spec", "select_examples",
           "user_model", "user_model_in_eval_mode"]


def model_spec(spec, weights: str | Path | None = None, num_classes: int | None = None) -> dict:
    """A config's ``model`` as a mapping: a string ``package.module:function`` is ``{factory: ...}``,
    any other string ``{name: ...}``; ``weights`` / ``num_classes`` added when given."""
    if isinstance(spec, str):
        spec = {"factory": spec} if models.is_factory_ref(spec) else {"name": spec}
    spec = dict(spec)
    if weights is not None:
        spec["weights"] = str(weights)
    if num_classes is not None:
        spec["num_classes"] = num_classes
    return spec


def data_size(data: dict | None) -> int:
    """The image side of a config's ``data`` (shapes: 64; folders and photographs: ``size``)."""
    data = data or {}
    return int(data.get("size") or (64 if data.get("name", "shapes") == "shapes" else 224))


def build_model(spec, device: str | torch.device = "cpu", size: int | None = None) -> nn.Module:
    """The classifier of a config's ``model``: an embedded name, a torchvision architecture name,
    ``timm/<architecture>``, ``package.module:function``, or a mapping ``{name, weights,
    num_classes, mean, std, label}`` (see :func:`adv2.models.load`) or ``{factory, kwargs, weights,
    mean, std, label}`` (see :func:`adv2.models.from_factory`; probed on ``size``×``size`` images,
    default 64)."""
    spec = model_spec(spec)
    if "factory" in spec:
        if spec.get("num_classes") is not None:
            raise ValueError("model: num_classes does not apply to a factory; pass it in kwargs")
        return models.from_factory(spec["factory"], kwargs=spec.get("kwargs"), weights=spec.get("weights"),
                                   mean=spec.get("mean"), std=spec.get("std"), device=device, size=size or 64)
    if "name" not in spec:
        raise ValueError(f"model: give a name or a factory, got {spec!r}")
    return models.load(spec["name"], weights=spec.get("weights"), num_classes=spec.get("num_classes"),
                       device=device, mean=spec.get("mean"), std=spec.get("std"))


def model_name(spec) -> str:
    """How a run names a model: its ``label`` if given, else its name (a factory's function name),
    with the weights file's stem when it has one (``resnet50:robust``), so two checkpoints of one
    architecture differ."""
    spec = model_spec(spec)
    if spec.get("label"):
        return str(spec["label"])
    base = spec["name"] if "name" in spec else str(spec.get("factory", spec.get("object", "model"))).rpartition(":")[2]
    return base + (f":{Path(str(spec['weights'])).stem}" if spec.get("weights") else "")


def _device_of(model: nn.Module) -> torch.device:
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


def user_model(model, label: str | None = None, size: int = 64) -> tuple[nn.Module, dict]:
    """A model object handed in from Python (an ``nn.Module`` taking ``[0, 1]`` images, or already
    :class:`~adv2.models.Normalized`), checked by a forward pass on ``size``×``size`` images
    (:func:`adv2.models.check_output`), and the config entry that names it in a run directory:
    ``{object: CLASS, label: LABEL}`` (``label`` defaults to the class name). Its mode is not
    changed (the runner and the audit run it in eval mode, :func:`user_model_in_eval_mode`)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module taking images in [0, 1], got a {type(model).__name__}")
    cls = class_name(model)
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"label must be a non-empty string, got {label!r}")
    label = label or cls.rpartition(".")[2]
    models.check_output(model, size, name=f"model {label!r}")
    return model, {"object": cls, "label": label}


def model_for_run(spec, model: nn.Module | None = None, label: str | None = None,
                  device: str | torch.device = "cpu", size: int | None = None) -> tuple[nn.Module, dict, torch.device,
                                                                                       dict]:
    """The classifier of a run: ``model`` itself when given (on its own device), else the one
    ``spec`` (a config's ``model``) builds on ``device``; returns ``(network, the config entry to
    store, device, identity)`` — the identity (:func:`adv2.models.model_identity`) is what the run
    directory records, so that a resume with another model is refused. ``label`` names the model
    in the run directory and the report."""
    if model is None:
        if label is not None:
            spec = {**model_spec(spec), "label": label}
        net = build_model(spec, device, size)
    else:
        net, spec = user_model(model, label, size or 64)
        device = _device_of(net)
    return net, spec, torch.device(device), models.model_identity(net, model_name(spec))


def user_model_in_eval_mode(fn):
    """Decorator: while ``fn`` runs, the ``nn.Module`` objects given to it (``model=`` or positional)
    are in eval mode, every submodule's own mode restored afterwards (as attacks do): a model fresh
    from its constructor is in training mode, and its batch-norm statistics must not move nor its
    dropout drop units."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for m in (*args, kwargs.get("model")):
                if isinstance(m, nn.Module):
                    stack.enter_context(eval_mode(m))
            return fn(*args, **kwargs)

    return wrapper
