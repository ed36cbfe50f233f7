"""MASK: its terms against hand-computed values, its invariants, warm starts, and the bilevel
ADV² attack against it (line search, keep-best on quantised images)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from adv2.attacks import ADV2
from adv2.attacks.adv2 import AttackContext
from adv2.attacks.objectives import Fragility
from adv2.attacks.pgd import quantize
from adv2.attacks.steps import SearchStep
from adv2.interpreters import Mask, get
from adv2.interpreters.mask import MaskTracker, blur, jitter_offsets, l1_term, shift, tv_term

EPS = 0.031


@pytest.fixture(scope="module")
def batch(shapes_test, resnet_model):
    x, y, masks = shapes_test
    return x[:4], y[:4], masks[:4], (y[:4] + torch.tensor([1, 3, 5, 7])) % 10


def test_l1_and_tv_against_hand_computed_values_on_a_non_square_mask():
    s = torch.tensor([[0.0, 1.0, 0.5], [0.2, 0.2, 1.0]])[None, None]  # (1, 1, 2, 3)
    assert l1_term(s).item() == pytest.approx((0 + 1 + 0.5 + 0.2 + 0.2 + 1) / 6)
    # locations (0,0) and (0,1): dx = right − here, dy = below − here, at the same location
    t00 = (1.0**2 + 0.2**2) ** 1.5
    t01 = ((0.5 - 1.0) ** 2 + (0.2 - 1.0) ** 2) ** 1.5
    assert tv_term(s, beta=3).item() == pytest.approx((t00 + t01) / 2, rel=1e-5)
    assert tv_term(s, beta=2).item() == pytest.approx((1.04 + 0.89) / 2, rel=1e-5)
    # a (3, 2) mask varying only down the rows: only vertical differences count
    v = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]])[None, None]
    assert tv_term(v, beta=3).item() == pytest.approx(0.5**3, rel=1e-5)
    assert tv_term(torch.full((2, 1, 4, 7), 0.3)).abs().max() < 1e-12


def test_tv_second_derivative_is_finite_on_flat_masks():
    s = torch.full((1, 1, 4, 5), 0.5, requires_grad=True)
    (g,) = torch.autograd.grad(tv_term(s).sum(), s, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), s)
    assert torch.isfinite(h).all()


def test_blur_is_torchvisions_gaussian_blur():
    """The separable blur equals torchvision's 2-D Gaussian blur (same ±3σ kernel, shrunk to fit,
    reflect padding), forward and gradient, to rounding; a constant image stays constant."""
    from torchvision.transforms.v2.functional import gaussian_blur

    gen = torch.Generator().manual_seed(0)
    for shape, sigma in (((2, 3, 64, 64), 10.0), ((1, 1, 20, 24), 2.0), ((2, 3, 9, 9), 1.5)):
        x = torch.rand(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        k = min(2 * int(3 * sigma + 0.5) + 1, 2 * ((min(shape[-2:]) - 1) // 2) + 1)
        ours, ref = blur(x, sigma), gaussian_blur(x, [k, k], [sigma, sigma])
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-10)
        w = torch.rand(shape, generator=gen, dtype=torch.float64)
        (g1,) = torch.autograd.grad((ours * w).sum(), x)
        (g2,) = torch.autograd.grad((ref * w).sum(), x)
        torch.testing.assert_close(g1, g2, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(blur(torch.full((1, 3, 16, 16), 0.3), 10.0), torch.full((1, 3, 16, 16), 0.3))


def test_shift_moves_each_image_by_its_offset():
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float).reshape(2, 1, 5, 6)
    out = shift(x, torch.tensor([[1, 0], [0, -1]]), radius=1)
    torch.testing.assert_close(out[0, 0, :4], x[0, 0, 1:])  # content moves up by one row
    torch.testing.assert_close(out[1, 0, :, 1:], x[1, 0, :, :-1])  # and right by one column
    assert torch.equal(shift(x, torch.zeros(2, 2, dtype=torch.long), 1), x)


@pytest.mark.parametrize("radius", [1, 2])
def test_shift_matches_a_crop_of_the_reflected_image_with_its_gradient(radius):
    torch.manual_seed(0)
    x = torch.rand(5, 3, 9, 7, requires_grad=True)
    off = torch.randint(-radius, radius + 1, (5, 2))
    xp = F.pad(x, (radius,) * 4, mode="reflect")  # an independent reference: one crop per image
    ref = torch.cat([xp[i:i + 1, :, radius + dy:radius + dy + 9, radius + dx:radius + dx + 7]
                     for i, (dy, dx) in enumerate(off.tolist())])
    out = shift(x, off, radius)
    assert torch.equal(out, ref)
    w = torch.randn_like(ref)
    (g_out,) = torch.autograd.grad((out * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(g_out, g_ref)


def test_jitter_is_a_function_of_seed_and_step():
    a = jitter_offsets([3, 3, 4], 7, 2)
    assert torch.equal(a, jitter_offsets([3, 3, 4], 7, 2))
    assert torch.equal(a[0], a[1]) and a.abs().max() <= 2
    steps = torch.stack([jitter_offsets([3], k, 2)[0] for k in range(30)])
    assert len({tuple(r) for r in steps.tolist()}) > 5


@pytest.mark.parametrize("game", ["delete", "preserve"])
def test_maps_shape_range_and_pointing(resnet_model, shapes_test, game):
    from adv2.metrics import pointing_game

    x, y, masks = shapes_test
    g = Mask(resnet_model, game=game, steps=150, **({"l1": 1.0, "tv": 0.2, "init": 0.5} if game == "preserve" else {}))
    m = g(x[:8], y[:8])
    assert m.shape == (8, 1, 16, 16) and m.min() >= 0 and m.max() <= 1
    assert (m.flatten(1).amax(1) > 0.1).all()
    assert pointing_game(m, masks[:8]).float().mean() >= 0.6
    assert Mask(resnet_model, size=8, steps=2)(x[:2], y[:2]).shape == (2, 1, 8, 8)
    assert isinstance(get("mask", resnet_model), Mask)


def test_batch_independence_and_seeds(resnet_model, batch):
    """No example's map depends on another's: checked in float64, because in float32 the
    convolutions' rounding differs with the batch size and Adam's normalised steps can amplify it
    to a few hundredths at a pixel over tens of steps (as for any Adam-optimised map)."""
    x, y, _, _ = batch
    x, net = x.double(), copy.deepcopy(resnet_model).double()
    g = Mask(net, steps=40)
    full = g(x, y)
    alone = g(x[2:3], y[2:3])
    torch.testing.assert_close(full[2:3], alone, atol=1e-9, rtol=0)
    # per-example seeds: example 2 with seed 9 in a batch = alone with seed 9
    seeds = torch.tensor([0, 0, 9, 0])
    mixed, _ = g.solve(x, y, seed=seeds)
    alone9, _ = g.solve(x[2:3], y[2:3], seed=9)
    torch.testing.assert_close(mixed[2:3], alone9, atol=1e-9, rtol=0)
    torch.testing.assert_close(mixed[:2], full[:2], atol=1e-9, rtol=0)
    assert not torch.allclose(alone9, alone, atol=1e-3)  # the jitter seed matters


def test_warm_start_continues_where_it_stopped(resnet_model, batch):
    x, y, _, _ = batch
    g = Mask(resnet_model, steps=30)
    once, s_once = g.solve(x, y, steps=30)
    half, state = g.solve(x, y, steps=15)
    assert state.step == 15
    twice, s_twice = g.solve(x, y, state=state, steps=15)
    assert s_twice.step == 30
    torch.testing.assert_close(twice, once, atol=1e-6, rtol=0)
    torch.testing.assert_close(s_twice.exp_avg_sq, s_once.exp_avg_sq, atol=1e-9, rtol=1e-5)
    assert not torch.allclose(half, once, atol=1e-3)


def test_unrolled_steps_give_finite_nonzero_gradients(resnet_model, batch):
    x, y, _, _ = batch
    g = Mask(resnet_model, steps=20)
    _, state = g.solve(x, y)
    xr = x.clone().requires_grad_(True)
    sal, _ = g.solve(xr, y, state=state, steps=3, create_graph=True, smooth=True)
    target = torch.rand(sal.shape, generator=torch.Generator().manual_seed(0))
    (gx,) = torch.autograd.grad((sal - target).pow(2).sum(), xr)
    assert torch.isfinite(gx).all()
    assert (gx.abs().flatten(1).amax(1) > 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "mask steps must be a positive integer"),
        ({"lr": 0}, "mask lr must be a positive number"),
        ({"lr": -0.1}, "mask lr must be a positive number"),
        ({"size": 0}, "mask size must be a positive integer"),
        ({"l1": -1}, "mask l1 weight"),
        ({"blur_sigma": 0}, "mask blur_sigma"),
        ({"jitter": -1}, "mask jitter"),
        ({"init": 2}, r"mask init must be in \[0, 1\]"),
        ({"game": "hide"}, "unknown mask game"),
        ({"lr_schedule": "step"}, "unknown mask lr_schedule 'step'"),
    ],
)
def test_bad_mask_parameters(resnet_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Mask(resnet_model, **kwargs)


def test_lr_schedule_and_its_use_by_adam(resnet_model, batch):
    """Cosine: lr at step 0, lr/10 at the last step and beyond; Adam's step from zero moments at
    step k + 1 moves a pixel by lr_k · (0.1 / (1 − 0.9^(k+1))) / sqrt(0.001 / (1 − 0.999^(k+1)))."""
    g = Mask(resnet_model, steps=10, lr=0.1, lr_schedule="cosine", init=0.5)
    assert g.lr_at(0) == pytest.approx(0.1) and g.lr_at(5) == pytest.approx(0.055)
    assert g.lr_at(10) == pytest.approx(0.01) and g.lr_at(50) == pytest.approx(0.01)
    assert Mask(resnet_model, lr=0.1).lr_at(7) == 0.1
    x, y, _, _ = batch
    state = g.start(x[:2])
    state.step = 10  # past the schedule: lr / 10
    sal, _ = g.solve(x[:2], y[:2], state=state, steps=1)
    moved = (sal - 0.5).abs()
    factor = (0.1 / (1 - 0.9**11)) / (0.001 / (1 - 0.999**11)) ** 0.5
    assert float(moved.max()) == pytest.approx(0.01 * factor, rel=1e-3)


def test_jitter_draws_average_the_objective_over_the_shifts(resnet_model, batch):
    """With ``jitter_draws=2`` Adam's first step follows the gradient of the mean of the objective
    under the step's two shifts (draw 0 is the single-draw shift); 1 draw is the plain method."""
    from adv2.interpreters.mask import jitter_offsets

    x, y, _, _ = batch
    x, y = x[:2], y[:2]
    g = Mask(resnet_model, steps=1, lr=0.05, init=0.5, jitter=2, jitter_draws=2)
    sal, _ = g.solve(x, y, seed=torch.tensor([3, 4]))
    s0 = g.start(x).saliency.requires_grad_(True)
    blur = g.blurred(x)
    objs = [g.objective(x, blur, s0, y, jitter_offsets([3, 4], 0, 2, d)) for d in range(2)]
    (grad,) = torch.autograd.grad(((objs[0] + objs[1]) / 2).sum(), s0, retain_graph=True)
    # Adam's first step: lr · m̂ / (sqrt(v̂) + eps) = lr · g / (|g| + eps)
    want = (0.5 - 0.05 * grad / (grad.abs() + g.adam_eps)).clamp(0, 1)
    torch.testing.assert_close(sal, want, atol=1e-5, rtol=0)
    default = Mask(resnet_model, steps=1, lr=0.05, init=0.5, jitter=2)  # two draws by default
    torch.testing.assert_close(default.solve(x, y, seed=torch.tensor([3, 4]))[0], sal, atol=0, rtol=0)
    (g0,) = torch.autograd.grad(objs[0].sum(), s0)  # one draw: Fong & Vedaldi's single shift
    single = Mask(resnet_model, steps=1, lr=0.05, init=0.5, jitter=2, jitter_draws=1)
    torch.testing.assert_close(single.solve(x, y, seed=torch.tensor([3, 4]))[0],
                               (0.5 - 0.05 * g0 / (g0.abs() + g.adam_eps)).clamp(0, 1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="jitter_draws must be a positive integer"):
        Mask(resnet_model, jitter_draws=0)


def test_mask_larger_than_image(resnet_model, batch):
    x, y, _, _ = batch
    with pytest.raises(ValueError, match="mask size 65 is larger than the image"):
        Mask(resnet_model, size=65)(x, y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_step": 0}, "n_step must be an integer ≥ 1"),
        ({"n_reset": 0}, "n_reset must be an integer ≥ 1"),
        ({"alpha_max": 0}, "alpha_max must be a positive number"),
        ({"alpha_max": -1.0}, "alpha_max must be a positive number"),
        ({"n_bs": -1}, "n_bs must be a non-negative integer"),
        ({"step_rule": "newton"}, "unknown step_rule"),
        ({"mask_loss": "magic"}, "unknown mask_loss"),
        ({"n_seeds": 0}, "n_seeds must be an integer ≥ 1"),
        ({"n_seeds": 1.5}, "n_seeds must be an integer ≥ 1"),
    ],
)
def test_bad_attack_parameters(resnet_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADV2(resnet_model, Mask(resnet_model), **kwargs)


def test_quantize_stays_in_ball_and_on_grid():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    x_adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * EPS).clamp(0, 1)
    q = quantize(x_adv, x, EPS)
    assert (q - x).abs().max() <= EPS + 1e-6 and q.min() >= 0 and q.max() <= 1
    torch.testing.assert_close(q * 255, torch.round(q * 255), atol=1e-4, rtol=0)
    assert (q - x_adv).abs().max() <= 1 / 255


