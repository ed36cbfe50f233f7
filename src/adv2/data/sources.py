"""Data sources an experiment chooses its examples from (:mod:`adv2.data.selection`).

Three kinds: the embedded shapes benchmark (:class:`ShapesData`, with ground-truth object
masks), an ImageNet-style folder ``root/<class>/<image>`` (:class:`FolderData`) and the real
photographs that installed packages ship (:class:`PhotosData`, ImageNet classes). Each gives
``load(indices) -> (images, labels, masks or None)``, a seeded ``order(seed)`` of its examples and,
for the ``other`` target-map policy, ``candidates_of_class``. Every choice depends on
``(seed, dataset index)`` only, never on batching or sharding.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets, transforms

from adv2.data.photos import imagenet_classes, photo_names, photos
from adv2.data.shapes import CLASSES, NUM_CLASSES, example

#: Image file suffixes a folder dataset reads (what PIL and torchvision's ImageFolder accept).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ShapesData:
    """The embedded shapes benchmark: an unbounded split, example ``i`` a pure function of
    ``(seed, split, i)``; images ``(3, 64, 64)``, 10 classes, object masks."""

    name = "shapes"
    has_masks = True
    #: which examples :func:`adv2.data.selection.select_examples` keeps: ``"correct"`` (classified
    #: correctly) or ``"all"``
    selection = "correct"

    def __init__(self, split: str = "test", seed: int = 0):
        self.split, self.seed = split, seed
        self.num_classes, self.classes, self.size = NUM_CLASSES, list(CLASSES), 64

    def order(self, seed: int):
        """Dataset order (the demo's examples are the first correctly classified ones)."""
        return itertools.count()

    def limit(self, n: int) -> int:
        """How many candidates to try for ``n`` examples before declaring the model hopeless."""
        return 50 * max(n, 64)

    def load(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        xs, ys, ms = zip(*(example(int(i), self.split, self.seed) for i in indices), strict=True)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long), torch.stack(ms)

    def candidates_of_class(self, c: int, seed: int, index: int):
        """Other examples of class ``c`` in an order seeded by ``(seed, index)`` (for donors)."""
        start = int(np.random.default_rng([seed, 104_729, int(index)]).integers(0, 1_000_000))
        for j in itertools.count(start):
            if j != index and example(j, self.split, self.seed)[1] == c:
                yield j

    def describe(self) -> str:
        return f"shapes ({self.split} split, seed {self.seed})"


class FolderData:
    """An ImageNet-style folder ``root/<class>/<image>``: images resized (shorter side to
    ``size·256/224``) and centre-cropped to ``size``×``size``, in ``[0, 1]``.

    ``labels="sorted"``: class ``k`` is the ``k``-th folder name in sorted order (torchvision's
    ``ImageFolder``); ``labels="numeric"``: folder names are the model's class indices (``"207"``),
    for a subset of a large label set such as ImageNet's."""

    name = "folder"
    has_masks = False
    selection = "correct"

    def __init__(self, root: str | Path, size: int = 224, labels: str = "sorted"):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"data.root: image folder {str(root)!r} not found")
        class_dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise ValueError(f"data.root: {root} has no class folders (expected {root}/<class>/<image>)")
        tf = transforms.Compose([transforms.Resize(int(round(size * 256 / 224))), transforms.CenterCrop(size),
                                 transforms.ToTensor()])
        try:
            self.ds = datasets.ImageFolder(str(root), transform=tf, allow_empty=True)
        except (FileNotFoundError, RuntimeError) as e:
            raise ValueError(f"data.root: cannot read {root}: {e}") from None
        if len(self.ds) == 0:
            raise ValueError(f"data.root: no images under {root} (expected {root}/<class>/<image> with suffixes "
                             f"{', '.join(IMAGE_SUFFIXES)})")
        self.classes = list(self.ds.classes)
        if labels == "numeric":
            bad = [c for c in self.classes if not c.isdigit()]
            if bad:
                raise ValueError(f"data.labels: numeric needs class folders named by class index, got {bad[0]!r}")
            ids = [int(c) for c in self.classes]
            self.labels = [ids[t] for t in self.ds.targets]
            self.num_classes = max(ids) + 1
        else:
            self.labels = list(self.ds.targets)
            self.num_classes = len(self.classes)
        self.root, self.size, self.label_mode = root, size, labels
        self._by_class: dict[int, list[int]] = {}
        for i, y in enumerate(self.labels):
            self._by_class.setdefault(y, []).append(i)

    def __len__(self) -> int:
        return len(self.ds)

    def class_name(self, label: int) -> str:
        return str(label) if self.label_mode == "numeric" else self.classes[label]

    def order(self, seed: int):
        """Class-balanced order: each class's images shuffled (seeded by ``(seed, class)``), then
        taken round-robin across classes."""
        per_class = []
        for c in sorted(self._by_class):
            idx = np.array(self._by_class[c])
            per_class.append(list(idx[np.random.default_rng([seed, 31_337, c]).permutation(len(idx))]))
        for group in itertools.zip_longest(*per_class):
            yield from (int(i) for i in group if i is not None)

    def limit(self, n: int) -> int:
        return len(self.ds)

    def load(self, indices) -> tuple[torch.Tensor, torch.Tensor, None]:
        xs = []
        for i in indices:
            try:
                xs.append(self.ds[int(i)][0])
            except Exception as e:  # noqa: BLE001 — a broken image file: name it
                raise ValueError(f"cannot read image {self.ds.samples[int(i)][0]}: {e}") from None
        x = torch.stack(xs)
        if x.shape[1] != 3:
            x = x[:, :1].expand(-1, 3, -1, -1).contiguous()
        return x, torch.tensor([self.labels[int(i)] for i in indices], dtype=torch.long), None

    def candidates_of_class(self, c: int, seed: int, index: int):
        pool = [i for i in self._by_class.get(c, []) if i != index]
        for k in np.random.default_rng([seed, 104_729, int(index)]).permutation(len(pool)):
            yield pool[int(k)]

    def present_classes(self) -> list[int]:
        """The labels that have at least one image."""
        return sorted(self._by_class)

    def describe(self) -> str:
        return f"folder {self.root} ({len(self.ds)} images, {len(self.classes)} classes, {self.size}×{self.size})"


