"""CAM and Grad-CAM find their feature site on the common architectures, or refuse clearly.

Every CAM-valid site is checked against an independent computation (a forward hook written
here and the head's weights): the raw map, averaged over space, plus the head's bias is the
logit; Grad-CAM against its definition on the same hooked map. Random weights, small inputs.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from adv2.interpreters import CAM, Grad, GradCAM
from adv2.interpreters.base import minmax
from adv2.models import IMAGENET_MEAN, IMAGENET_STD, Normalized

N = 2


def _tv(name, **kwargs):
    return torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)


def _convnext():
    net = _tv("convnext_tiny")
    ln = net.classifier[0]  # a non-trivial LayerNorm affine, so that folding its scale is tested
    ln.weight.data.uniform_(0.5, 1.5)
    ln.bias.data.normal_(0, 0.5)
    return net


def _vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10)


def _swin():
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[1, 1], num_heads=[1, 1], window_size=[4, 4],
                           num_classes=10)


def _lite(name):
    def build():
        lite = pytest.importorskip("efficientnet_lite_pytorch")
        return lite.EfficientNet.from_name(name, num_classes=10)
    return build


# name: (builder, input size, feature layer (Grad-CAM and CAM), post, CAM head or None if refused,
#        LayerNorm between pool and head, CAM refusal pattern)
ARCHS = {
    "resnet18": (lambda: _tv("resnet18"), 64, "layer4", None, "fc", None, None),
    "densenet121": (lambda: _tv("densenet121"), 64, "features", F.relu, "classifier", None, None),
    "vgg11": (lambda: _tv("vgg11"), 64, "features.19", None, None, None, r"no global-average-pool.*MLP.*GradCAM"),
    "alexnet": (lambda: _tv("alexnet"), 64, "features.11", None, None, None, r"no global-average-pool.*MLP"),
    "mobilenet_v2": (lambda: _tv("mobilenet_v2"), 64, "features", None, "classifier.1", None, None),
    "mobilenet_v3_small": (lambda: _tv("mobilenet_v3_small"), 64, "features", None, None, None,
                           r"MobileNetV3.*MLP \(Linear, Hardswish, Dropout, Linear\).*GradCAM"),
    "efficientnet_b0": (lambda: _tv("efficientnet_b0"), 64, "features", None, "classifier.1", None, None),
    "convnext_tiny": (_convnext, 64, "features", None, "classifier.2", "classifier.0", None),
    "regnet_x_400mf": (lambda: _tv("regnet_x_400mf"), 64, "trunk_output", None, "fc", None, None),
    "shufflenet_v2_x0_5": (lambda: _tv("shufflenet_v2_x0_5"), 64, "conv5", None, "fc", None, None),
    "mnasnet0_5": (lambda: _tv("mnasnet0_5"), 64, "layers", None, "classifier.1", None, None),
    "googlenet": (lambda: _tv("googlenet", aux_logits=False, init_weights=True), 64, "inception5b", None, "fc",
                  None, None),
    "inception_v3": (lambda: _tv("inception_v3", aux_logits=False, init_weights=True), 80, "Mixed_7c", None, "fc",
                     None, None),
    "squeezenet1_1": (lambda: _tv("squeezenet1_1"), 64, "features", None, None, None,
                      r"1×1 convolution and a ReLU before the global average pool"),
    "efficientnet-lite0": (_lite("efficientnet-lite0"), 64, "_bn1", F.relu6, "_fc", None, None),
    "efficientnet-b0-pkg": (_lite("efficientnet-b0"), 64, "_swish", None, "_fc", None, None),
}
TOKEN_MODELS = {"vit": _vit, "swin": _swin}
VALID = [k for k, v in ARCHS.items() if v[4] is not None]
REFUSED = [k for k, v in ARCHS.items() if v[4] is None]


@pytest.fixture(scope="module")
def built():
    """Each model built once for this module (random weights, eval mode, inside Normalized)."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            net = ARCHS[name][0]() if name in ARCHS else TOKEN_MODELS[name]()
            cache[name] = Normalized(net, IMAGENET_MEAN, IMAGENET_STD).eval()
        return cache[name]

    yield get
    cache.clear()


