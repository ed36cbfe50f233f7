"""Choosing examples and target classes, seeded per example (independent of batch size)."""

from __future__ import annotations

import numpy as np
import torch

from adv2.data import shapes


def target_classes(labels: torch.Tensor, indices, seed: int, num_classes: int) -> torch.Tensor:
    """Random target class ≠ label for each example: ``(y + U{1..K−1}) mod K``, drawn from a
    generator seeded by ``(seed, dataset index)``, so it does not depend on batching."""
    out = []
    for y, i in zip(labels.tolist(), list(indices), strict=True):
        r = int(np.random.default_rng([seed, 7_919, int(i)]).integers(1, num_classes))
        out.append((y + r) % num_classes)
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