class PhotosData:
    """The real photographs of :func:`adv2.data.photos` (four photographs that scikit-image and
    matplotlib ship, plus augmented copies): ``(3, size, size)`` images, the 1000 ImageNet-1k
    classes (``classes`` = :func:`adv2.data.imagenet_classes`), no object masks.

    ``augment``: ``none`` (4 images), ``mirror`` (+ their mirror images: 8) or ``crops`` (+ two
    off-centre crops: 16), in the order of :func:`adv2.data.photo_names` (originals first);
    :meth:`order` is that order, whatever the seed, so ``n: 4`` takes the four originals.

    **Labels.** :meth:`load` gives the label a person gives each photograph (chelsea → 281
    "tabby", ...). A real classifier disagrees with some of them (EfficientNet-Lite0 calls the
    tabby a "tiger cat" and Grace Hopper's portrait an "academic gown"), and with only a handful of
    images dropping those would waste half of them. So :func:`adv2.data.selection.select_examples` keeps *every*
    photograph (``selection = "all"``) and labels it by the model's prediction ``f(x)``: the benign
    map is ``g(x, f(x))``, the map a user of the model sees, and the target class is drawn among
    the other 999 classes, never equal to the prediction. The person's labels are kept beside them
    (``true_labels`` in a run's tensors, ``true_label`` in its rows)."""

    name = "photos"
    has_masks = False
    selection = "all"

    def __init__(self, size: int = 224, augment: str | bool = "mirror"):
        try:
            self._x, self._y = photos(size, augment)
        except ImportError as e:  # the optional extra: one clear line
            raise ValueError(str(e)) from None
        self.size, self.augment = int(size), augment
        self.names = photo_names(augment)
        self.classes = imagenet_classes()
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.names)

    def class_name(self, label: int) -> str:
        return self.classes[label]

    def order(self, seed: int):
        """The order of :func:`adv2.data.photo_names` (originals first), whatever the seed."""
        return iter(range(len(self.names)))

    def limit(self, n: int) -> int:
        return len(self.names)

    def load(self, indices) -> tuple[torch.Tensor, torch.Tensor, None]:
        idx = torch.as_tensor([int(i) for i in indices], dtype=torch.long)
        return self._x[idx].clone(), self._y[idx].clone(), None

    def candidates_of_class(self, c: int, seed: int, index: int):
        pool = [i for i in range(len(self.names)) if i != index and int(self._y[i]) == c]
        for k in np.random.default_rng([seed, 104_729, int(index)]).permutation(len(pool)):
            yield pool[int(k)]

    def describe(self) -> str:
        aug = {False: "none", True: "mirror"}.get(self.augment, self.augment)
        return (f"photos ({len(self.names)} photographs, augment {aug}, {self.size}×{self.size}, "
                f"{self.num_classes} ImageNet classes)")


def build_data(spec: dict):
    """The dataset of a config's ``data`` mapping."""
    if spec["name"] == "shapes":
        return ShapesData(spec.get("split", "test"), spec["seed"])
    if spec["name"] == "photos":
        return PhotosData(spec.get("size", 224), spec.get("augment", "mirror"))
    return FolderData(spec["root"], spec.get("size", 224), spec.get("labels", "sorted"))