def test_search_never_loses_the_target_or_leaves_the_ball(resnet_model, batch):
    from adv2.attacks import PGD

    x, _, _, t = batch
    x_adv = PGD(resnet_model, steps=300)(x, t).x_adv
    with torch.no_grad():
        assert (resnet_model(x_adv).argmax(1) == t).all()
    ctx = AttackContext(x, t, torch.zeros(4, 1, 8, 8), EPS)
    rule = SearchStep(resnet_model, alpha_max=50.0, n_bs=12)  # huge first tries: must be refused
    for seed in range(3):
        grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        # the worst direction: towards the clean image's class
        grad[0] = -(x - x_adv)[0] if seed == 0 else grad[0]
        out = rule(ctx, x_adv, grad, 0)
        moved = (out - x_adv).flatten(1).abs().amax(1) > 0
        with torch.no_grad():
            ok = resnet_model(out).argmax(1) == t
        assert (ok | ~moved).all() and ok.all()
        assert (out - x).abs().max() <= EPS + 1e-6 and out.min() >= 0 and out.max() <= 1
        # per example: example 1 alone takes the same step
        alone = rule(AttackContext(x[1:2], t[1:2], torch.zeros(1, 1, 8, 8), EPS), x_adv[1:2], grad[1:2], 0)
        torch.testing.assert_close(alone, out[1:2])
    # a step that keeps the class is taken at full length
    small = SearchStep(resnet_model, alpha_max=1e-3, n_bs=0)(ctx, x_adv, torch.randn(x.shape), 0)
    assert ((small - x_adv).flatten(1).norm(dim=1) > 1e-4).all()


