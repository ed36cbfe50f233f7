"""CAM (Zhou et al.), the representation-guided interpreter, and Grad-CAM (Selvaraju et al.)."""

from __future__ import annotations

import torch

from adv2.interpreters.base import Interpreter, minmax
from adv2.interpreters.layers import capture, find_site


class CAM(Interpreter):
    """Class activation map ``Σ_k w_ck A_k``: the last feature map ``A`` ``(N, C, h, w)``
    weighted by the linear head's row for class ``c``, per-image min–max normalised.

    No ReLU and no upsampling (as in the paper): map ``(N, 1, h, w)`` in ``[0, 1]`` at the
    feature map's resolution (8×8 for the embedded models at 64×64, 7×7 for ResNet-50 at 224).
    The map comes from the classifier's own forward pass, so an attack pays no extra forward.
    Needs global-average-pooling + linear-head models; ``layer``/``head`` name them if they
    cannot be found automatically (a submodule's name, ``"layer4"``, or the module, ``model.layer4``).
    Refused with a ``ValueError`` where ``Σ_k w_ck A_k`` does not decompose the logits (VGG,
    MobileNetV3, ...; token-based ViTs): see :func:`adv2.interpreters.layers.find_site`. A layer/head
    not found automatically is checked on the first call: the head applied to the global average of
    the feature map must reproduce the model's logits.
    """

    name = "cam"

    def __init__(self, model, layer: str | torch.nn.Module | None = None, head: str | torch.nn.Module | None = None):
        super().__init__(model)
        self.site = find_site(model, layer, head)
        if self.site.cam_refusal is not None:
            raise ValueError(self.site.cam_refusal)
        if self.site.head is None:
            raise ValueError("CAM needs a linear head; pass head='name'")
        self._checked = self.site.verified

    def logits_and_map(self, x, target, create_graph=False, smooth=False):
        with capture(self.site) as cap:
            logits = self.model(x)
        a = self.site.feature_map(cap.value)
        if not self._checked:  # a layer/head given by the user: once, check they make the logits
            self.site.check_cam(a, logits)
            self._checked = True
        w = self.site.cam_weight()[target]  # (N, C)
        m = torch.einsum("nc,nchw->nhw", w, a)[:, None]
        return logits, minmax(m)

    def __repr__(self):
        return f"CAM(layer={self.site.layer_name!r})"


class GradCAM(Interpreter):
    """Grad-CAM: ``relu(Σ_k α_k A_k)`` with ``α_k`` the spatial mean of ``∂f_c/∂A_k``,
    per-image min–max normalised; map ``(N, 1, h, w)`` in ``[0, 1]`` at the feature map's
    resolution. ``layer`` is the feature layer, by name or as the module (default: the one CAM uses;
    found automatically on the architectures :func:`adv2.interpreters.layers.find_site` lists —
    including VGG and MobileNetV3, where CAM is refused; refused for token-based ViTs).
    """

    name = "gradcam"

    def __init__(self, model, layer: str | torch.nn.Module | None = None):
        super().__init__(model)
        self.site = find_site(model, layer, None)

    def logits_and_map(self, x, target, create_graph=False, smooth=False):
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        with torch.enable_grad(), capture(self.site) as cap:
            logits = self.model(x)
            a = self.site.feature_map(cap.value)
            score = logits.gather(1, target[:, None]).sum()
            (da,) = torch.autograd.grad(score, a, create_graph=create_graph)
        alpha = da.mean((2, 3), keepdim=True)
        m = torch.relu((alpha * a).sum(1, keepdim=True))
        return logits, minmax(m)

    def __repr__(self):
        return f"GradCAM(layer={self.site.layer_name!r})"
