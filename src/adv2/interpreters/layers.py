"""Finding the last feature map and the linear head of a classifier (for CAM / Grad-CAM)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.alexnet import AlexNet
from torchvision.models.convnext import ConvNeXt, LayerNorm2d
from torchvision.models.densenet import DenseNet
from torchvision.models.efficientnet import EfficientNet
from torchvision.models.googlenet import GoogLeNet
from torchvision.models.inception import Inception3
from torchvision.models.mnasnet import MNASNet
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.mobilenetv3 import MobileNetV3
from torchvision.models.regnet import RegNet
from torchvision.models.resnet import ResNet
from torchvision.models.shufflenetv2 import ShuffleNetV2
from torchvision.models.squeezenet import SqueezeNet
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vgg import VGG
from torchvision.models.vision_transformer import VisionTransformer

from adv2.interpreters.base import unwrap
from adv2.interpreters.timm_layers import timm_site

_USE_INSTEAD = ("use GRAD (adv2.interpreters.Grad), MASK (adv2.interpreters.Mask) "
                "or a Captum method (adv2.interpreters.from_captum)")


@dataclass
class FeatureSite:
    """Where the last feature map ``A`` ``(N, C, h, w)`` is read: ``A = post(output of layer)``,
    and the head CAM weights it with.

    ``post`` must be idempotent (it is applied once more by the model's own forward): ``F.relu``
    for DenseNet's functional final ReLU, ``F.relu6`` for EfficientNet-Lite's shared ReLU6.
    ``head`` is the single ``nn.Linear`` applied to the global average of ``A`` (``None`` when
    there is none); ``norm`` an optional LayerNorm between the pooling and the head (ConvNeXt),
    whose scale is folded into the CAM weights (:meth:`cam_weight`). ``cam_refusal`` says why
    CAM does not apply to this architecture (Grad-CAM still does); ``verified``: the
    global-average-pool (+ norm) + head structure is known for this architecture, so CAM need
    not check it against the logits; ``guessed``: the site was read from the order of an unknown
    model's children, and errors say how to name the right one.
    """

    layer: nn.Module
    layer_name: str
    head: nn.Linear | None
    post: Callable[[torch.Tensor], torch.Tensor] | None = None
    norm: nn.Module | None = None
    cam_refusal: str | None = None
    verified: bool = False
    guessed: bool = False

    def cam_weight(self) -> torch.Tensor:
        """The ``(K, C)`` weights ``w_ck`` of CAM's ``Σ_k w_ck A_k``: the head's weight, times
        the norm's per-channel scale when a LayerNorm sits between pooling and head."""
        w = self.head.weight
        gamma = getattr(self.norm, "weight", None) if self.norm is not None else None
        return w if gamma is None else w * gamma

    def feature_map(self, value: torch.Tensor | None) -> torch.Tensor:
        """The captured value, checked to be a spatial feature map ``(N, C, h, w)``."""
        if value is None:
            raise ValueError(f"layer {self.layer_name!r} was not called by the model's forward pass")
        if not isinstance(value, torch.Tensor) or value.dim() != 4:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"layer {self.layer_name!r} gives {shape}, not a spatial feature map (N, C, h, w); "
                "CAM and Grad-CAM need a convolutional layer's output (token-based layers, such as a "
                f"transformer's, have none): pass another layer, or {_USE_INSTEAD}"
            )
        return value

    def check_cam(self, a: torch.Tensor, logits: torch.Tensor) -> None:
        """Raise a ``ValueError`` unless ``logits = head(norm(global average of a))`` (up to a
        per-image constant): only then is ``Σ_k w_ck A_k`` the class activation map."""
        try:
            self._check_cam(a, logits)
        except ValueError as e:
            if not self.guessed:
                raise
            raise ValueError(f"{e} (adv2 guessed layer {self.layer_name!r} and its head from the order of the "
                             "model's children: pass layer= and head= to name the right ones)") from None

    def _check_cam(self, a: torch.Tensor, logits: torch.Tensor) -> None:
        w = self.cam_weight()
        if w.shape[1] != a.shape[1]:
            raise ValueError(
                f"CAM: the head takes {w.shape[1]} features but layer {self.layer_name!r} gives "
                f"{a.shape[1]} channels; CAM needs a single linear head right after the global average "
                "pool of the layer's feature map (pass layer= and head= that fit, or use GradCAM)"
            )
        with torch.no_grad():
            z = a.detach().mean((2, 3), keepdim=True)
            if self.norm is not None:
                z = self.norm(z)
            recon = F.linear(z.flatten(1), self.head.weight, self.head.bias)
            if recon.shape != logits.shape:
                raise ValueError(
                    f"CAM: the head gives {tuple(recon.shape)} but the model's logits are {tuple(logits.shape)}; "
                    "CAM needs the model's last layer as head"
                )
            d = recon.float() - logits.detach().float()
            d = d - d.mean(1, keepdim=True)  # a per-image constant does not change any map
            eps = torch.finfo(logits.dtype).eps if logits.dtype.is_floating_point else 1e-7
            tol = 10 * eps**0.5 * (1 + float(logits.detach().abs().max()))
            err = float(d.abs().max())
        if not err <= tol:
            raise ValueError(
                f"CAM: the head applied to the global average of layer {self.layer_name!r} does not reproduce "
                f"the model's logits (max error {err:.3g}); CAM needs logits = head(global average pool of "
                "the feature map) with a single linear head (is the model in eval mode? is something "
                "nonlinear between the layer and the head?); use GradCAM for other heads"
            )


