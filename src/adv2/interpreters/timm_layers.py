"""CAM / Grad-CAM sites of timm classifiers (optional extra ``adv2[timm]``).

:func:`timm_site` tells :func:`adv2.interpreters.layers.find_site` where a timm network's last
feature map and linear head are, as that module does for torchvision's architectures. It
recognises timm models by their class's module (``timm.models.*``), so it imports neither timm nor
:mod:`adv2.interpreters.layers`: it returns the keyword arguments of
:class:`~adv2.interpreters.layers.FeatureSite` (``FeatureSite(**timm_site(net))``).

Supported timm families (the class ``timm.models.<module>.<Class>``; every variant of it):

==========================================  ===============================  =================================
family                                      feature map (Grad-CAM, CAM)      CAM head
==========================================  ===============================  =================================
``resnet.ResNet`` (resnet18/50, resnext,    ``layer4``                       ``fc`` after ``global_pool`` (avg)
seresnet, resnet-d, ...)
``convnext.ConvNeXt`` (convnext_atto …      the last stage ``stages.3``      ``head.fc`` after ``head.norm``
convnext_xxlarge)                           (``norm_pre`` when it is a norm) (LayerNorm2d, folded, exact) (*)
``efficientnet.EfficientNet`` (efficient-   ``bn2`` (BatchNorm + act)        ``classifier``
net_b0…, mixnet, mnasnet, mobilenetv2)
``densenet.DenseNet``                       ``features`` (ends with norm5    ``classifier``
                                            + ReLU)
``regnet.RegNet``                           ``final_conv`` (or the last      ``head.fc``
                                            stage ``s4`` when Identity)
``mobilenetv3.MobileNetV3``                 ``blocks``                       refused (conv head after the pool)
ViT, DeiT, BEiT, EVA, Swin, ...             refused: token-based, no spatial feature map (N, C, h, w)
==========================================  ===============================  =================================

(*) ConvNeXt pools, then applies a LayerNorm over the pooled channel vector ``p``, then the linear
head: ``logit_c = Σ_k w_ck γ_k (p_k − μ) / σ + const_c``. With ``w'_ck = w_ck γ_k`` (the norm's
scale folded into the weights, :meth:`FeatureSite.cam_weight`) the map ``Σ_k w'_ck A_k(i, j)`` is
the logit's spatial decomposition up to a per-image positive scale ``1/σ`` and a per-image shift,
which CAM's min–max normalisation removes: CAM is exact. A ConvNeXt whose head has an MLP
(``head_hidden_size``: ``pre_logits`` is not Identity) or a pooling other than the average gets a
CAM refusal (Grad-CAM still applies).
"""

from __future__ import annotations

from torch import nn

_USE_INSTEAD = ("use GRAD (adv2.interpreters.Grad), MASK (adv2.interpreters.Mask) "
                "or a Captum method (adv2.interpreters.from_captum)")
#: timm families that are token-based (no spatial feature map): refused for CAM and Grad-CAM.
TOKEN_BASED = ("VisionTransformer", "Beit", "Eva", "SwinTransformer", "SwinTransformerV2", "Deit",
               "VisionTransformerDistilled", "Twins", "PoolingVisionTransformer", "Cait", "Xcit", "MlpMixer")


def is_timm(net: nn.Module) -> bool:
    """Whether ``net`` is a timm model (its class lives in ``timm.models``)."""
    return type(net).__module__.startswith("timm.models")


def _get(net: nn.Module, name: str) -> nn.Module | None:
    try:
        return net.get_submodule(name)
    except AttributeError:
        return None


def _is_avg_pool(pool) -> bool:
    """A timm ``SelectAdaptivePool2d`` (or torch adaptive pool) computing a global average."""
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        return pool.output_size in (1, (1, 1))
    return type(pool).__name__ == "SelectAdaptivePool2d" and getattr(pool, "pool_type", None) == "avg"


def _passive(m) -> bool:
    """A module that does nothing in eval mode (identity, flatten, dropout)."""
    return m is None or isinstance(m, (nn.Identity, nn.Flatten, nn.modules.dropout._DropoutNd))


