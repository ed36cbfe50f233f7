"""The second-order surrogate: every piecewise-linear activation users meet, exact forward values,
non-zero second derivatives, the written-out backward nodes against autograd, and the warning
when a map has no input derivative left for ADV² to use."""

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import adv2
from adv2.attacks import ADV2
from adv2.interpreters import smooth_relu
from adv2.interpreters.base import FlatMapWarning
from adv2.interpreters.smooth_relu import KINDS, _EvalBatchNormFn, _SmoothGradFn

ACTIVATIONS = {
    "ReLU": nn.ReLU(),
    "ReLU(inplace)": nn.ReLU(inplace=True),
    "ReLU6": nn.ReLU6(),
    "ReLU6(inplace)": nn.ReLU6(inplace=True),
    "Hardtanh(-2, 3)": nn.Hardtanh(-2.0, 3.0),
    "LeakyReLU(0.1)": nn.LeakyReLU(0.1),
    "PReLU(3)": nn.PReLU(3, 0.2),
    "PReLU()": nn.PReLU(),
    "Hardswish": nn.Hardswish(),
    "Hardsigmoid": nn.Hardsigmoid(),
    "F.relu6": lambda z: F.relu6(z),
    "F.hardtanh(min_val=-1)": lambda z: F.hardtanh(z, min_val=-1.0, max_val=1.0),
    "F.leaky_relu_": lambda z: F.leaky_relu_(z, 0.2),
    "F.prelu": lambda z: F.prelu(z, torch.tensor([0.25])),
    "F.hardswish": lambda z: F.hardswish(z),
    "F.hardsigmoid": lambda z: F.hardsigmoid(z),
    "torch.relu": torch.relu,
}
SMOOTH = {"SiLU": nn.SiLU(), "GELU": nn.GELU()}


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(4, 3, 5, 5, generator=g) * 4).requires_grad_(True)


@pytest.mark.parametrize("name", list(ACTIVATIONS) + list(SMOOTH))
@pytest.mark.parametrize("kind", KINDS)
def test_exact_forward_and_nonzero_second_derivative(name, kind):
    act = {**ACTIVATIONS, **SMOOTH}[name]
    z = _inputs()
    ref = act(z.detach().clone())
    with smooth_relu(kind=kind):
        out = act(z.clone())  # clone: in-place activations must not touch the leaf
        (g,) = torch.autograd.grad(out.sum(), z, create_graph=True)
        (g2,) = torch.autograd.grad((g * torch.linspace(-1, 1, g.numel()).reshape(g.shape)).sum(), z)
    assert torch.equal(out, ref)
    assert torch.isfinite(g2).all() and g2.abs().sum() > 0
    if name in SMOOTH:  # untouched: exactly autograd's own gradient
        (g_ex,) = torch.autograd.grad(act(z).sum(), z)
        torch.testing.assert_close(g, g_ex)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_surrogate_gradient_matches_the_exact_one_away_from_kinks(name):
    act = ACTIVATIONS[name]
    z = _inputs(1)
    kinks = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 3.0, 6.0])
    far = (z.detach()[..., None] - kinks).abs().min(-1).values > 0.5
    with smooth_relu():
        (g,) = torch.autograd.grad(act(z.clone()).sum(), z)
    (g_ex,) = torch.autograd.grad(act(z.clone()).sum(), z)
    assert far.sum() > 50
    torch.testing.assert_close(g[far], g_ex[far], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("act,p", [("relu", ()), ("hardtanh", (0.0, 6.0)), ("hardtanh", (-1.0, 2.0)),
                                   ("leaky_relu", (0.1,)), ("hardsigmoid", ()), ("hardswish", ())])
@pytest.mark.parametrize("kind", KINDS)
def test_written_out_double_backward_matches_finite_differences(act, p, kind):
    g = torch.Generator().manual_seed(2)
    z = torch.rand(40, generator=g, dtype=torch.float64) * 16 - 8
    z = z[((z.abs() - 3).abs() > 0.05) & (z.abs() > 0.05)].requires_grad_(True)  # off the kinks
    up = torch.randn(z.shape, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, v: _SmoothGradFn.apply(u, v, None, act, p, kind, 0.1, 2.0), (up, z))


def test_eval_batch_norm_backward_and_grouped_conv_backward_against_autograd():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6).double().eval()
    bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.data.normal_(), bn.bias.data.normal_()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: _EvalBatchNormFn.apply(v, bn.running_mean, bn.running_var,
                                                                     bn.weight.detach(), bn.bias.detach(), 1e-5), (x,))
    for stride, groups in ((1, 6), (2, 6), (2, 3)):
        conv = nn.Conv2d(6, 6, 3, stride, 1, groups=groups).double()
        with smooth_relu():
            out = conv(bn(x))
        ref = conv(bn(x))
        assert torch.equal(out, ref)
        up = torch.randn_like(ref, requires_grad=True)
        (a,) = torch.autograd.grad(out, x, up, create_graph=True)
        (b,) = torch.autograd.grad(ref, x, up, create_graph=True)
        torch.testing.assert_close(a, b)
        v = torch.randn_like(x)
        torch.testing.assert_close(torch.autograd.grad((a * v).sum(), up)[0], torch.autograd.grad((b * v).sum(), up)[0])


def _mobilenet(clamp: bool = False):
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    if clamp:  # ReLU6 written as a clamp: a piecewise-linear op the surrogate does not know
        class Clamp6(nn.Module):
            def forward(self, z):
                return z.clamp(0, 6)

        for m in list(net.modules()):
            for cname, child in list(m.named_children()):
                if isinstance(child, nn.ReLU6):
                    setattr(m, cname, Clamp6())
    return adv2.models.Normalized(net, adv2.models.IMAGENET_MEAN, adv2.models.IMAGENET_STD).eval()


def test_grad_map_of_a_relu6_network_has_an_input_derivative_and_adv2_does_not_warn():
    model = _mobilenet()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    t = torch.tensor([1, 2])
    _, m = adv2.interpreters.Grad(model).logits_and_map(x, t, create_graph=True, smooth=True)
    (g,) = torch.autograd.grad(m.square().sum(), x)
    assert g.abs().sum() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatMapWarning)
        ADV2(model, adv2.interpreters.Grad(model), warmup=0, steps=1)(x.detach(), t)


def test_a_map_without_input_derivative_warns_instead_of_silently_running_pgd():
    model = _mobilenet(clamp=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(FlatMapWarning, match="zero derivative.*the attack is PGD"):
        ADV2(model, adv2.interpreters.Grad(model), warmup=0, steps=1)(x, torch.tensor([1, 2]))
