"""The shapes benchmark: determinism, splits, ranges, masks."""

import pytest
import torch

from adv2.data import CLASSES, NUM_CLASSES, shapes
from adv2.data.shapes import shape_membership


def test_shapes_ranges_and_shapes():
    x, y, m = shapes(12, split="train", seed=3)
    assert x.shape == (12, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (12,) and y.dtype == torch.long
    assert m.shape == (12, 1, 64, 64)
    assert x.min() >= 0 and x.max() <= 1
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert ((y >= 0) & (y < NUM_CLASSES)).all()
    area = m.flatten(1).mean(1)
    assert (area > 0.01).all() and (area < 0.5).all()


def test_same_seed_same_bits_and_index_stability():
    a = shapes(6, split="test", seed=7)
    b = shapes(6, split="test", seed=7)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    c = shapes(3, split="test", seed=7, start=3)
    assert torch.equal(a[0][3:], c[0])
    d = shapes(6, split="test", seed=8)
    assert not torch.equal(a[0], d[0])


def test_splits_do_not_overlap():
    tr, _, _ = shapes(200, split="train", seed=0)
    te, _, _ = shapes(200, split="test", seed=0)
    dist = torch.cdist(tr.flatten(1), te.flatten(1))
    assert dist.min() > 1.0


def test_every_class_appears():
    _, y, _ = shapes(200, split="val", seed=0)
    assert set(y.tolist()) == set(range(NUM_CLASSES))
    assert len(CLASSES) >= 8


def test_fine_differences_between_classes():
    """Circle, hexagon and pentagon differ only near the boundary."""
    g = torch.linspace(-1.1, 1.1, 221)
    v, u = torch.meshgrid(g, g, indexing="ij")
    areas = {c: shape_membership(i, u, v).float().mean().item() for i, c in enumerate(CLASSES)}
    assert areas["hexagon"] < areas["circle"] and areas["pentagon"] < areas["hexagon"]
    assert abs(areas["hexagon"] / areas["circle"] - 0.827) < 0.02  # 3√3/(2π)


@pytest.mark.parametrize("kw, match", [({"split": "dev"}, "unknown split"), ({"n": -1}, "non-negative")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        shapes(**{"n": 2, **kw})


def test_image_folder(tmp_path):
    from PIL import Image

    from adv2.data import image_folder

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), (i * 60, 10, 200)).save(tmp_path / c / f"{i}.png")
    loader = image_folder(tmp_path, size=24, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 24, 24) and x.min() >= 0 and x.max() <= 1
    assert loader.dataset.classes == ["cat", "dog"] and y.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="not found"):
        image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        image_folder(tmp_path / "empty")
