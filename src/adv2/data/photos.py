"""Real photographs that installed packages ship, labelled with ImageNet classes, offline.

Four photographs, each with the ImageNet-1k class a person would give it:

==============  =====  ==================  ===============================================
name            index  ImageNet class      source
==============  =====  ==================  ===============================================
chelsea           281  tabby               scikit-image ``skimage.data.chelsea()``
coffee            967  espresso            scikit-image ``skimage.data.coffee()``
rocket            657  missile             scikit-image ``skimage.data.rocket()``
grace_hopper      652  military uniform    matplotlib ``cbook.get_sample_data("grace_hopper.jpg")``
==============  =====  ==================  ===============================================

Why these labels: Chelsea is a striped domestic cat, which everyday English calls a tabby
(ImageNet's 282 "tiger cat" also collects small wild cats); the cup holds an espresso with its
crema, as in ImageNet's "espresso" class (968 "cup" is the vessel, usually empty); the Falcon 9 on
its launch pad is a rocket, which ImageNet files under 657 "missile" (812 "space shuttle" is the
winged orbiter, 744 "projectile" the generic fired object); Grace Hopper's portrait shows a U.S.
Navy dress uniform, the photograph's label in TensorFlow's and many other classifier demos.
These are the labels a person gives; classifiers disagree more: ImageNet models often split
Chelsea between 281 "tabby", 282 "tiger cat" and 285 "Egyptian cat", and put "academic gown" or
"mortarboard" near "military uniform" for Grace Hopper's portrait.

Left out on purpose: ``astronaut`` (a space suit: no ImageNet class), ``horse`` (a binary
silhouette, not a photograph), ``cat`` (the same picture as ``chelsea``), ``camera`` (a man with a
camera on a tripod: no single class), ``clock`` (a motion-blurred grey wall clock),
``stereo_motorcycle`` (ImageNet has no motorcycle class; "moped" would be wrong) and the
microscopy and astronomy images. Only files shipped inside the packages are read: nothing is
downloaded.

``photos(size)`` preprocesses like torchvision's ImageNet evaluation (and
:func:`adv2.data.image_folder`): shorter side resized (antialiased bilinear) to
``round(size · 256/224)``, centre crop ``size``×``size``, RGB floats in ``[0, 1]``, no
normalisation (that lives in the model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image
from torchvision.models import ResNet50_Weights
from torchvision.transforms import functional as F

_INSTALL_HINT = "pip install 'adv2[imagenet]'"

#: augmentation levels accepted by :func:`photos` / :func:`photo_names`, in increasing size
AUGMENTATIONS = ("none", "mirror", "crops")


@functools.cache
def _imagenet_classes() -> tuple[str, ...]:

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, index ``i`` → name (e.g. 281 → ``"tabby"``).

    Read offline from torchvision's weight metadata (nothing is downloaded) and cached; the list
    returned is a fresh copy each call.
    """
    return list(_imagenet_classes())