def _site(net: nn.Module, layer_name: str, head, norm=None, refusal: str | None = None) -> dict:
    layer = _get(net, layer_name)
    name = type(net).__name__
    if head is None and refusal is None:
        refusal = (f"CAM does not apply to this timm {name}: it has no global-average-pool + single linear head; "
                   f"use GradCAM (feature map {layer_name!r})")
    elif refusal is not None:
        refusal = f"CAM does not apply to this timm {name}: {refusal}; use GradCAM (feature map {layer_name!r})"
    return {"layer": layer, "layer_name": layer_name, "head": head if refusal is None else None, "norm": norm,
            "cam_refusal": refusal, "verified": refusal is None}


def _pooled_linear(net, pool_name: str, head_name: str) -> tuple[nn.Linear | None, str | None]:
    """The linear head applied right after an average pool, or ``None`` and why not."""
    pool, head = _get(net, pool_name), _get(net, head_name)
    if not _is_avg_pool(pool):
        kind = getattr(pool, "pool_type", type(pool).__name__)
        return None, f"its pooling {pool_name!r} is {kind!r}, not a global average"
    if not isinstance(head, nn.Linear):
        return None, f"its head {head_name!r} is {type(head).__name__}, not a single linear layer"
    return head, None


def timm_site(net: nn.Module) -> dict | None:
    """The keyword arguments of :class:`~adv2.interpreters.layers.FeatureSite` for a timm
    network of a family listed in the module docstring; ``None`` for anything else (not timm, or
    a timm family not listed: pass ``layer=``). A ``ValueError`` for token-based timm models."""
    if not is_timm(net):
        return None
    name = type(net).__name__
    if name in TOKEN_BASED:
        raise ValueError(f"CAM and Grad-CAM do not apply to a timm {name}: it is token-based, so it has no spatial "
                         f"feature map (N, C, h, w) to weight; {_USE_INSTEAD}")
    if name == "ResNet" and _get(net, "layer4") is not None:
        head, why = _pooled_linear(net, "global_pool", "fc")
        return _site(net, "layer4", head, refusal=why)
    if name == "ConvNeXt" and _get(net, "stages") is not None:
        layer = "norm_pre" if not isinstance(_get(net, "norm_pre"), (nn.Identity, type(None))) \
            else f"stages.{len(net.stages) - 1}"
        hd = _get(net, "head")
        if type(hd).__name__ == "NormMlpClassifierHead":
            head, why = _pooled_linear(net, "head.global_pool", "head.fc")
            norm = getattr(hd, "norm", None)
            if why is None and not _passive(getattr(hd, "pre_logits", None)):
                why = "its head has an MLP (pre_logits) after the pool"
            if why is None and not (_passive(norm) or type(norm).__name__ == "LayerNorm2d"):
                why = f"its head norm is {type(norm).__name__}, not a LayerNorm2d"
            norm = None if _passive(norm) else norm
            return _site(net, layer, head, norm=norm if why is None else None, refusal=why)
        if type(hd).__name__ == "ClassifierHead":  # head_norm_first: the norm is norm_pre, on the map
            head, why = _pooled_linear(net, "head.global_pool", "head.fc")
            return _site(net, layer, head, refusal=why)
        return _site(net, layer, None, refusal=f"its head is a {type(hd).__name__}")
    if name == "EfficientNet" and _get(net, "bn2") is not None:
        head, why = _pooled_linear(net, "global_pool", "classifier")
        return _site(net, "bn2", head, refusal=why)
    if name == "DenseNet" and _get(net, "features") is not None:
        head, why = _pooled_linear(net, "global_pool", "classifier")
        return _site(net, "features", head, refusal=why)
    if name == "RegNet" and _get(net, "head") is not None:
        layer = "final_conv" if not isinstance(_get(net, "final_conv"), (nn.Identity, type(None))) else "s4"
        head, why = _pooled_linear(net, "head.global_pool", "head.fc")
        return _site(net, layer, head, refusal=why)
    if name == "MobileNetV3" and _get(net, "blocks") is not None:
        return _site(net, "blocks", None, refusal="after the global pool its head is a 1×1 convolution, an "
                                                  "activation and a linear layer (conv_head, act2, classifier)")
    return None
