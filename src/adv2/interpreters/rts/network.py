"""The RTS saliency network (:class:`RTSNet`) and its file format.

:class:`RTSNet` has three parts, built from torchvision's ``BasicBlock`` and ``PixelShuffle``:

- **encoder**: a residual CNN (stem at full resolution, then four stride-2 ``BasicBlock`` s:
  ``H → H/2 → H/4 → H/8 → H/16``) with its own small classification head (global average
  pooling + linear) trained alongside to recognise the classifier's classes;
- **class selector**: an embedding of the class ``c`` gates the deepest features channel-wise,
  ``s4 ⊙ σ(E[c] − 1)``: a class the image does not show turns the features, and so the mask, off;
- **decoder**: U-Net-like, pixel-shuffle upsampling with skip connections from the encoder
  (``H/16 → H/8 → H/4``), ending in two channels ``a, b`` and the mask ``|a| / (|a| + |b|)``.

A file (:func:`save_rts`, :func:`read_rts`) is safetensors whose metadata records the classifier
the network explains (:func:`fingerprint` of its weights), the class count and the width.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import BasicBlock

#: Input normalisation of every RTS network (its inputs are images in [0, 1]).
RTS_MEAN, RTS_STD = 0.5, 0.25


def tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    """A short hash of named tensors, on float32 CPU copies in sorted key order."""
    h = hashlib.sha256()
    for k, v in sorted(tensors.items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(model: nn.Module) -> str:
    """A short hash of a classifier's weights and buffers (which classifier an RTS was made for).

    Computed on float32 copies in sorted key order, so a model loaded from float16 weights has
    the same fingerprint on every machine and device."""
    return tensor_hash(model.state_dict())


def _down(cin: int, cout: int) -> BasicBlock:
    return BasicBlock(cin, cout, stride=2,
                      downsample=nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout)))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Up(nn.Module):
    """×2 pixel-shuffle upsampling, concatenated with the encoder's skip, then a 3×3 conv block."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(cin, 4 * cout, 1, bias=False), nn.PixelShuffle(2))
        self.fuse = _conv_bn_relu(cout + cskip, cout)

    def forward(self, z, skip):
        return self.fuse(torch.cat([self.up(z), skip], 1))


class RTSNet(nn.Module):
    """The saliency network: ``forward(x, c) -> (mask (N, 1, H/4, W/4) in [0, 1], head logits (N, K))``.

    ``x`` ``(N, 3, H, W)`` in ``[0, 1]`` with ``H, W`` multiples of 16; ``c`` ``(N,)`` classes.
    ``width`` sets the channel counts (``w, w, 2w, 4w, 8w`` down the encoder)."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        self.num_classes, self.width = num_classes, width
        self.stem = _conv_bn_relu(3, w)  # H
        self.enc1 = _down(w, w)  # H/2
        self.enc2 = _down(w, 2 * w)  # H/4
        self.enc3 = _down(2 * w, 4 * w)  # H/8
        self.enc4 = _down(4 * w, 8 * w)  # H/16
        self.head = nn.Linear(8 * w, num_classes)
        self.embedding = nn.Embedding(num_classes, 8 * w)
        nn.init.normal_(self.embedding.weight, 0.0, 1.0)
        self.dec3 = _Up(8 * w, 4 * w, 4 * w)  # H/8
        self.dec2 = _Up(4 * w, 2 * w, 2 * w)  # H/4
        self.out = nn.Conv2d(2 * w, 2, 3, 1, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.stem((x - RTS_MEAN) / RTS_STD)
        s2 = self.enc2(self.enc1(z))
        s3 = self.enc3(s2)
        s4 = self.enc4(s3)
        logits = self.head(s4.mean((2, 3)))
        gate = torch.sigmoid(self.embedding(c) - 1.0)[:, :, None, None]
        u = self.dec2(self.dec3(s4 * gate, s3), s2)
        ab = self.out(u).abs()
        mask = ab[:, :1] / (ab[:, :1] + ab[:, 1:] + 1e-6)
        return mask, logits


def save_rts(net: RTSNet, path: str | Path, model: nn.Module | None = None, classifier: str = "", **meta) -> Path:
    """Write ``net`` to a safetensors file whose metadata names the classifier it explains
    (its :func:`fingerprint`), the class count and the width (plus any extra ``meta``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": "adv2-rts", "num_classes": str(net.num_classes), "width": str(net.width),
            "classifier": classifier, "fingerprint": fingerprint(model) if model is not None else "",
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata=info)
    return path


def read_rts(path: str | Path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of an RTS safetensors file; ``ValueError`` if it is not one."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"RTS checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 — safe_open has no iterator
    except Exception as e:  # noqa: BLE001 — any unreadable file is reported the same way
        raise ValueError(f"cannot read RTS checkpoint {path}: {e}") from e
    if meta.get("format") != "adv2-rts":
        raise ValueError(f"{path} is not an adv2 RTS checkpoint (no 'format: adv2-rts' metadata)")
    return state, meta
