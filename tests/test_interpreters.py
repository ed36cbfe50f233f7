"""Interpreters against independent implementations (captum) and their invariants."""

import copy

import pytest
import torch
import torchvision
from torch import nn

import adv2
from adv2.interpreters import CAM, Grad, GradCAM, smooth_relu
from adv2.interpreters.base import minmax
from adv2.models import IMAGENET_MEAN, IMAGENET_STD, Normalized

captum_attr = pytest.importorskip("captum.attr")


def _tv(name):
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None, num_classes=10)
    return Normalized(net, IMAGENET_MEAN, IMAGENET_STD).eval()


MODELS = {
    "resnet18": lambda: (_tv("resnet18"), 64),
    "densenet121": lambda: (_tv("densenet121"), 64),
    "shapes-resnet": lambda: (adv2.models.load("shapes-resnet"), 64),
    "shapes-densenet": lambda: (adv2.models.load("shapes-densenet"), 64),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_input(request):
    model, size = MODELS[request.param]()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, size, size, generator=g)
    t = torch.tensor([0, 3, 7])
    return request.param, model, x, t


def test_grad_matches_captum_saliency(model_and_input):
    _, model, x, t = model_and_input
    ours = Grad(model)(x, t)
    sal = captum_attr.Saliency(model).attribute(x.clone(), target=t, abs=True)
    ref = minmax(sal.amax(1, keepdim=True))
    assert ours.shape == (3, 1, x.shape[2], x.shape[3])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def _gradcam_reference(name, model, x, t):
    """captum LayerGradCam on the same feature map (DenseNet: an explicit final ReLU module)."""
    model = copy.deepcopy(model)
    net = model.model
    if isinstance(net, torchvision.models.DenseNet):
        net.features.add_module("final_relu", nn.ReLU())  # forward's F.relu is then idempotent
        layer = net.features.final_relu
    else:
        layer = net.layer4
    attr = captum_attr.LayerGradCam(model, layer).attribute(x.clone(), target=t, relu_attributions=True)
    return minmax(attr)


def test_gradcam_matches_captum(model_and_input):
    name, model, x, t = model_and_input
    ours = GradCAM(model)(x, t)
    ref = _gradcam_reference(name, model, x, t)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_cam_spatial_mean_plus_bias_is_the_logit(model_and_input):
    """Σ_k w_ck mean(A_k) + b_c = logit_c: CAM's raw map is consistent with the head."""
    _, model, x, t = model_and_input
    cam = CAM(model)
    from adv2.interpreters.layers import capture

    with torch.no_grad(), capture(cam.site) as cap:
        logits = model(x)
    raw = torch.einsum("nc,nchw->nhw", cam.site.head.weight[t], cap.value)
    recon = raw.mean((1, 2)) + cam.site.head.bias[t]
    torch.testing.assert_close(recon, logits.gather(1, t[:, None])[:, 0], atol=1e-4, rtol=1e-4)
    m = cam(x, t)
    torch.testing.assert_close(m, minmax(raw[:, None]))
    assert m.shape[-2:] == cap.value.shape[-2:]


def test_smooth_relu_keeps_logits_and_gives_second_order_gradients(model_and_input):
    _, model, x, t = model_and_input
    with torch.no_grad():
        exact = model(x)
        with smooth_relu():
            smooth = model(x)
    assert torch.equal(exact, smooth)
    xr = x.clone().requires_grad_(True)
    _, m = Grad(model).logits_and_map(xr, t, create_graph=True, smooth=True)
    target = torch.rand(m.shape, generator=torch.Generator().manual_seed(2))
    (g2,) = torch.autograd.grad((m - target).pow(2).sum(), xr)
    assert torch.isfinite(g2).all()
    assert (g2.abs().flatten(1).amax(1) > 0).all(), "second-order gradient of the Grad map vanished"


def test_exact_relu_second_order_gradient_is_zero():
    """Why the surrogate exists: with the exact ReLU the map's derivative is zero."""
    model, _ = MODELS["shapes-resnet"]()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    t = torch.tensor([1, 2])
    _, m = Grad(model).logits_and_map(x, t, create_graph=True, smooth=False)
    (g2,) = torch.autograd.grad(m.sum(), x, allow_unused=True)
    assert g2 is None or g2.abs().max() == 0


@pytest.mark.parametrize("kind", ["sqrt", "paper", "softplus"])
def test_surrogate_derivative_shapes(kind):
    z = torch.linspace(-1, 1, 101, requires_grad=True)
    with smooth_relu(kind=kind, temperature=1e-2, beta=10):
        y = torch.relu(z)
    assert torch.equal(y, z.detach().clamp_min(0))
    (d,) = torch.autograd.grad(y.sum(), z, create_graph=True)
    assert d[0] < 0.1 and d[-1] > 0.9  # ~0 for z << 0, ~1 for z >> 0
    (dd,) = torch.autograd.grad(d.sum(), z)
    assert dd[45:56].abs().max() > 0


@pytest.mark.parametrize("cls", [Grad, CAM, GradCAM])
def test_maps_in_unit_range_and_batch_independent(cls, resnet_model, shapes_test):
    x, y, _ = shapes_test
    g = cls(resnet_model)
    m = g(x[:6], y[:6])
    assert m.min() >= 0 and m.max() <= 1
    assert torch.allclose(m.flatten(1).amax(1), torch.ones(6))
    m2 = g(x[2:4], y[2:4])
    torch.testing.assert_close(m[2:4], m2, atol=1e-5, rtol=1e-4)


def test_get_by_name(resnet_model):
    assert isinstance(adv2.interpreters.get("cam", resnet_model), CAM)
    assert isinstance(adv2.interpreters.get("GRAD", resnet_model), Grad)
    with pytest.raises(ValueError, match="unknown interpreter 'foo'"):
        adv2.interpreters.get("foo", resnet_model)


def test_cam_named_layer_and_errors(resnet_model):
    x = torch.rand(2, 3, 64, 64)
    t = torch.tensor([0, 1])
    torch.testing.assert_close(CAM(resnet_model, layer="layer4", head="fc")(x, t), CAM(resnet_model)(x, t))
    with pytest.raises(ValueError, match="no layer 'nope'"):
        CAM(resnet_model, layer="nope")
    with pytest.raises(ValueError, match="automatically"):
        CAM(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(3, 64, 64), "rank 4"),
        (torch.rand(2, 1, 64, 64), "3 colour channels"),
        (torch.rand(2, 3, 64, 64) + 1, r"\[0, 1\]"),
        (torch.full((2, 3, 64, 64), float("nan")), "NaN"),
    ],
)
def test_bad_images(resnet_model, x, match):
    with pytest.raises(ValueError, match=match):
        Grad(resnet_model)(x, torch.tensor([0, 1])[: x.shape[0]] if x.dim() == 4 else torch.tensor([0]))


def test_bad_target(resnet_model):
    with pytest.raises(ValueError, match="out of range"):
        CAM(resnet_model)(torch.rand(2, 3, 64, 64), torch.tensor([0, 10]))
