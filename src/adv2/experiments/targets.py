"""Target maps of an experiment (``target_map`` in a config).

- ``benign``: the benign map ``g(x; y)`` (the paper's default: the attack hides in plain sight);
- ``other``: ``g(x'; c_t)``, the map of another image ``x'`` of the target class ``c_t``
  (:func:`adv2.data.selection.find_donors`);
- ``shape``: a random circle or rotated rectangle per example (the paper's Q4), seeded by
  ``(seed, dataset index)``, :func:`shape_maps`;
- a file path (``.png`` / ``.jpg`` greyscale, or ``.npy``): one map for every example.

Every map is ``(N, 1, h, w)`` in ``[0, 1]`` at the interpreter's own resolution.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

POLICIES = ("benign", "other", "shape")
MAP_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")


def shape_map(h: int, w: int, seed: int, index: int) -> torch.Tensor:
    """A random shape target ``(1, h, w)`` in ``[0, 1]``: a disc or a rotated rectangle with a soft
    edge, covering about 10–30% of the map, from a generator seeded by ``(seed, index)``."""
    rng = np.random.default_rng([seed, 65_537, int(index)])
    v, u = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    cx, cy = rng.uniform(0.3, 0.7, size=2)
    soft = 1.0 / max(h, w)
    if rng.random() < 0.5:
        r = math.sqrt(rng.uniform(0.10, 0.30) / math.pi)
        d = torch.sqrt((u - cx) ** 2 + (v - cy) ** 2) - r
    else:
        area = rng.uniform(0.10, 0.30)
        aspect = rng.uniform(0.4, 1.0)
        a = math.sqrt(area / aspect) / 2  # half sides
        b = a * aspect
        t = rng.uniform(0, math.pi)
        du, dv = u - cx, v - cy
        pu, pv = du * math.cos(t) + dv * math.sin(t), -du * math.sin(t) + dv * math.cos(t)
        d = torch.maximum(pu.abs() - a, pv.abs() - b)
    return torch.sigmoid(-d / soft * 4)[None].clamp(0, 1)


def shape_maps(h: int, w: int, seed: int, indices) -> torch.Tensor:
    """:func:`shape_map` for each dataset index: ``(N, 1, h, w)``."""
    return torch.stack([shape_map(h, w, seed, int(i)) for i in indices])


def read_map(path: str | Path) -> torch.Tensor:
    """A target map from a file: greyscale image (scaled to [0, 1]) or ``.npy`` array (min–max
    scaled), returned ``(1, 1, H, W)``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"target_map: file {str(path)!r} not found (or use one of {', '.join(POLICIES)})")
    if path.suffix.lower() not in MAP_SUFFIXES:
        raise ValueError(f"target_map: {path.name} must be one of {', '.join(MAP_SUFFIXES)}")
    try:
        if path.suffix.lower() == ".npy":
            a = np.load(path, allow_pickle=False).astype(np.float32)
            a = np.squeeze(a)
            if a.ndim != 2 or not np.isfinite(a).all():
                raise ValueError("expected a finite 2-D array")
            a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
        else:
            a = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise ValueError(f"target_map: cannot read {path}: {e}") from None
    return torch.from_numpy(np.ascontiguousarray(a))[None, None]


def check_policy(policy) -> None:
    if not isinstance(policy, str) or not policy:
        raise ValueError(f"target_map must be one of {', '.join(POLICIES)} or a map file, got {policy!r}")
    if policy not in POLICIES:
        read_map(policy)


def target_maps(policy: str, g, benign: torch.Tensor, x_donor: torch.Tensor | None, targets: torch.Tensor,
                indices, seed: int) -> torch.Tensor:
    """The target maps of one batch for interpreter ``g`` (``benign`` is ``g(x; y)``)."""
    if policy == "benign":
        return benign
    if policy == "other":
        return g(x_donor, targets).detach()
    h, w = benign.shape[-2:]
    if policy == "shape":
        return shape_maps(h, w, seed, indices).to(benign.device)
    m = read_map(policy).to(benign.device)
    m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    return m.expand(benign.shape[0], -1, -1, -1).contiguous()
