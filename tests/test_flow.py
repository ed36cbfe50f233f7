"""The flow-field perturbation's building blocks (StAdv): exact identity, exact integer moves,
zero loss for a constant flow, gradients, batch independence, clear errors."""

import pytest
import torch

from adv2.attacks.flow import flow_loss, warp


@pytest.fixture
def x():
    return torch.rand(3, 3, 8, 10, generator=torch.Generator().manual_seed(0))


def test_zero_flow_is_exactly_the_identity(x):
    assert torch.equal(warp(x, torch.zeros(3, 2, 8, 10)), x)


def test_an_integer_flow_moves_pixels_exactly(x):
    flow = torch.zeros(3, 2, 8, 10)
    flow[:, 0] = 2.0  # every output pixel reads two columns to the right
    flow[:, 1] = -1.0  # and one row up
    out = warp(x, flow)
    assert torch.equal(out[:, :, 1:, :-2], x[:, :, :-1, 2:])
    # beyond the border the edge pixels repeat
    assert torch.equal(out[:, :, 0, :-2], x[:, :, 0, 2:])
    assert torch.equal(out[:, :, 1:, -1], x[:, :, :-1, -1])


def test_a_half_pixel_flow_averages_neighbours(x):
    flow = torch.zeros(3, 2, 8, 10)
    flow[:, 0] = 0.5
    out = warp(x, flow)
    torch.testing.assert_close(out[..., :-1], (x[..., :-1] + x[..., 1:]) / 2)


def test_flow_loss_against_hand_computed_values():
    flow = torch.zeros(1, 2, 2, 2)
    flow[0, 0, 0, 1] = 3.0  # Δu of pixel (0, 1); (0, 0) is its left neighbour, (1, 1) below it
    flow[0, 1, 0, 1] = 4.0  # Δv: the difference to either neighbour has length 5
    # two 4-neighbour pairs involve pixel (0, 1), each counted in both directions
    assert flow_loss(flow, eps=0.0).item() == pytest.approx(4 * 5.0)
    const = torch.full((2, 2, 5, 6), 0.7)
    assert flow_loss(const).abs().max() < 1e-12


def test_gradients_reach_the_flow(x):
    flow = (0.3 * torch.randn(3, 2, 8, 10, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    (g,) = torch.autograd.grad(warp(x, flow).sum() + flow_loss(flow).sum(), flow)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    zero = torch.zeros(3, 2, 8, 10, requires_grad=True)
    (g0,) = torch.autograd.grad(flow_loss(zero).sum() + warp(x, zero).sum(), zero)
    assert torch.isfinite(g0).all() and g0.abs().sum() > 0  # the image term moves a zero flow


def test_batch_independence(x):
    flow = 0.7 * torch.randn(3, 2, 8, 10, generator=torch.Generator().manual_seed(2))
    full = warp(x, flow)
    assert torch.equal(full[1:2], warp(x[1:2], flow[1:2]))
    assert torch.equal(flow_loss(flow)[2:], flow_loss(flow[2:]))


@pytest.mark.parametrize("bad", [torch.zeros(3, 2, 8, 9), torch.zeros(3, 3, 8, 10), torch.zeros(2, 2, 8, 10),
                                 torch.zeros(3, 2, 8, 10, dtype=torch.long), torch.full((3, 2, 8, 10), float("nan")),
                                 "flow"])
def test_a_bad_flow_is_a_clear_error(x, bad):
    with pytest.raises(ValueError, match="flow"):
        warp(x, bad)


def test_flow_loss_rejects_a_bad_shape():
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        flow_loss(torch.zeros(2, 3, 4, 4))


def test_stadv_reaches_the_target_by_moving_pixels(resnet_model, shapes_test):
    from adv2.attacks import StAdv

    xs, y, _ = shapes_test
    xs, ct = xs[:4], (y[:4] + 1) % 10
    res = StAdv(resnet_model, steps=60)(xs, ct)
    assert res.success.float().mean() >= 0.75 and res.flow.shape == (4, 2, 64, 64)
    assert torch.equal(res.x_adv, warp(xs, res.flow))  # the image is the warp of the reported flow
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    # batch independence: the same examples in another order give the same flows (a batch of
    # another size runs other convolution kernels, whose rounding Adam's normalised first steps
    # amplify on near-zero gradients, so the comparison keeps the batch size)
    perm = torch.tensor([2, 0, 3, 1])
    other = StAdv(resnet_model, steps=60)(xs[perm], ct[perm])
    torch.testing.assert_close(other.flow, res.flow[perm], atol=1e-5, rtol=0)


def test_stadv_at_a_given_flow_size(resnet_model, shapes_test):
    """``flow_mean=f``: the successful iterate whose mean flow is closest to ``f``;
    :func:`stadv_at_flow` takes the closest over several τ, and meets sizes several times
    StAdv's own within 10% on the mean."""
    from adv2.attacks import StAdv
    from adv2.attacks.stadv import mean_flow, stadv_at_flow

    xs, y, _ = shapes_test
    xs, ct = xs[:4], (y[:4] + 1) % 10
    own = StAdv(resnet_model, steps=100)(xs, ct)
    ok = own.success
    want = 3 * mean_flow(own.flow)
    single = StAdv(resnet_model, tau=1e-5, steps=100)(xs, ct, flow_mean=want)
    assert torch.equal(single.x_adv, warp(xs, single.flow)) and single.success[ok].all()
    matched = stadv_at_flow(resnet_model, xs, ct, want, steps=100)
    got = mean_flow(matched.flow)
    assert matched.success[ok].all() and ok.sum() >= 3
    assert abs(got[ok].mean() - want[ok].mean()) <= 0.1 * want[ok].mean(), (got, want)
    # no single τ is closer on any example than the combination
    assert ((got - want).abs() <= (mean_flow(single.flow) - want).abs() + 1e-6)[ok].all()
    with pytest.raises(ValueError, match="flow_mean must be"):
        StAdv(resnet_model, steps=1)(xs, ct, flow_mean=torch.ones(3))
    with pytest.raises(ValueError, match="flow_mean must be"):
        StAdv(resnet_model, steps=1)(xs, ct, flow_mean=-torch.ones(4))


@pytest.mark.parametrize("kwargs", [dict(tau=-1.0), dict(tau=float("nan")), dict(steps=-1), dict(lr=0),
                                    dict(betas=(0.9, 1.0))])
def test_stadv_bad_settings_are_clear_errors(resnet_model, kwargs):
    from adv2.attacks import StAdv

    with pytest.raises(ValueError):
        StAdv(resnet_model, **kwargs)
