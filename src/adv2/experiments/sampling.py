"""Choosing examples and target classes, seeded per example (independent of batch size)."""

from __future__ import annotations

import numpy as np
import torch


def target_classes(labels: torch.Tensor, indices, seed: int, num_classes: int, allowed=None) -> torch.Tensor:
    """Random target class ≠ label for each example: ``(y + U{1..K−1}) mod K``, drawn from a
    generator seeded by ``(seed, dataset index)``, so it does not depend on batching. With
    ``allowed`` (a list of classes), uniform among the allowed classes other than the label."""
    out = []
    for y, i in zip(labels.tolist(), list(indices), strict=True):
        rng = np.random.default_rng([seed, 7_919, int(i)])
        if allowed is None:
            out.append((y + int(rng.integers(1, num_classes))) % num_classes)
        else:
            choices = [c for c in sorted(allowed) if c != y]
            if not choices:
                raise ValueError("the data has a single class: there is no other class to target")
            out.append(choices[int(rng.integers(0, len(choices)))])
    return torch.tensor(out, dtype=torch.long)


def correctly_classified_shapes(model, n: int, seed: int = 0, split: str = "test", chunk: int = 64):
    """The first ``n`` examples of the shapes ``split`` that ``model`` classifies correctly
    (:func:`adv2.experiments.sources.select_examples` on the shapes data).

    Returns ``(images, labels, masks, indices)``; ``indices`` are the dataset indices.
    """
    from adv2.experiments.sources import ShapesData, select_examples

    dev = next(model.parameters()).device
    x, y, m, idx, _ = select_examples(model, ShapesData(split, seed), n, seed, device=dev, chunk=chunk)
    return x, y, m, idx