def _input(size, seed=1):
    return torch.rand(N, 3, size, size, generator=torch.Generator().manual_seed(seed)), torch.tensor([3, 7])


def _hooked(model, layer_name, post, x, grad=False):
    """Logits and the feature map post(output of layer) (its last call), by a hook written here."""
    layer = model.model.get_submodule(layer_name)
    seen = {}

    def hook(module, inputs, output):
        if post is None:
            seen["a"] = output
            return None
        seen["a"] = post(output)
        return seen["a"].clone()  # post is idempotent: the model's own activation leaves it unchanged

    h = layer.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            logits = model(x.clone().requires_grad_(grad))
    finally:
        h.remove()
    return logits, seen["a"]


def _check_map(m, shape):
    assert m.shape == shape
    assert torch.isfinite(m).all()
    assert m.min() >= 0 and m.max() <= 1


@pytest.mark.parametrize("name", VALID)
def test_cam_site_reproduces_the_logits(name, built):
    """mean_ij Σ_k w_ck A_k(i,j) + b_c = logit_c on an independently hooked map, and CAM is its min–max."""
    _, size, layer, post, head, norm, _ = ARCHS[name]
    model = built(name)
    net = model.model
    x, t = _input(size)
    cam = CAM(model)
    assert cam.site.layer is net.get_submodule(layer) and cam.site.head is net.get_submodule(head)
    logits, a = _hooked(model, layer, post, x)
    fc = net.get_submodule(head)
    w = fc.weight
    if norm is None:
        raw = torch.einsum("nc,nchw->nhw", w[t], a)
        recon = raw.mean((1, 2)) + fc.bias[t]
    else:  # LayerNorm over channels of the pooled vector p: logit = W(γ(p − μ)/σ + β) + b
        ln = net.get_submodule(norm)
        wg = w * ln.weight
        raw = torch.einsum("nc,nchw->nhw", wg[t], a)
        p = a.mean((2, 3))
        mu, sigma = p.mean(1), (p.var(1, unbiased=False) + ln.eps).sqrt()
        recon = (raw.mean((1, 2)) - mu * wg[t].sum(1)) / sigma + (w @ ln.bias + fc.bias)[t]
    torch.testing.assert_close(recon, logits.gather(1, t[:, None])[:, 0], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        m = cam(x, t)
    _check_map(m, (N, 1, *a.shape[-2:]))
    torch.testing.assert_close(m, minmax(raw[:, None]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(ARCHS))
def test_gradcam_on_the_found_site(name, built):
    _, size, layer, post, *_ = ARCHS[name]
    model = built(name)
    x, t = _input(size)
    g = GradCAM(model)
    assert g.site.layer_name == layer
    m = g(x, t)
    logits, a = _hooked(model, layer, post, x, grad=True)
    (da,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)
    ref = minmax(torch.relu((da.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))).detach()
    _check_map(m, (N, 1, *a.shape[-2:]))
    torch.testing.assert_close(m, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", REFUSED)
def test_cam_refused_without_gap_and_linear_head(name, built):
    pattern = ARCHS[name][6]
    model = built(name)
    with pytest.raises(ValueError, match=pattern):
        CAM(model)
    with pytest.raises(ValueError, match=pattern):  # whatever layer is named, the head is the same MLP
        CAM(model, layer="features")


@pytest.mark.parametrize("name", list(TOKEN_MODELS))
def test_token_models_refuse_cam_and_gradcam(name, built):
    model = built(name)
    for cls in (CAM, GradCAM):
        with pytest.raises(ValueError, match=r"(token-based|token grids).*GRAD.*MASK.*Captum"):
            cls(model)


def test_a_token_layer_named_by_hand_is_refused(built):
    model = built("vit")
    x, t = _input(64)
    with pytest.raises(ValueError, match=r"not a spatial feature map \(N, C, h, w\)"):
        GradCAM(model, layer="encoder")(x, t)


@pytest.mark.parametrize("name", list(ARCHS) + list(TOKEN_MODELS))
def test_grad_on_every_architecture(name, built):
    model = built(name)
    size = ARCHS[name][1] if name in ARCHS else 64
    x, t = _input(size)
    _check_map(Grad(model)(x, t), (N, 1, size, size))


def test_cam_checks_a_given_layer_and_head(built):
    x, t = _input(64)
    with pytest.raises(ValueError, match=r"takes 512 features but layer 'layer3' gives 256 channels"):
        CAM(built("resnet18"), layer="layer3")(x, t)
    with pytest.raises(ValueError, match=r"takes 4096 features but layer 'features.19' gives 512"):
        CAM(built("vgg11"), layer="features.19", head="classifier.6")(x, t)
    # the architecture's own site, by name: same post-processing (DenseNet's ReLU), same norm (ConvNeXt)
    for name, layer, head in [("densenet121", "features", None), ("convnext_tiny", "features", "classifier.2")]:
        model = built(name)
        with torch.no_grad():
            torch.testing.assert_close(CAM(model, layer=layer, head=head)(x, t), CAM(model)(x, t))

    torch.manual_seed(0)
    ok = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    a = ok[:2](x)
    ref = minmax(torch.einsum("nc,nchw->nhw", ok[4].weight[t], a)[:, None])
    torch.testing.assert_close(CAM(ok, layer="1", head="4")(x, t), ref)
    mlp = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4),
                        nn.Tanh(), nn.Linear(4, 10)).eval()
    with pytest.raises(ValueError, match="does not reproduce the model's logits"):
        CAM(mlp, layer="1", head="6")(x, t)


def test_replaced_head_is_checked():
    """A fine-tuned ResNet whose fc became an MLP: CAM refused, Grad-CAM still on layer4."""
    torch.manual_seed(0)
    net = _tv("resnet18")
    net.fc = nn.Sequential(nn.Linear(512, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))
    model = Normalized(net, IMAGENET_MEAN, IMAGENET_STD).eval()
    with pytest.raises(ValueError, match=r"head 'fc' is an MLP \(Linear, ReLU, Dropout, Linear\).*GradCAM"):
        CAM(model)
    x, t = _input(64)
    _check_map(GradCAM(model)(x, t), (N, 1, 2, 2))
    net.fc = nn.Sequential(nn.Dropout(), nn.Linear(512, 10))  # dropout aside, a single linear head
    assert CAM(model).site.head is net.fc[1]


def test_unknown_models_ask_for_the_layer():
    mlp_head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4), nn.ReLU(),
                             nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"automatically; pass layer='name' \(and head='name'\)"):
        GradCAM(mlp_head)
    with pytest.raises(ValueError, match=r"no 2-D convolution.*GRAD.*MASK.*Captum"):
        CAM(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))


