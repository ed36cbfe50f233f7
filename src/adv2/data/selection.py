"""Choosing the examples of an experiment and their target classes, seeded per example.

Examples are chosen as in the paper: in a seeded, class-balanced order (the source's
``order(seed)``), keeping only the images the model classifies correctly (:func:`select_examples`);
the photographs are the exception: every one is kept and labelled by the model's own prediction
(:class:`~adv2.data.sources.PhotosData`). Target classes (:func:`target_classes`) and donor images
(:func:`find_donors`) are drawn from generators seeded by ``(seed, dataset index)``. Nothing
depends on batch size, shard count or resume points.

Whatever the data, the *benign class* of an example, the class its benign map ``g(x, y)`` explains
and that its target class must differ from, is the model's prediction ``f(x)``: for shapes and
folders that is the label (only correctly classified images are kept), for the photographs it is
what the model says, whatever a person says.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from adv2.data.sources import ShapesData


@torch.no_grad()
def check_classes(model, data, x: torch.Tensor) -> int:
    """The model's number of outputs, checked against the data's classes (a ``ValueError`` when
    they cannot fit together: a 1000-class network on a 10-class dataset, say)."""
    k = int(model(x).shape[1])
    if data.name == "folder" and data.label_mode == "numeric":
        if k < data.num_classes:
            raise ValueError(f"the model has {k} outputs, but the data's class folders go up to class "
                             f"{data.num_classes - 1}")
    elif k != data.num_classes:
        hint = ("; name the class folders by the model's class indices and set data.labels: numeric"
                if data.name == "folder" and k > data.num_classes else
                "; the photographs are labelled with ImageNet's 1000 classes: use an ImageNet classifier such as "
                "efficientnet-lite0" if data.name == "photos" else "")
        raise ValueError(f"the model has {k} outputs, but the data ({data.describe()}) has {data.num_classes} "
                         f"classes{hint}")
    return k


@torch.no_grad()
def select_examples(model, data, n: int, seed: int, device="cpu", chunk: int = 64):
    """The first ``n`` examples in ``data.order(seed)`` that ``model`` classifies correctly; for a
    source with ``selection = "all"`` (:class:`PhotosData`), the first ``n`` examples whatever the
    model says, each labelled by the model's prediction.

    Returns ``(images, labels, masks or None, indices, scanned)``: ``labels`` are the benign
    classes, the model's predictions (equal to the data's labels where only correct ones are
    kept). A ``ValueError`` when the model classifies (almost) none of them correctly; fewer than
    ``n`` when a folder or the photographs run out."""
    if getattr(data, "selection", "correct") == "all":
        ids = list(itertools.islice(data.order(seed), min(n, data.limit(n))))
        x, _, m = data.load(ids)
        check_classes(model, data, x[:1].to(device))
        pred = torch.cat([model(x[i:i + chunk].to(device)).argmax(1).cpu() for i in range(0, len(ids), chunk)])
        return x, pred, m, ids, len(ids)
    order, limit = data.order(seed), data.limit(n)
    xs, ys, ms, idx = [], [], [], []
    scanned = found = 0
    while found < n and scanned < limit:
        ids = list(itertools.islice(order, min(chunk, limit - scanned)))
        if not ids:
            break
        x, y, m = data.load(ids)
        if scanned == 0:
            check_classes(model, data, x[:1].to(device))
        ok = (model(x.to(device)).argmax(1).cpu() == y).nonzero()[:, 0][: n - found]
        xs.append(x[ok]), ys.append(y[ok]), idx.extend(ids[int(j)] for j in ok)
        if m is not None:
            ms.append(m[ok])
        found += len(ok)
        scanned += len(ids)
    if found == 0 or (found < n and found < 0.05 * scanned):
        raise ValueError(f"the model classifies {found} of the {scanned} images it was shown correctly; check that "
                         "the model, its weights and normalisation, and the class order fit the data")
    return torch.cat(xs), torch.cat(ys), (torch.cat(ms) if ms else None), idx, scanned


@torch.no_grad()
def find_donors(model, data, targets: torch.Tensor, indices, seed: int, device="cpu", tries: int = 200) -> list[int]:
    """For each example, another image of its target class that ``model`` classifies correctly
    (for the ``other`` target-map policy), chosen in an order seeded by ``(seed, index)``."""
    donors = []
    for c, i in zip(targets.tolist(), indices, strict=True):
        found = None
        for j in itertools.islice(data.candidates_of_class(c, seed, i), tries):
            x, y, _ = data.load([j])
            if int(model(x.to(device)).argmax(1)) == y.item():
                found = j
                break
        if found is None:
            raise ValueError(f"target_map other: no image of class {c} that the model classifies correctly "
                             f"(needed for example {i})")
        donors.append(found)
    return donors


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
    (:func:`select_examples` on the shapes data).

    Returns ``(images, labels, masks, indices)``; ``indices`` are the dataset indices.
    """
    dev = next(model.parameters()).device
    x, y, m, idx, _ = select_examples(model, ShapesData(split, seed), n, seed, device=dev, chunk=chunk)
    return x, y, m, idx