def _get(module: nn.Module, name: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError as e:
        names = [n for n, _ in module.named_modules() if n]
        raise ValueError(f"model has no layer {name!r}; some of its layers: {names[-8:]}") from e


def find_site(model: nn.Module, layer: str | nn.Module | None = None,
              head: str | nn.Module | None = None) -> FeatureSite:
    """The last feature map and linear head of ``model``.

    Found automatically (inside ``Normalized`` or any wrapper with ``.model`` / ``.module``) for:

    ================================  ===================================  =======================
    family                            feature map (Grad-CAM, CAM)          CAM head
    ================================  ===================================  =======================
    torchvision ResNet / ResNeXt      ``layer4``                           ``fc``
    torchvision DenseNet              ``relu(features)``                   ``classifier``
    torchvision MobileNetV2           ``features``                         ``classifier.1``
    torchvision EfficientNet (V1/V2)  ``features``                         ``classifier.1``
    torchvision MNASNet               ``layers``                           ``classifier.1``
    torchvision RegNet                ``trunk_output``                     ``fc``
    torchvision ShuffleNetV2          ``conv5``                            ``fc``
    torchvision GoogLeNet             ``inception5b``                      ``fc``
    torchvision Inception3            ``Mixed_7c``                         ``fc``
    torchvision ConvNeXt              ``features``                         ``classifier.2`` (*)
    EfficientNet-Lite / -B            ``relu6(_bn1)`` / ``_swish`` (last)  ``_fc``
    (package efficientnet_lite_pytorch)
    torchvision VGG, AlexNet          last ReLU of ``features``            refused
    torchvision MobileNetV3           ``features``                         refused
    torchvision SqueezeNet            ``features``                         refused
    timm families (``adv2[timm]``)    see :mod:`adv2.interpreters.timm_layers`
    any other model whose children    the last child with a convolution    the last child, a
    end in features, pooling, head    before the head                      single ``nn.Linear``
    ================================  ===================================  =======================

    The last row is a guess from the order of the model's children (``features``, ``pool``,
    ``fc``, as most hand-written classifiers are laid out): CAM checks it against the logits on
    its first call and says so when it does not hold.

    (*) ConvNeXt's LayerNorm on the pooled vector: CAM folds its scale ``γ`` into the weights,
    ``w'_ck = w_ck γ_k``. With ``p`` the pooled vector, ``μ``/``σ`` its mean/std over channels,
    ``logit_c = (mean_ij Σ_k w'_ck A_k(i,j) − μ Σ_k w'_ck) / σ + const_c`` exactly: the map is the
    logit's spatial decomposition up to a per-image positive scale and a per-image shift, which the
    min–max normalisation removes — exact, no approximation.

    For VGG/AlexNet the map is the last rectified convolution (before the last max-pool), as in
    the Grad-CAM paper (VGG-16's conv5_3: 14×14 at 224 rather than 7×7 after the pool).

    Refusals (``ValueError`` saying why): CAM for VGG/AlexNet (no global-average-pool + single
    linear head: the classifier is an MLP), MobileNetV3 (the head after the pool is an MLP),
    SqueezeNet (a 1×1 convolution and ReLU before the pool) and any model whose head module is
    not a single ``nn.Linear`` (dropout/flatten aside) — use Grad-CAM there; CAM and Grad-CAM
    both for ViT (token-based, no spatial feature map), Swin (channels-last token grids) and any
    model with no 2-D convolution — use GRAD, MASK or a Captum method. Other models: pass
    ``layer=`` (and ``head=``) — names relative to the unwrapped network, such as ``"layer4"``,
    or the module objects themselves, such as ``model.layer4``, as Captum and pytorch-grad-cam
    take them. CAM checks a given layer/head against the model's logits on its first call.
    """
    net = unwrap(model)
    if layer is not None:
        lay, layer_name = _resolve(net, model, layer, "layer")
        hd = None
        if head is not None:
            hd, _ = _resolve(net, model, head, "head")
            if not isinstance(hd, nn.Linear):
                raise ValueError(f"head {_label(head)} must be an nn.Linear, got {type(hd).__name__}")
        try:
            auto = _auto_site(net)
        except ValueError:
            auto = None
        if auto is not None and auto.layer is lay and (hd is None or hd is auto.head):
            return auto  # the architecture's own site, with its post-processing, norm and refusal
        site = FeatureSite(lay, layer_name, hd if hd is not None else _last_linear(net))
        if auto is not None and hd is None:
            site.cam_refusal = auto.cam_refusal  # the architecture's head is what it is, whatever the layer
        return site
    site = _auto_site(net)
    if site is None:
        if not any(isinstance(m, nn.Conv2d) for m in net.modules()):
            raise ValueError(
                f"cannot find a spatial feature map in a {type(net).__name__} automatically: it has no 2-D "
                "convolution, so CAM and Grad-CAM (which weight a feature map (N, C, h, w)) do not apply; "
                f"{_USE_INSTEAD}, or pass layer='name' of a module whose output is (N, C, h, w)"
            )
        raise ValueError(
            f"cannot find the last feature map of a {type(net).__name__} automatically; "
            "pass layer='name' (and head='name') explicitly"
        )
    if head is not None:
        hd, _ = _resolve(net, model, head, "head")
        if not isinstance(hd, nn.Linear):
            raise ValueError(f"head {_label(head)} must be an nn.Linear, got {type(hd).__name__}")
        if hd is not site.head:  # the user's own head: CAM checks it against the logits
            site.head, site.norm, site.cam_refusal, site.verified = hd, None, None, False
    return site


#: torchvision families whose last feature map is pooled into a linear head: (classes, feature
#: layer, head, options of :func:`_gap_site`).
_GAP_FAMILIES = (
    (ResNet, "layer4", "fc", {}),
    (DenseNet, "features", "classifier", {"post": F.relu}),
    ((MobileNetV2, MobileNetV3, EfficientNet), "features", "classifier", {}),
    (MNASNet, "layers", "classifier", {}),
    (RegNet, "trunk_output", "fc", {}),
    (ShuffleNetV2, "conv5", "fc", {}),
    (GoogLeNet, "inception5b", "fc", {}),
    (Inception3, "Mixed_7c", "fc", {}),
    (ConvNeXt, "features", "classifier", {"allow_norm": True}),
)


def _auto_site(net: nn.Module) -> FeatureSite | None:
    """The site of a known architecture, ``None`` for an unknown one; raises for refused ones."""
    name = type(net).__name__
    if isinstance(net, VisionTransformer):
        raise ValueError(
            f"CAM and Grad-CAM do not apply to a {name}: it is token-based — after the patch embedding "
            "it works on a sequence of tokens and classifies from the class token — so it has no spatial "
            f"feature map (N, C, h, w) to weight; {_USE_INSTEAD}"
        )
    if isinstance(net, SwinTransformer):
        raise ValueError(
            f"CAM and Grad-CAM are not supported for a {name}: its feature maps are channels-last token "
            "grids (N, h, w, C) followed by a LayerNorm, not channels-first maps (N, C, h, w) pooled into "
            f"a linear head; {_USE_INSTEAD}"
        )
    for families, layer, head, extra in _GAP_FAMILIES:
        if isinstance(net, families):
            return _gap_site(net, layer, head, **extra)
    if isinstance(net, (VGG, AlexNet)):
        relus = [i for i, m in enumerate(net.features) if isinstance(m, nn.ReLU)]
        layer_name = f"features.{relus[-1]}" if relus else "features"
        return FeatureSite(
            _get(net, layer_name), layer_name, None,
            cam_refusal=(
                f"CAM does not apply to this {name}: it has no global-average-pool + single linear "
                f"head — its classifier is an MLP ({_describe(net.classifier)}) on a {_pool_desc(net)} "
                "pooled map — so Σ_k w_ck A_k does not decompose its logits; use GradCAM "
                f"(feature map {layer_name!r})"
            ),
        )
    if isinstance(net, SqueezeNet):
        return FeatureSite(
            net.features, "features", None,
            cam_refusal=(
                f"CAM does not apply to this {name}: its classifier ({_describe(net.classifier)}) is a 1×1 "
                "convolution and a ReLU before the global average pool, not global-average-pool + a linear "
                "head; use GradCAM (feature map 'features')"
            ),
        )
    if type(net).__module__.startswith("efficientnet_lite_pytorch") and hasattr(net, "_fc"):
        # extract_features ends with self._swish(self._bn1(self._conv_head(x))); _swish is one module
        # object also called by the stem, so hooking it would see two calls
        if isinstance(net._swish, nn.ReLU6):  # the Lite variants
            return _gap_site(net, "_bn1", "_fc", post=F.relu6)
        if isinstance(net._swish, nn.ReLU):
            return _gap_site(net, "_bn1", "_fc", post=F.relu)
        # the B variants (swish, not idempotent): the shared activation's last call is the head's
        return _gap_site(net, "_swish", "_fc")
    spec = timm_site(net)  # timm ResNet, ConvNeXt, EfficientNet, DenseNet, RegNet, MobileNetV3 (adv2[timm])
    if spec is not None:
        return FeatureSite(**spec)
    return _generic_site(net)


#: Modules that may sit between a feature layer and the head without changing what CAM sees.
_PASSTHROUGH = (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)


def _generic_site(net: nn.Module) -> FeatureSite | None:
    """The site of a model adv2 does not know, read from its top-level children in the order
    they are registered: the last child that is a single ``nn.Linear`` (dropout/flatten aside) is
    the head; the last child before it, pooling, flattening and dropout skipped, that contains a
    2-D convolution is the feature layer. Nothing here is trusted: CAM checks the site against
    the logits on its first call, and Grad-CAM checks the layer gives ``(N, C, h, w)``.
    ``None`` when the children do not have that shape."""
    children = list(net.named_children())
    for i in range(len(children) - 1, 0, -1):
        name, mod = children[i]
        if isinstance(mod, _PASSTHROUGH):
            continue
        parts = [m for m in (mod.children() if isinstance(mod, nn.Sequential) else [mod])
                 if not isinstance(m, _PASSTHROUGH)]
        if len(parts) != 1 or not isinstance(parts[0], nn.Linear):
            return None
        for layer_name, layer in reversed(children[:i]):
            if isinstance(layer, _PASSTHROUGH):
                continue
            if not any(isinstance(m, nn.Conv2d) for m in layer.modules()):
                return None
            return FeatureSite(layer, layer_name, parts[0], verified=False, guessed=True)
        return None
    return None


def _gap_site(net: nn.Module, layer_name: str, head_name: str, post=None, allow_norm: bool = False) -> FeatureSite:
    """A site whose forward is: layer → global average pool → head module (checked to be a single
    ``nn.Linear``, dropout/flatten aside; with ``allow_norm`` a leading ``LayerNorm2d`` too)."""
    head_mod = _get(net, head_name)
    parts = [(head_name, head_mod)]
    if isinstance(head_mod, nn.Sequential):
        parts = [(f"{head_name}.{n}", m) for n, m in head_mod.named_children()
                 if not isinstance(m, (nn.modules.dropout._DropoutNd, nn.Flatten, nn.Identity))]
    norm = None
    if allow_norm and len(parts) == 2 and isinstance(parts[0][1], LayerNorm2d):
        norm = parts.pop(0)[1]
    layer = _get(net, layer_name)
    if len(parts) == 1 and isinstance(parts[0][1], nn.Linear):
        return FeatureSite(layer, layer_name, parts[0][1], post=post, norm=norm, verified=True)
    kind = "an MLP" if sum(isinstance(m, nn.Linear) for _, m in parts) > 1 else "not a single linear layer"
    return FeatureSite(
        layer, layer_name, None, post=post,
        cam_refusal=(
            f"CAM does not apply to this {type(net).__name__}: after the global average pool its head "
            f"{head_name!r} is {kind} ({_describe(head_mod)}), not a single linear layer, so Σ_k w_ck A_k "
            f"does not decompose its logits; use GradCAM (feature map {layer_name!r})"
        ),
    )


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Sequential):
        return ", ".join(type(c).__name__ for c in m)
    return type(m).__name__


def _pool_desc(net: nn.Module) -> str:
    pool = getattr(net, "avgpool", None)
    size = getattr(pool, "output_size", None)
    if isinstance(size, int):
        size = (size, size)
    return f"{size[0]}×{size[1]}" if size else "spatially"


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
    """Context manager that records ``site``'s feature map during a forward pass.

    A module called more than once per forward pass (a shared activation) is recorded at
    its last call.
    """

    def __init__(self, site: FeatureSite):
        self.site = site
        self.value: torch.Tensor | None = None

    def _hook(self, module, inputs, output):
        if self.site.post is None:
            self.value = output
            return None
        # post is idempotent (ReLU, ReLU6): hand the model (a copy of) the post-processed map so
        # that the captured tensor lies on the path to the logits (Grad-CAM differentiates through
        # it); the copy keeps the model's own in-place ReLU from rewriting the captured tensor.
        self.value = self.site.post(output)
        return self.value.clone()

    def __enter__(self):
        self._handle = self.site.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False
