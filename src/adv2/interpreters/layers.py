"""Finding the last feature map and the linear head of a classifier (for CAM / Grad-CAM)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import ResNet

from adv2.interpreters.base import unwrap


@dataclass
class FeatureSite:
    """Where the last feature map ``A`` is read: ``A = post(output of layer)``.

    ``post`` must be idempotent (it is applied once more by the model's own forward).
    """

    layer: nn.Module
    layer_name: str
    head: nn.Linear | None
    post: Callable[[torch.Tensor], torch.Tensor] | None = None


def _get(module: nn.Module, name: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError as e:
        names = [n for n, _ in module.named_modules() if n]
        raise ValueError(f"model has no layer {name!r}; some of its layers: {names[-8:]}") from e


def find_site(model: nn.Module, layer: str | nn.Module | None = None,
              head: str | nn.Module | None = None) -> FeatureSite:
    """The last feature map and linear head of ``model``.

    Found automatically for torchvision ``ResNet`` (``layer4``, ``fc``) and ``DenseNet``
    (``relu(features)``, ``classifier``) — including the embedded models and any wrapper
    with ``.model`` — or given by the user (``layer=``, ``head=``: names relative to the
    unwrapped network, such as ``"layer4"``, or the module objects themselves, such as
    ``model.layer4``, as Captum and pytorch-grad-cam take them).
    """
    net = unwrap(model)
    if layer is not None:
        lay, layer_name = _resolve(net, model, layer, "layer")
        if head is not None:
            hd, _ = _resolve(net, model, head, "head")
        else:
            hd = _last_linear(net)
        if hd is not None and not isinstance(hd, nn.Linear):
            raise ValueError(f"head {_label(head)} must be an nn.Linear, got {type(hd).__name__}")
        return FeatureSite(lay, layer_name, hd)
    site = None
    if isinstance(net, ResNet):
        site = FeatureSite(net.layer4, "layer4", net.fc)
    elif isinstance(net, DenseNet):
        site = FeatureSite(net.features, "features", net.classifier, post=F.relu)
    if site is not None:
        if head is not None:
            site.head, _ = _resolve(net, model, head, "head")
            if not isinstance(site.head, nn.Linear):
                raise ValueError(f"head {_label(head)} must be an nn.Linear, got {type(site.head).__name__}")
        return site
    raise ValueError(
        f"cannot find the last feature map of a {type(net).__name__} automatically; "
        "pass layer='name' (and head='name') explicitly"
    )


def _label(v) -> str:
    """A short description of a layer argument for messages (never a whole module's repr)."""
    return repr(v) if isinstance(v, str) else f"<{type(v).__name__} module>"


def _resolve(net: nn.Module, model: nn.Module, v, what: str) -> tuple[nn.Module, str]:
    """A module of ``net`` given by name or by object, and its name."""
    if isinstance(v, str):
        return _get(net, v), v
    if isinstance(v, nn.Module):
        for root in (net, model):
            for name, m in root.named_modules():
                if m is v:
                    return m, name or type(m).__name__
        raise ValueError(f"the {what} given ({_label(v)}) is not a submodule of the model")
    raise ValueError(f"{what} must be a submodule's name or the module itself, got {type(v).__name__}")


def _last_linear(net: nn.Module) -> nn.Linear | None:
    last = None
    for m in net.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


class capture:
    """Context manager that records ``site``'s feature map during a forward pass."""

    def __init__(self, site: FeatureSite):
        self.site = site
        self.value: torch.Tensor | None = None

    def _hook(self, module, inputs, output):
        if self.site.post is None:
            self.value = output
            return None
        # post is idempotent (ReLU): hand the model (a copy of) the post-processed map so that
        # the captured tensor lies on the path to the logits (Grad-CAM differentiates through
        # it); the copy keeps the model's own in-place ReLU from rewriting the captured tensor.
        self.value = self.site.post(output)
        return self.value.clone()

    def __enter__(self):
        self._handle = self.site.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False
