"""Model loading: embedded weights, torchvision architectures, bad weights."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import adv2
from adv2.data import shapes
from adv2.models import IMAGENET_MEAN, IMAGENET_STD, Normalized, weights_dir


@pytest.mark.parametrize("name", ["shapes-resnet", "shapes-densenet"])
def test_embedded_models_are_small_accurate_and_in_eval_mode(name):
    path = weights_dir() / f"{name}.safetensors"
    assert path.stat().st_size < 5 * 2**20
    model = adv2.models.load(name)
    assert not model.training
    x, y, _ = shapes(200, split="test", seed=1)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.95


def test_embedded_architectures_are_torchvision_with_8x8_features():
    r = adv2.models.load("shapes-resnet").model
    d = adv2.models.load("shapes-densenet").model
    assert isinstance(r, torchvision.models.ResNet) and isinstance(d, torchvision.models.DenseNet)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats = torch.nn.Sequential(*list(r.children())[:-2])(x)
        assert feats.shape[-2:] == (8, 8)
        assert d.features(x).shape[-2:] == (8, 8)


def test_normalized_applies_mean_and_std():
    net = torch.nn.Identity()
    m = Normalized(net, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.ones(1, 3, 2, 2)
    torch.testing.assert_close(m(x)[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalized(net, (0.5,), (0.0,))


def test_torchvision_arch_with_local_weights(tmp_path):
    net = torchvision.models.resnet18(num_classes=7)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    save_file(net.state_dict(), str(tmp_path / "r18.safetensors"))
    x = torch.rand(1, 3, 32, 32)
    net.eval()
    ref = Normalized(net, IMAGENET_MEAN, IMAGENET_STD)(x)
    for f in ("r18.pth", "r18.safetensors"):
        m = adv2.models.load("resnet18", weights=tmp_path / f, num_classes=7)
        torch.testing.assert_close(m(x), ref)


def test_mismatched_weights_are_a_value_error(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="do not match the architecture"):
        adv2.models.load("resnet34", weights=tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="do not match the architecture"):
        adv2.models.load("shapes-resnet", weights=tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="not found"):
        adv2.models.load("resnet18", weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        adv2.models.load("resnet18", weights=tmp_path / "junk.pth")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'resnet5000'"):
        adv2.models.load("resnet5000")