def _skimage_image(fn_name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as e:  # optional extra
        raise ImportError(f"adv2.data.photos needs scikit-image: {_INSTALL_HINT}") from e
    return getattr(skimage.data, fn_name)()


def _matplotlib_sample(fname: str) -> np.ndarray:

    with Image.open(cbook.get_sample_data(fname, asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class Photo:
    """One photograph: its name, ImageNet label, where it comes from and whom to credit."""

    name: str
    label: int          #: ImageNet-1k class index
    class_name: str     #: ``imagenet_classes()[label]``
    source: str         #: package and function / file it is read from
    credit: str         #: licence / credit line as the package documents it
    _load: Callable[[], np.ndarray] = field(repr=False, compare=False)

    def load(self) -> np.ndarray:
        """The photograph as shipped: ``(H, W, 3)`` uint8 RGB (grey images expanded to 3 channels)."""
        return _raw(self.name)


#: the photographs, in the order :func:`photos` returns them
PHOTOS: tuple[Photo, ...] = (
    Photo("chelsea", 281, "tabby", "scikit-image: skimage.data.chelsea()",
          "Chelsea the cat; CC0 by the photographer (Stefan van der Walt)",
          functools.partial(_skimage_image, "chelsea")),
    Photo("coffee", 967, "espresso", "scikit-image: skimage.data.coffee()",
          "Coffee cup, courtesy of Pikolo Espresso Bar; CC0 by the photographer (Rachel Michetti)",
          functools.partial(_skimage_image, "coffee")),
    Photo("rocket", 657, "missile", "scikit-image: skimage.data.rocket()",
          "Launch of DSCOVR on Falcon 9 by SpaceX; released into the public domain by SpaceX",
          functools.partial(_skimage_image, "rocket")),
    Photo("grace_hopper", 652, "military uniform",
          'matplotlib: matplotlib.cbook.get_sample_data("grace_hopper.jpg")',
          "Commodore Grace M. Hopper, official U.S. Navy portrait (public domain, a work of the U.S. "
          "federal government); matplotlib ships it without a credit line",
          functools.partial(_matplotlib_sample, "grace_hopper.jpg")),
)

_BY_NAME = {p.name: p for p in PHOTOS}


@functools.cache
def _raw(name: str) -> np.ndarray:
    a = np.asarray(_BY_NAME[name]._load())
    if a.dtype != np.uint8:
        raise ValueError(f"photo {name!r}: expected uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"photo {name!r}: unexpected shape {a.shape}")
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def photo_catalog() -> tuple[Photo, ...]:
    """The records of the photographs (name, ImageNet label and class name, source, credit)."""
    return PHOTOS


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return int(size)


def _augmentation(augment) -> str:
    if augment is False or augment is None:
        return "none"
    if augment is True:
        return "mirror"
    if isinstance(augment, str) and augment in AUGMENTATIONS:
        return augment
    raise ValueError(f"augment must be False, True or one of {AUGMENTATIONS}, got {augment!r}")


_VARIANTS = {
    # level: the suffixes of the copies, in order (each block holds every photograph)
    "none": ("",),
    "mirror": ("", " (mirrored)"),
    "crops": ("", " (mirrored)", " (crop up-left)", " (crop down-right)"),
}


def photo_names(augment: bool | str = False) -> list[str]:
    """The names of the examples :func:`photos` returns with the same ``augment``, in order.

    E.g. ``["chelsea", "coffee", "rocket", "grace_hopper"]`` for ``augment=False``; with
    ``augment=True`` the same four followed by ``"chelsea (mirrored)"``, ... .
    """
    level = _augmentation(augment)
    return [p.name + suffix for suffix in _VARIANTS[level] for p in PHOTOS]


def _resized(name: str, short: int) -> torch.Tensor:
    """The photograph with its shorter side resized to ``short``: ``(3, H, W)`` float in [0, 1]."""

    im = Image.fromarray(_raw(name))
    return F.to_tensor(F.resize(im, short, interpolation=F.InterpolationMode.BILINEAR, antialias=True))


def photos(size: int = 224, augment: bool | str = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Real photographs with their ImageNet labels: ``x, y = photos(size=224)``.

    Returns ``x`` ``(n, 3, size, size)`` float32 in ``[0, 1]`` (RGB, not normalised) and ``y``
    ``(n,)`` long ImageNet-1k class indices (see :func:`imagenet_classes`). The four photographs
    (chelsea → 281 tabby, coffee → 967 espresso, rocket → 657 missile, grace_hopper → 652
    military uniform; sources and credits in :data:`PHOTOS`) are preprocessed like torchvision's
    ImageNet evaluation: shorter side resized, antialiased, to ``round(size · 256/224)``, then a
    centre crop of ``size``×``size``. Deterministic: equal calls return equal tensors.

    ``augment`` adds augmented copies after the originals, as whole blocks in the order of
    :data:`PHOTOS` (so ``x[:4]`` are always the originals and :func:`photo_names` names each row):

    * ``False`` / ``"none"``: the 4 photographs;
    * ``True`` / ``"mirror"``: + their horizontal mirror images (exactly ``x[:4].flip(-1)``): 8;
    * ``"crops"``: + two off-centre crops of the same resized image, shifted by half the crop
      margin up-left and down-right of the centre crop (the object stays in view): 16.

    Needs scikit-image (``pip install 'adv2[imagenet]'``); nothing is downloaded.
    Raises ``ValueError`` for a size that is not a positive integer or an unknown ``augment``.
    """
    size = _check_size(size)
    level = _augmentation(augment)
    short = int(round(size * 256 / 224))
    crops = []
    shifted = {" (crop up-left)": [], " (crop down-right)": []}
    for p in PHOTOS:
        img = _resized(p.name, short)
        h, w = img.shape[-2:]
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))  # as CenterCrop
        crops.append(img[:, top:top + size, left:left + size])
        if level == "crops":
            dy, dx = max((h - size) // 4, 1), max((w - size) // 4, 1)
            dy, dx = min(dy, top, h - size - top), min(dx, left, w - size - left)
            shifted[" (crop up-left)"].append(img[:, top - dy:top - dy + size, left - dx:left - dx + size])
            shifted[" (crop down-right)"].append(img[:, top + dy:top + dy + size, left + dx:left + dx + size])
    x = torch.stack(crops)
    blocks = [x]
    if level in ("mirror", "crops"):
        blocks.append(x.flip(-1))
    if level == "crops":
        blocks += [torch.stack(shifted[" (crop up-left)"]), torch.stack(shifted[" (crop down-right)"])]
    y = torch.tensor([p.label for p in PHOTOS], dtype=torch.long)
    x = torch.cat(blocks).to(torch.float32).contiguous()
    return x, y.repeat(len(blocks))