@pytest.mark.parametrize("mode", ["unroll", "objective"])
def test_several_jitter_seeds_average_single_seed_trackers(resnet_model, batch, mode):
    """``n_seeds=2``: loss and keep-best distance are the means of the single-seed trackers with
    seeds ``seed + 1`` and ``seed + 2``; neither is the reported map's seed."""
    from adv2.interpreters.mask import MaskTracker

    x, y, _, t = batch
    g = Mask(resnet_model, steps=20, seed=5)
    x_adv = quantize((x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1), x, EPS)
    ctx = AttackContext(x, t, g(x, y), EPS)
    both = MaskTracker(g, n_step=2, n_reset=3, mode=mode, n_seeds=2, unroll_seeds=2)
    one = [MaskTracker(g, n_step=2, n_reset=3, mode=mode, seed=s, n_seeds=1) for s in (6, 7)]
    for step in range(2):
        xa = x_adv.clone().requires_grad_(True)
        logits, d, cand, _ = both(ctx, xa, step, False)
        singles = [tr(ctx, x_adv.clone().requires_grad_(True), step, False) for tr in one]
        torch.testing.assert_close(d, (singles[0][1] + singles[1][1]) / 2, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(logits, singles[0][0])
        if step == 0:  # a reset: the candidate's distance is the mean of both fresh maps'
            torch.testing.assert_close(cand[1], (singles[0][2][1] + singles[1][2][1]) / 2, atol=1e-6, rtol=1e-5)
            assert torch.equal(cand[0], singles[0][2][0]) and torch.equal(cand[2], singles[0][2][2])
        else:
            assert cand is None
        (grad,) = torch.autograd.grad(d.sum(), xa)
        assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n_seeds must be an integer ≥ 1"):
        MaskTracker(g, n_seeds=0)


def test_unroll_seeds_take_the_seeds_states_in_turn(resnet_model, batch):
    """``unroll_seeds=1`` of two seeds: every re-solve covers both seeds; iteration 0 unrolls seed
    ``seed + 1`` from its fresh state, iteration 1 seed ``seed + 2`` from *its* fresh state."""
    from adv2.interpreters.mask import MaskTracker

    x, y, _, t = batch
    g = Mask(resnet_model, steps=10, seed=5)
    x_adv = quantize((x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1), x, EPS)
    ctx = AttackContext(x, t, g(x, y), EPS)
    turn = MaskTracker(g, n_step=2, n_reset=10, n_seeds=2, unroll_seeds=1, game_term=0)  # the maps' part alone
    xq = quantize(x_adv, x, EPS)
    fresh = {s: g.solve(xq, t, seed=s) for s in (6, 7)}
    _, d0, cand, _ = turn(ctx, x_adv.clone(), 0, False)
    torch.testing.assert_close(cand[1], (ctx.distance(fresh[6][0]) + ctx.distance(fresh[7][0])) / 2)
    _, d1, cand1, _ = turn(ctx, x_adv.clone(), 1, False)
    assert cand1 is None
    for d, s in ((d0, 6), (d1, 7)):
        sal, _ = turn.unrolled.solve(x_adv, t, state=fresh[s][1], steps=2, seed=s, create_graph=True, smooth=True)
        torch.testing.assert_close(d, ctx.distance(sal), atol=1e-6, rtol=1e-5)
    assert turn.states[0].step == turn.states[1].step == 12
    assert turn.options()["unroll_seeds"] == 1 and MaskTracker(g, n_seeds=3).unroll_seeds == 1
    with pytest.raises(ValueError, match="unroll_seeds .3. cannot exceed n_seeds .2."):
        MaskTracker(g, n_seeds=2, unroll_seeds=3)


@pytest.mark.slow
def test_adv2_against_mask_end_to_end(resnet_model, batch):
    x, y, _, t = batch
    g = Mask(resnet_model, steps=60)
    benign = g(x, y)
    atk = ADV2(resnet_model, g, warmup=100, steps=8, n_reset=4, n_step=2)
    assert atk.step_rule == "search"
    res = atk(x, t, target_map=benign)
    assert res.success.all() and res.success_quantized.all()
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6
    # keep-best candidates are 8-bit images inside the ball (an example none of whose reset points
    # was classified as the target falls back to the last iterate, which need not be)
    on_grid = ((res.x_adv * 255 - torch.round(res.x_adv * 255)).abs() < 1e-4).flatten(1).all(1)
    assert on_grid.sum() >= 3
    # the reported map is MASK re-solved from scratch with the interpreter's own seed
    torch.testing.assert_close(res.map, g(res.x_adv, t), atol=1e-5, rtol=0)
    assert res.map.shape == (4, 1, 16, 16)


@pytest.mark.slow
def test_adv2_flow_against_mask_tracks_the_mask_through_the_flow(resnet_model, batch):
    """StAdv-based ADV² against MASK: the same tracker (resets, keep-best on 8-bit images), the flow
    moved by Adam; the result is the rounded warp of the reported flow, and its map MASK's own."""
    from adv2.attacks.adv2 import FLOW_DEFAULTS
    from adv2.attacks.flow import warp

    x, y, _, t = batch
    g = Mask(resnet_model, steps=30)
    atk = ADV2(resnet_model, g, perturbation="flow", warmup=150, steps=4, n_reset=2, n_step=1)
    assert (atk.tau, atk.lam) == (FLOW_DEFAULTS["mask"]["tau"], FLOW_DEFAULTS["mask"]["lam"])
    res = atk(x, t, target_map=g(x, y))
    assert res.flow.shape == (4, 2, 64, 64) and res.flow.abs().max() > 0
    assert res.success_quantized.sum() >= 3
    # the image is the warp by the reported flow, rounded to 8 bits where it is a kept candidate
    assert (res.x_adv - warp(x, res.flow)).abs().max() <= 0.5 / 255 + 1e-6
    on_grid = ((res.x_adv * 255 - torch.round(res.x_adv * 255)).abs() < 1e-4).flatten(1).all(1)
    assert on_grid.sum() >= 3
    torch.testing.assert_close(res.map, g(res.x_adv, t), atol=1e-5, rtol=0)


def test_rotated_seeds_are_new_at_every_fresh_solve_and_accounted_for(resnet_model, batch, monkeypatch):
    """Each fresh solve (and the unrolled steps after it) uses new jitter seeds; ``attack_seeds``
    lists exactly the seeds the attack used; fixed seeds use ``seed + 1 … seed + n_seeds`` only."""
    x, y, _, t = batch
    g = Mask(resnet_model, steps=4, seed=3)
    used = []
    original = Mask.solve

    def spy(self, *args, seed=None, **kwargs):
        used.extend(seed.tolist() if isinstance(seed, torch.Tensor) else [seed])
        return original(self, *args, seed=seed, **kwargs)

    monkeypatch.setattr(Mask, "solve", spy)
    for rotate in (True, False):
        used.clear()
        tr = g.tracker(n_step=1, n_reset=2, n_seeds=2, rotate_seeds=rotate)
        ADV2(resnet_model, tr, warmup=1, steps=5)(x[:2], t[:2], target_map=g(x[:2], y[:2]))
        attack = set(used) - {3, None}  # the interpreter's own seed (None: its default): benign and reported maps
        assert attack == tr.attack_seeds(5)
        # resets at 0, 2, 4 and the last iteration (5): four rounds of two seeds, or the same two
        assert len(attack) == (8 if rotate else 2) and {4, 5} <= attack
    assert ADV2.paper(resnet_model, g).tracker.rotate_seeds is False
    assert ADV2(resnet_model, g).tracker.rotate_seeds is True
    with pytest.raises(ValueError, match="rotate_seeds must be True or False"):
        g.tracker(rotate_seeds=1)


def test_game_term_adds_masks_game_at_the_target_map(resnet_model, batch):
    """``game_term`` κ adds κ × (the target class's probability once the target map's region of x̂
    is blurred) to the loss, computed here independently; κ = 0 leaves the loss as it was; the
    term's gradient reaches the image."""
    x, y, _, t = batch
    x, t = x[:3], t[:3]
    g = Mask(resnet_model, steps=3)
    m_t = g(x, y[:3])
    x_adv = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    x_adv.requires_grad_(True)

    def loss(kappa, objective=None):
        ctx = AttackContext(x, t, m_t, 0.031, **({"objective": objective} if objective else {}))
        tr = g.tracker(n_step=1, n_reset=5, n_seeds=1, game_term=kappa)
        tr.reset()
        _, d, _, _ = tr(ctx, x_adv, 0, False)
        return d

    base, with_term = loss(0.0), loss(0.5)
    # Fragility pushes the map away from m_t: no game at m_t there
    torch.testing.assert_close(loss(0.5, Fragility()), loss(0.0, Fragility()))
    up = F.interpolate(m_t, size=x.shape[-2:], mode="bilinear", align_corners=False)
    deleted = (1 - up) * x_adv + up * g.blurred(x_adv)
    p = torch.softmax(resnet_model(deleted), 1)[torch.arange(3), t]
    torch.testing.assert_close(with_term, base + 0.5 * p)
    (grad,) = torch.autograd.grad(p.sum(), x_adv)
    assert grad.abs().sum() > 0
    assert g.tracker().game_term == 0.1 == MaskTracker.GAME_TERM  # the default with unrolled steps
    assert g.tracker(mask_loss="objective").game_term == 0.0 and g.tracker(game_term=0).game_term == 0.0
    assert ADV2(resnet_model, g, game_term=0.3).tracker.game_term == 0.3
    assert ADV2.paper(resnet_model, g).tracker.game_term == 0.0
    assert ADV2.paper(resnet_model, g, perturbation="flow").tracker.game_term == 0.0
    for bad in (-0.1, float("inf"), True, "1"):
        with pytest.raises(ValueError, match="game_term must be a finite number"):
            g.tracker(game_term=bad)
    with pytest.raises(ValueError, match="mask_loss='objective'"):
        g.tracker(game_term=0.1, mask_loss="objective")
