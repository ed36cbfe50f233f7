"""Shipped photographs with ImageNet labels: shapes, ranges, determinism, augmentation, labels."""

import importlib
import socket

import pytest
import torch

from adv2.data import PHOTOS, imagenet_classes, photo_catalog, photo_names, photos

pytest.importorskip("skimage")

EXPECTED = {"chelsea": (281, "tabby"), "coffee": (967, "espresso"), "rocket": (657, "missile"),
            "grace_hopper": (652, "military uniform")}


def test_imagenet_classes_offline():
    c = imagenet_classes()
    assert len(c) == 1000 and all(isinstance(n, str) and n for n in c)
    assert c[0] == "tench" and c[281] == "tabby" and c[282] == "tiger cat"
    assert c[652] == "military uniform" and c[967] == "espresso" and c[999] == "toilet tissue"
    c.append("mutated")  # a copy: the cache is not affected
    assert len(imagenet_classes()) == 1000


def test_catalog_labels_are_the_documented_ones():
    c = imagenet_classes()
    assert photo_catalog() is PHOTOS
    assert {p.name: (p.label, p.class_name) for p in PHOTOS} == EXPECTED
    for p in PHOTOS:
        assert c[p.label] == p.class_name
        assert p.source.startswith(("scikit-image:", "matplotlib:")) and p.credit
    _, y = photos(32)
    assert y.tolist() == [p.label for p in PHOTOS]


@pytest.mark.parametrize("size", [224, 96])
def test_shapes_dtypes_ranges(size):
    x, y = photos(size=size)
    n = len(PHOTOS)
    assert x.shape == (n, 3, size, size) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
    assert (x.flatten(1).std(1) > 0.05).all()  # real pictures, not blanks
    assert ((y >= 0) & (y < 1000)).all()


def test_default_call_and_determinism():
    x, y = photos()
    assert x.shape[-2:] == (224, 224)
    x2, y2 = photos(size=224)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert photo_names() == list(EXPECTED)


def test_same_as_imagenet_eval_transform():
    from PIL import Image
    from torchvision import transforms

    size = 96
    tf = transforms.Compose([transforms.Resize(int(round(size * 256 / 224))), transforms.CenterCrop(size),
                             transforms.ToTensor()])
    x, _ = photos(size)
    for i, p in enumerate(PHOTOS):
        raw = p.load()
        assert raw.dtype.name == "uint8" and raw.ndim == 3 and raw.shape[2] == 3
        assert torch.equal(x[i], tf(Image.fromarray(raw)))


def test_mirrored_copies_are_exact_flips():
    n = len(PHOTOS)
    x0, y0 = photos(64)
    x, y = photos(64, augment=True)
    assert x.shape == (2 * n, 3, 64, 64) and y.tolist() == y0.tolist() * 2
    assert torch.equal(x[:n], x0)
    assert torch.equal(x[n:], x0.flip(-1))
    names = photo_names(augment=True)
    assert names == photo_names("mirror") and len(names) == 2 * n
    assert names[:n] == [p.name for p in PHOTOS]
    assert names[n:] == [f"{p.name} (mirrored)" for p in PHOTOS]


def test_off_centre_crops():
    n = len(PHOTOS)
    x2, _ = photos(64, augment="mirror")
    x, y = photos(64, augment="crops")
    names = photo_names("crops")
    assert x.shape == (4 * n, 3, 64, 64) and len(names) == 4 * n and len(y) == 4 * n
    assert torch.equal(x[:2 * n], x2)
    assert all(names[2 * n + i] == f"{p.name} (crop up-left)" for i, p in enumerate(PHOTOS))
    assert all(names[3 * n + i] == f"{p.name} (crop down-right)" for i, p in enumerate(PHOTOS))
    for k in (2, 3):
        crops = x[k * n:(k + 1) * n]
        assert crops.min() >= 0 and crops.max() <= 1
        assert all(not torch.equal(crops[i], x[i]) for i in range(n))
    assert torch.equal(photos(64, augment="none")[0], x[:n])


@pytest.mark.parametrize("size", [0, -3, 2.5, "224", True, None])
def test_bad_size_raises(size):
    with pytest.raises(ValueError, match="size"):
        photos(size=size)


@pytest.mark.parametrize("augment", ["flip", 3, "Mirror"])
def test_bad_augment_raises(augment):
    with pytest.raises(ValueError, match="augment"):
        photos(32, augment=augment)
    with pytest.raises(ValueError, match="augment"):
        photo_names(augment)


def test_loads_without_network(monkeypatch):
    mod = importlib.import_module("adv2.data.photos")  # the attribute adv2.data.photos is the function

    def refuse(*args, **kwargs):
        raise AssertionError("photos() tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    mod._raw.cache_clear()
    x, _ = photos(32)
    assert x.shape[0] == len(PHOTOS)


def test_missing_scikit_image_names_the_extra(monkeypatch):
    import builtins

    mod = importlib.import_module("adv2.data.photos")  # the attribute adv2.data.photos is the function

    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    mod._raw.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'adv2\[imagenet\]'") as e:
            photos(32)
        assert "\n" not in str(e.value)
    finally:
        monkeypatch.undo()
        mod._raw.cache_clear()
