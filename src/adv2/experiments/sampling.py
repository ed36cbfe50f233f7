"""Choosing examples and target classes, seeded per example (independent of batch size)."""

from __future__ import annotations

import numpy as np
import torch

from adv2.data import shapes


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


@torch.no_grad()
def correctly_classified_shapes(model, n: int, seed: int = 0, split: str = "test", chunk: int = 64):
    """The first ``n`` examples of the shapes ``split`` that ``model`` classifies correctly.

    Returns ``(images, labels, masks, indices)``; ``indices`` are the dataset indices.
    """
    xs, ys, ms, idx = [], [], [], []
    start, found = 0, 0
    dev = next(model.parameters()).device
    while found < n:
        x, y, m = shapes(chunk, split=split, seed=seed, start=start)
        ok = (model(x.to(dev)).argmax(1).cpu() == y)
        sel = ok.nonzero()[:, 0][: n - found]
        xs.append(x[sel]), ys.append(y[sel]), ms.append(m[sel])
        idx += (sel + start).tolist()
        found += len(sel)
        start += chunk
        if start > 50 * max(n, chunk):
            raise RuntimeError("the model classifies almost no examples correctly")
    return torch.cat(xs), torch.cat(ys), torch.cat(ms), idx
