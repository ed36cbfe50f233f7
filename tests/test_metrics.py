"""adv2.metrics against independent numpy computations, plus property tests."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from adv2 import metrics
from adv2.metrics import (
    confidence,
    iou_test,
    lp_distance,
    pointing_game,
    success,
    success_rate,
    topk_mask,
)

FAST = settings(max_examples=30, deadline=None)
KS = (0.1, 0.2, 0.3, 0.4, 0.5)


# --------------------------------------------------------------------------- numpy references


def np_lp(a, b, p):
    d = (a - b).reshape(a.shape[0], -1).astype(np.float64)
    hw = d.shape[1]
    if p == 1:
        return np.abs(d).sum(1) / hw
    return np.sqrt((d**2).sum(1)) / math.sqrt(hw)


def np_topk(m, k):
    """Top-k mask; ties: lower flat index first (stable sort of the negated values)."""
    n = m.shape[0]
    flat = m.reshape(n, -1)
    count = max(1, round(k * flat.shape[1]))
    out = np.zeros_like(flat, dtype=bool)
    for i in range(n):
        out[i, np.argsort(-flat[i], kind="stable")[:count]] = True
    return out.reshape(m.shape)


def np_iou(a, b, ks):
    n = a.shape[0]
    vals = []
    for k in ks:
        ma, mb = np_topk(a, k).reshape(n, -1), np_topk(b, k).reshape(n, -1)
        vals.append((ma & mb).sum(1) / (ma | mb).sum(1))
    return np.mean(vals, axis=0)


def np_bilinear(m, H, W):
    """PyTorch-style bilinear resize (align_corners=False) of one 2-d map, in float64."""
    h, w = m.shape

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, lr = axis(h, H)
    c0, c1, lc = axis(w, W)
    m = m.astype(np.float64)
    top = m[r0][:, c0] * (1 - lc) + m[r0][:, c1] * lc
    bot = m[r1][:, c0] * (1 - lc) + m[r1][:, c1] * lc
    return top * (1 - lr)[:, None] + bot * lr[:, None]


# --------------------------------------------------------------------------- strategies


@st.composite
def map_pairs(draw, min_hw=1):
    """Two random maps (N, 1, h, w) in [0, 1]; sometimes coarsely quantised (many ties)."""
    n = draw(st.integers(1, 3))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(max(1, -(-min_hw // h)), 6))
    seed = draw(st.integers(0, 2**31 - 1))
    levels = draw(st.sampled_from([0, 2, 3]))  # 0: continuous
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, n, 1, h, w, generator=g)
    if levels:
        a, b = (a * levels).floor() / levels, (b * levels).floor() / levels
    return a, b


ks_strategy = st.lists(
    st.floats(0.01, 1.0, allow_nan=False, exclude_min=True), min_size=1, max_size=4
)


# --------------------------------------------------------------------------- against numpy


@pytest.mark.parametrize("p", [1, 2])
def test_lp_matches_numpy(p):
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 4, 1, 5, 7, generator=g)
    got = lp_distance(a, b, p=p)
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), np_lp(a.numpy(), b.numpy(), p), rtol=1e-5, atol=1e-7)
    # (N, h, w) accepted and identical
    assert torch.allclose(lp_distance(a[:, 0], b[:, 0], p=p), got)


@FAST
@given(map_pairs(), ks_strategy)
def test_iou_matches_numpy(pair, ks):
    a, b = pair
    got = iou_test(a, b, ks=ks)
    assert got.shape == (a.shape[0],)
    np.testing.assert_allclose(got.numpy(), np_iou(a.numpy(), b.numpy(), ks), rtol=1e-6)


@FAST
@given(map_pairs(), st.floats(0.01, 1.0, exclude_min=True))
def test_topk_mask_matches_numpy_and_counts(pair, k):
    a, _ = pair
    mask = topk_mask(a, k)
    assert mask.dtype == torch.bool and mask.shape == a.shape
    h, w = a.shape[2:]
    assert (mask.flatten(1).sum(1) == max(1, round(k * h * w))).all()
    np.testing.assert_array_equal(mask.numpy(), np_topk(a.numpy(), k))
    # every selected value >= every unselected value
    for i in range(a.shape[0]):
        sel, rest = a[i][mask[i]], a[i][~mask[i]]
        if rest.numel():
            assert sel.min() >= rest.max()
    # (N, h, w) in, (N, h, w) out
    assert torch.equal(topk_mask(a[:, 0], k), mask[:, 0])


def test_topk_mask_ties_lowest_index_first():
    m = torch.zeros(1, 1, 2, 3)
    mask = topk_mask(m, 0.5)  # 3 of 6 equal pixels: the first three (row-major)
    assert mask.flatten().tolist() == [True, True, True, False, False, False]
    assert topk_mask(m, 0.01).flatten().tolist() == [True] + [False] * 5  # at least one


def test_pointing_game_matches_numpy_upsampled():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(24, 1, 4, 5, generator=g)
    # blocky object masks (one 4x3 block per low-res cell) so tied maxima share a block
    coarse = torch.rand(24, 1, 4, 5, generator=g) > 0.5
    masks = coarse.repeat_interleave(4, dim=2).repeat_interleave(3, dim=3).float()
    got = pointing_game(maps, masks)
    assert got.dtype == torch.bool and got.shape == (24,)
    strict = 0
    for i in range(24):
        up = np_bilinear(maps[i, 0].numpy(), 16, 15)
        # bilinear upsampling creates exact ties (e.g. clamped border rows); float32 vs float64
        # may pick a different one of them, so accept any location within 1e-5 of the max
        near_max = masks[i, 0].numpy()[up >= up.max() - 1e-5] > 0.5
        assert bool(got[i]) in set(near_max.tolist())
        strict += bool(near_max.all() or not near_max.any())
    assert strict >= 20


def test_pointing_game_same_resolution_matches_numpy():
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(10, 1, 6, 6, generator=g)
    masks = torch.rand(10, 6, 6, generator=g) > 0.5  # bool, (N, H, W)
    got = pointing_game(maps, masks)
    flat = maps.numpy().reshape(10, -1)
    ref = masks.numpy().reshape(10, -1)[np.arange(10), flat.argmax(1)]
    np.testing.assert_array_equal(got.numpy(), ref)


# --------------------------------------------------------------------------- properties


@FAST
@given(map_pairs(), st.sampled_from([1, 2]))
def test_lp_symmetry_identity_range(pair, p):
    a, b = pair
    d = lp_distance(a, b, p=p)
    assert torch.equal(d, lp_distance(b, a, p=p))
    assert torch.equal(lp_distance(a, a, p=p), torch.zeros(a.shape[0]))
    assert ((d >= 0) & (d <= 1 + 1e-6)).all()


@FAST
@given(map_pairs(), ks_strategy)
def test_iou_symmetry_identity_range(pair, ks):
    a, b = pair
    v = iou_test(a, b, ks=ks)
    assert torch.equal(v, iou_test(b, a, ks=ks))
    assert torch.equal(iou_test(a, a, ks=ks), torch.ones(a.shape[0]))
    assert ((v >= 0) & (v <= 1)).all()


@FAST
@given(
    st.integers(1, 3),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(0, 2**31 - 1),
)
def test_iou_complement_is_zero(n, h, half_w, seed):
    """Strictly ordered map vs. its complement: top half and bottom half are disjoint.

    h*w is kept even (w = 2*half_w) so that round(0.5*h*w) is exactly half the pixels.
    """
    w = 2 * half_w
    g = torch.Generator().manual_seed(seed)
    a = torch.stack([torch.randperm(h * w, generator=g) for _ in range(n)]).float()
    a = (a / (h * w - 1)).view(n, 1, h, w)
    assert torch.equal(iou_test(a, 1 - a, ks=(0.5,)), torch.zeros(n))


def test_pointing_game_peak_inside_vs_outside():
    maps = torch.zeros(2, 1, 8, 8)
    maps[0, 0, 2, 3] = 1.0  # peak inside the object
    maps[1, 0, 6, 6] = 1.0  # peak outside
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 4:16, 8:20] = 1.0  # covers low-res cells rows 1..3, cols 2..4
    assert pointing_game(maps, masks).tolist() == [True, False]
    # same answer at equal resolution (no upsampling)
    small = masks[:, :, ::4, ::4]
    assert pointing_game(maps, small).tolist() == [True, False]


# --------------------------------------------------------------------------- classifier metrics


@pytest.fixture()
def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()


def _np_logits(model, x):
    lin = model[1]
    w, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
    return x.reshape(x.shape[0], -1).double().numpy() @ w.T + b


def test_success_and_confidence_match_numpy(tiny_model):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 4, 4, generator=g)
    logits = _np_logits(tiny_model, x)
    pred = logits.argmax(1)
    target = torch.tensor(np.where(np.arange(8) % 2 == 0, pred, (pred + 1) % 5))
    s = success(tiny_model, x, target)
    assert s.dtype == torch.bool and s.shape == (8,)
    assert s.tolist() == [i % 2 == 0 for i in range(8)]
    assert success_rate(s) == pytest.approx(0.5)
    assert torch.equal(success(tiny_model, x, target, batch_size=3), s)

    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    c = confidence(tiny_model, x, target)
    assert c.shape == (8,) and c.dtype.is_floating_point
    np.testing.assert_allclose(c.numpy(), p[np.arange(8), target.numpy()], rtol=1e-5)
    assert torch.allclose(confidence(tiny_model, x, target, batch_size=3), c)
    assert not c.requires_grad  # computed under no_grad


def test_success_rate_values():
    assert success_rate(torch.zeros(0, dtype=torch.bool)) == 0.0
    assert success_rate(torch.tensor([True, False, True, True])) == 0.75
    assert isinstance(success_rate(torch.tensor([True])), float)


# --------------------------------------------------------------------------- bad inputs


def _m(*shape):
    return torch.rand(*shape)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lp_distance(_m(2, 1, 3, 3), _m(2, 1, 3, 3), p=3), "p must be 1 or 2"),
        (lambda: lp_distance(_m(2, 1, 3, 3), _m(2, 1, 3, 4)), r"\(2, 1, 3, 3\).*\(2, 1, 3, 4\)"),
        (lambda: iou_test(_m(2, 1, 3, 3), _m(3, 1, 3, 3)), r"\(2, 1, 3, 3\).*\(3, 1, 3, 3\)"),
        (lambda: lp_distance(_m(3, 3), _m(3, 3)), "rank 2"),
        (lambda: iou_test(_m(1, 2, 3, 3, 3), _m(1, 2, 3, 3, 3)), "rank 5"),
        (lambda: lp_distance(_m(2, 3, 3, 3), _m(2, 3, 3, 3)), r"\(N, 1, h, w\)"),
        (lambda: lp_distance(torch.full((1, 1, 2, 2), float("nan")), _m(1, 1, 2, 2)), "NaN"),
        (lambda: iou_test(_m(1, 1, 2, 2), torch.full((1, 1, 2, 2), float("inf"))), "Inf"),
        (lambda: lp_distance(torch.ones(1, 1, 2, 2, dtype=torch.long), _m(1, 1, 2, 2)), "float"),
        (lambda: lp_distance(np.zeros((1, 1, 2, 2)), _m(1, 1, 2, 2)), "torch.Tensor"),
        (lambda: iou_test(_m(1, 1, 3, 3), _m(1, 1, 3, 3), ks=(0.0,)), r"\(0, 1\]"),
        (lambda: iou_test(_m(1, 1, 3, 3), _m(1, 1, 3, 3), ks=(0.5, 1.5)), r"\(0, 1\]"),
        (lambda: iou_test(_m(1, 1, 3, 3), _m(1, 1, 3, 3), ks=()), "at least one"),
        (lambda: topk_mask(_m(1, 1, 3, 3), 0), r"\(0, 1\]"),
        (lambda: topk_mask(_m(3, 3), 0.5), "rank 2"),
        (lambda: pointing_game(_m(2, 1, 4, 4), torch.ones(3, 1, 8, 8)), "batch size"),
        (lambda: pointing_game(_m(2, 1, 4, 4), torch.ones(8, 8)), "rank 2"),
        (lambda: pointing_game(torch.full((1, 1, 2, 2), float("nan")), torch.ones(1, 4, 4)), "NaN"),
        (lambda: success_rate(torch.tensor([1, 0])), "bool"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_classifier_metrics_bad_inputs(tiny_model):
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        success(tiny_model, x * 3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        confidence(tiny_model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="out of range"):
        confidence(tiny_model, x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="rank"):
        success(tiny_model, x[0], torch.tensor([0]))
    with pytest.raises(ValueError, match="batch_size"):
        success(tiny_model, x, torch.tensor([0, 1]), batch_size=0)


# --------------------------------------------------------------------------- the robustness literature's measures


def _random_maps(seed, shape=(6, 1, 11, 9)):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    b = (0.6 * a + 0.6 * torch.rand(shape, generator=g)).clamp(0, 1)
    b[0] = torch.round(b[0] * 4) / 4  # ties for the rank correlation
    return a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_similarity_measures_match_scipy_and_scikit_image(seed):
    scipy_stats = pytest.importorskip("scipy.stats")
    ndimage = pytest.importorskip("scipy.ndimage")
    skm = pytest.importorskip("skimage.metrics")
    a, b = _random_maps(seed)
    got = {f: getattr(metrics, f)(a, b) for f in ("pearson", "spearman", "ssim", "center_of_mass_shift", "cosine")}
    for j in range(a.shape[0]):
        A, B = a[j, 0].double().numpy(), b[j, 0].double().numpy()
        assert got["pearson"][j] == pytest.approx(scipy_stats.pearsonr(A.ravel(), B.ravel())[0], abs=1e-5)
        assert got["spearman"][j] == pytest.approx(scipy_stats.spearmanr(A.ravel(), B.ravel())[0], abs=1e-5)
        assert got["ssim"][j] == pytest.approx(skm.structural_similarity(A, B, data_range=1.0), abs=1e-5)
        com = np.subtract(ndimage.center_of_mass(A), ndimage.center_of_mass(B))
        assert got["center_of_mass_shift"][j] == pytest.approx(np.linalg.norm(com), abs=1e-5)
        cos = float(A.ravel() @ B.ravel() / np.linalg.norm(A) / np.linalg.norm(B))
        assert got["cosine"][j] == pytest.approx(cos, abs=1e-5)


def test_topk_intersection_counts_the_shared_top_pixels():
    a = torch.arange(20.0).view(1, 1, 4, 5)
    b = a.clone()
    assert metrics.topk_intersection(a, b, k=0.2).item() == 1.0
    b.view(-1)[[19, 18]] = -1.0  # two of a's top four leave b's top four
    assert metrics.topk_intersection(a, b, k=0.2).item() == 0.5
    assert metrics.topk_intersection(a, -a, k=0.2).item() == 0.0


def test_similarity_measures_edge_cases_and_bad_input():
    z, r = torch.zeros(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    assert torch.equal(metrics.pearson(z, r), torch.zeros(2)) and torch.equal(metrics.cosine(z, r), torch.zeros(2))
    assert torch.allclose(metrics.ssim(r, r), torch.ones(2)) and torch.allclose(metrics.pearson(r, r), torch.ones(2))
    assert torch.equal(metrics.center_of_mass_shift(r, r), torch.zeros(2))
    assert metrics.ssim(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)).shape == (1,)  # smaller than the window
    for f in (metrics.pearson, metrics.spearman, metrics.ssim, metrics.topk_intersection,
              metrics.center_of_mass_shift, metrics.cosine):
        with pytest.raises(ValueError):
            f(r, torch.rand(2, 1, 8, 9))
        with pytest.raises(ValueError):
            f(r, r * float("nan"))
    with pytest.raises(ValueError, match="win_size"):
        metrics.ssim(r, r, win_size=4)


# --------------------------------------------------------------------------- a random interpreter, judged


class _Noisy:
    """A stand-in random interpreter: the map of ``x`` is its channel mean plus noise drawn from
    ``(seed, image)``, so every seed gives another map of the same image."""

    def __init__(self, seed=0, calls=None):
        self.seed, self.calls = seed, calls if calls is not None else []

    def with_seed(self, seed):
        return _Noisy(seed, self.calls)

    def __call__(self, x, target):
        self.calls.append(self.seed)
        noise = torch.stack([torch.rand(1, *x.shape[-2:], generator=torch.Generator().manual_seed(
            1000 * self.seed + int(1e4 * float(xi.sum())) % 997)) for xi in x])
        return (x.mean(1, keepdim=True) + 0.1 * noise).clamp(0, 1)


def test_defender_distances_and_judged_ratio_match_a_direct_computation():
    g = _Noisy(seed=0)
    x = torch.rand(3, 3, 8, 8)
    xa, xb = (x + 0.05).clamp(0, 1), (x + 0.3).clamp(0, 1)
    t = torch.tensor([1, 0, 2])
    examples = {"base": (xb, t), "adv": (xa, t)}
    l1, floor = metrics.defender_distances(g, x, t, examples, seeds=(0, 100, 7))
    maps = {s: (g.with_seed(s)(x, t), g.with_seed(s)(xa, t), g.with_seed(s)(xb, t)) for s in (0, 100, 7)}
    want_a = sum(np_lp(maps[s][1].numpy(), maps[s][0].numpy(), 1) for s in maps) / 3
    want_b = sum(np_lp(maps[s][2].numpy(), maps[s][0].numpy(), 1) for s in maps) / 3
    want_f = sum(np_lp(maps[s][0].numpy(), maps[r][0].numpy(), 1) for s, r in ((0, 100), (0, 7), (100, 7))) / 3
    np.testing.assert_allclose(l1["adv"].numpy(), want_a, rtol=1e-6)
    np.testing.assert_allclose(l1["base"].numpy(), want_b, rtol=1e-6)
    np.testing.assert_allclose(floor.numpy(), want_f, rtol=1e-6)
    assert (floor > 0).all()  # the stand-in is random: two seeds disagree
    ok_a, ok_b = torch.tensor([True, True, False]), torch.tensor([True, False, True])
    r = metrics.judged_ratio(l1["adv"], l1["base"], floor, ok_a, ok_b)  # only example 0 counts
    assert r == pytest.approx((want_a[0] - want_f[0]) / (want_b[0] - want_f[0]), rel=1e-5)
    # maps already made with the interpreter's own seed are reused, not solved again
    calls = []
    g2 = _Noisy(seed=0, calls=calls)
    known = {"benign": g2(x, t), "adv": g2(xa, t), "base": g2(xb, t)}
    calls.clear()
    l1b, floor_b = metrics.defender_distances(g2, x, t, examples, seeds=(0, 100), known=known)
    assert calls == [100, 100, 100]
    torch.testing.assert_close(floor_b, torch.tensor([np_lp(maps[0][0].numpy(), maps[100][0].numpy(), 1)[i]
                                                      for i in range(3)], dtype=torch.float32))


def test_judged_ratio_edges():
    f = torch.tensor([0.1, 0.1])
    assert metrics.judged_ratio(torch.tensor([0.1, 0.1]), torch.tensor([0.3, 0.3]), f) == pytest.approx(0.0)
    assert metrics.judged_ratio(torch.tensor([0.3, 0.3]), torch.tensor([0.3, 0.3]), f) == pytest.approx(1.0)
    assert math.isnan(metrics.judged_ratio(torch.tensor([0.2, 0.2]), torch.tensor([0.05, 0.05]), f))  # base at floor
    assert math.isnan(metrics.judged_ratio(f, f, f, torch.tensor([False, False])))
    with pytest.raises(ValueError, match="at least two distinct"):
        metrics.defender_distances(_Noisy(), torch.rand(1, 3, 4, 4), torch.tensor([0]), {}, seeds=(5, 5))
