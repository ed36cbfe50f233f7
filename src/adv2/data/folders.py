"""ImageNet-style image folders (``root/<class>/<image>``) as batches of [0, 1] tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def image_folder(root: str | Path, size: int = 224, batch_size: int = 32, shuffle: bool = False,
                 num_workers: int = 0, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` over ``root/<class>/<image>`` yielding ``(images, labels)``.

    Images are resized (shorter side to ``size · 256/224``), centre-cropped to ``size``×``size``
    and returned as ``(B, 3, size, size)`` floats in ``[0, 1]`` (no normalisation: that lives
    in the model); labels are ``(B,)`` indices into ``loader.dataset.classes`` (sorted folder
    names). ``shuffle`` uses a generator seeded by ``seed``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder not found: {root}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    tf = transforms.Compose([
        transforms.Resize(int(round(size * 256 / 224))),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
    ])
    try:
        ds = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise ValueError(f"no images found under {root} (expected root/<class>/<image>): {e}") from e
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=g)