class _Hand(nn.Module):
    """A hand-written classifier laid out features → pool → fc; ``amax`` pools by the maximum."""

    def __init__(self, amax=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8, 5)
        self.amax = amax

    def forward(self, x):
        a = self.features(x)
        z = a.amax((2, 3)) if self.amax else self.pool(a).flatten(1)
        return self.fc(self.drop(z))


def test_a_hand_written_model_gets_its_site_from_the_order_of_its_children():
    torch.manual_seed(0)
    net = _Hand().eval()
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([1, 3])
    cam = CAM(net)
    assert cam.site.layer is net.features and cam.site.head is net.fc and cam.site.guessed
    m = cam(x, t)
    torch.testing.assert_close(m, CAM(net, layer="features", head="fc")(x, t))  # the same as naming them
    with torch.no_grad():  # against an independent CAM: Σ_k w_tk A_k, then min-max
        a = net.features(x)
        ref = torch.einsum("nk,nkhw->nhw", net.fc.weight[t], a).unsqueeze(1)
        lo, hi = ref.amin((2, 3), keepdim=True), ref.amax((2, 3), keepdim=True)
    torch.testing.assert_close(m, (ref - lo) / (hi - lo), atol=1e-5, rtol=0)
    _check_map(GradCAM(net)(x, t), (2, 1, 16, 16))
    # a wrong guess (max-pooled, not averaged) is caught on the first call, with the way out
    with pytest.raises(ValueError, match=r"does not reproduce.*guessed layer 'features'.*pass layer= and head="):
        CAM(_Hand(amax=True).eval())(x, t)
