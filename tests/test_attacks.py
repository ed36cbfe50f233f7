"""PGD and ADV²: invariants, behaviour against independent computations, bad inputs."""

import pytest
import torch
import torch.nn.functional as F

import adv2
from adv2.attacks import ADV2, PGD
from adv2.interpreters import CAM, Grad, GradCAM

EPS = 0.031


@pytest.fixture(scope="module")
def batch(shapes_test, resnet_model):
    x, y, _ = shapes_test
    x, y = x[:4], y[:4]
    with torch.no_grad():
        assert (resnet_model(x).argmax(1) == y).all()
    return x, y, (y + torch.tensor([1, 3, 5, 7])) % 10


def _check_box(res, x):
    delta = (res.x_adv - x).abs().amax()
    assert delta <= EPS + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_pgd_one_step_matches_manual_sign_step(resnet_model, batch):
    x, _, t = batch
    res = PGD(resnet_model, eps=EPS, alpha=1 / 255, steps=1)(x, t)
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(resnet_model(xr), t, reduction="sum").backward()
    manual = (x - xr.grad.sign() / 255).clamp(0, 1)
    torch.testing.assert_close(res.x_adv, manual)


def test_pgd_invariants_and_success(resnet_model, batch):
    x, _, t = batch
    res = PGD(resnet_model, eps=EPS, steps=300, interpreter=CAM(resnet_model))(x, t)
    _check_box(res, x)
    assert res.success.all()
    with torch.no_grad():
        p = torch.softmax(resnet_model(res.x_adv), 1)
        q = resnet_model(torch.round(res.x_adv * 255) / 255).argmax(1)
    torch.testing.assert_close(res.confidence, p.gather(1, t[:, None])[:, 0])
    assert torch.equal(res.success_quantized, q == t)
    assert res.map.shape == (4, 1, 8, 8) and res.map.min() >= 0 and res.map.max() <= 1


def test_pgd_random_start_is_seeded(resnet_model, batch):
    x, _, t = batch
    a = PGD(resnet_model, steps=2, random_start=True, seed=3)(x, t).x_adv
    b = PGD(resnet_model, steps=2, random_start=True, seed=3)(x, t).x_adv
    c = PGD(resnet_model, steps=2, random_start=True, seed=4)(x, t).x_adv
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("cls", [CAM, GradCAM, Grad])
def test_adv2_fools_classifier_and_keeps_map(cls, resnet_model, batch):
    x, y, t = batch
    g = cls(resnet_model)
    benign = g(x, y).detach()
    pgd = PGD(resnet_model, steps=50, interpreter=g)(x, t)
    res = ADV2(resnet_model, g, warmup=40, steps=40)(x, t)
    _check_box(res, x)
    assert res.success.all()
    assert res.map.min() >= 0 and res.map.max() <= 1
    d_adv2 = (res.map - benign).abs().flatten(1).mean(1)
    d_pgd = (pgd.map - benign).abs().flatten(1).mean(1)
    assert d_adv2.mean() < 0.7 * d_pgd.mean(), (d_adv2, d_pgd)
    # the reported map is the interpreter's exact map of x_adv for the target class
    torch.testing.assert_close(res.map, g(res.x_adv, t), atol=1e-5, rtol=1e-4)


def test_adv2_custom_target_map(resnet_model, batch):
    x, y, t = batch
    g = CAM(resnet_model)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    corner = ((yy < 3) & (xx < 3)).float().expand(4, 1, 8, 8).contiguous()
    res = ADV2(resnet_model, g, warmup=40, steps=60)(x, t, target_map=corner)
    benign = g(x, y)
    assert (res.map - corner).pow(2).mean() < (benign - corner).pow(2).mean()
    # any map size is accepted and resized to the interpreter's 8×8
    big = torch.nn.functional.interpolate(corner, size=(64, 64))
    res2 = ADV2(resnet_model, g, warmup=2, steps=2)(x, t, target_map=big)
    assert res2.map.shape == (4, 1, 8, 8)


def test_adv2_per_example_results_do_not_depend_on_batch(resnet_model, batch):
    x, _, t = batch
    atk = ADV2(resnet_model, CAM(resnet_model), warmup=5, steps=15)
    full = atk(x, t)
    part = atk(x[1:3], t[1:3])
    frac_equal = (full.x_adv[1:3] - part.x_adv).abs().le(1e-6).float().mean()
    assert frac_equal > 0.99
    assert torch.equal(full.success[1:3], part.success)


def test_lambda_schedule(resnet_model):
    g = CAM(resnet_model)
    atk = ADV2(resnet_model, g, steps=11, lam=3.0)
    assert atk.lam_at(0) == 3.0 and atk.lam_at(10) == pytest.approx(6.0) and atk.lam_at(5) == pytest.approx(4.5)
    assert ADV2(resnet_model, g, steps=11, lam=3.0, lam_schedule="constant").lam_at(10) == 3.0
    assert ADV2(resnet_model, g).lam == pytest.approx(0.204 * 49)
    assert ADV2(resnet_model, Grad(resnet_model)).lam == pytest.approx(0.007 * 56 * 56)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 0}, r"eps must be in \(0, 1\]"),
        ({"eps": -0.1}, r"eps must be in \(0, 1\]"),
        ({"eps": 2.0}, r"eps must be in \(0, 1\]"),
        ({"eps": float("inf")}, r"eps must be in \(0, 1\]"),
        ({"alpha": 0}, "alpha must be a positive"),
        ({"steps": -1}, "steps must be"),
        ({"lam": -1.0}, "lam must be"),
        ({"perturbation": "l2"}, "unknown perturbation"),
        ({"lam_schedule": "cosine"}, "unknown lam_schedule"),
    ],
)
def test_adv2_bad_arguments(resnet_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADV2(resnet_model, CAM(resnet_model), **kwargs)


@pytest.mark.slow
def test_adv2_flow_moves_pixels_and_keeps_the_map(resnet_model, batch):
    from adv2.attacks import StAdv
    from adv2.attacks.flow import warp

    x, y, t = batch
    g = CAM(resnet_model)
    benign = g(x, y)
    res = ADV2(resnet_model, g, perturbation="flow", steps=120)(x, t, target_map=benign)
    assert res.success.float().mean() >= 0.75 and res.flow.shape == (x.shape[0], 2, *x.shape[-2:])
    assert torch.equal(res.x_adv, warp(x, res.flow))  # the image is the warp of the reported flow
    st = StAdv(resnet_model, steps=120, interpreter=g)(x, t)
    d_adv2 = adv2.metrics.lp_distance(res.map, benign).mean()
    assert d_adv2 < 0.7 * adv2.metrics.lp_distance(st.map, benign).mean()


@pytest.mark.parametrize("kwargs, match", [(dict(perturbation="flows"), "unknown perturbation"),
                                           (dict(perturbation="flow", tau=-1.0), "tau"),
                                           (dict(perturbation="flow", step_rule="sign"), "step_rule"),
                                           (dict(perturbation="flow", betas=(0.9, 1.0)), "betas"),
                                           (dict(perturbation="flow", flow_lr=0), "flow_lr"),
                                           (dict(perturbation="flow", flow_lr_schedule="cos"), "flow_lr_schedule"),
                                           (dict(flow_lr_schedule="cosine"), "flow_lr_schedule applies"),
                                           (dict(lam_adapt=0.9), "lam_adapt"),
                                           (dict(lam_adapt=2.0), "lam_adapt"),
                                           (dict(lam_adapt=True), "lam_adapt"),
                                           (dict(lam_adapt=float("nan")), "lam_adapt"),
                                           (dict(lam_adapt=float("inf")), "lam_adapt"),
                                           (dict(lam_adapt="1.02"), "lam_adapt")])
def test_adv2_flow_bad_settings(resnet_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADV2(resnet_model, CAM(resnet_model), **kwargs)


@pytest.mark.parametrize("attack", ["pgd", "adv2"])
@pytest.mark.parametrize(
    "x, t, match",
    [
        (torch.rand(2, 3, 64, 64) * 2, torch.tensor([0, 1]), r"\[0, 1\]"),
        (torch.rand(3, 64, 64), torch.tensor([0]), "rank 4"),
        (torch.rand(2, 4, 64, 64), torch.tensor([0, 1]), "3 colour channels"),
        (torch.full((2, 3, 64, 64), float("nan")), torch.tensor([0, 1]), "NaN"),
        (torch.rand(2, 3, 64, 64), torch.tensor([0, 10]), "out of range"),
        (torch.rand(2, 3, 64, 64), torch.tensor([0, -1]), "out of range"),
        (torch.rand(2, 3, 64, 64), torch.tensor([0]), r"shape \(2,\)"),
        (torch.rand(2, 3, 64, 64), torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_bad_inputs(resnet_model, attack, x, t, match):
    atk = PGD(resnet_model, steps=1) if attack == "pgd" else ADV2(resnet_model, CAM(resnet_model), steps=1, warmup=0)
    with pytest.raises(ValueError, match=match):
        atk(x, t)


def test_bad_target_map(resnet_model, batch):
    x, _, t = batch
    atk = ADV2(resnet_model, CAM(resnet_model), steps=1, warmup=0)
    with pytest.raises(ValueError, match="target_map must be a tensor of shape"):
        atk(x, t, target_map=torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match=r"target_map must be in \[0, 1\]"):
        atk(x, t, target_map=torch.rand(4, 1, 8, 8) + 1)


@pytest.mark.parametrize("make", [
    lambda m: (lambda x, t: PGD(m, steps=2)(x, t)),
    lambda m: (lambda x, t: ADV2(m, CAM(m), warmup=1, steps=2)(x, t)),
    lambda m: (lambda x, t: ADV2(m, Grad(m), perturbation="flow", steps=2)(x, t)),
    lambda m: (lambda x, t: adv2.attacks.StAdv(m, steps=2)(x, t)),
    lambda m: (lambda x, t: adv2.interpreters.get("mask", m, steps=3)(x, t)),
    lambda m: (lambda x, t: GradCAM(m)(x, t)),
], ids=["pgd", "adv2", "adv2-flow", "stadv", "mask", "gradcam"])
def test_attacks_and_interpreters_never_change_a_train_mode_model(batch, make):
    """A model left in train mode: its BatchNorm statistics and its mode are as before."""
    model = adv2.models.load("shapes-resnet").train()
    model.model.layer1.eval()  # a mixed state is restored as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, _, t = batch
    make(model)(x, t)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and not model.model.layer1.training and model.model.layer2.training


def test_float64_images_are_a_clear_error(resnet_model, batch):
    x, y, t = batch
    for call in (lambda: PGD(resnet_model, steps=1)(x.double(), t), lambda: CAM(resnet_model)(x.double(), y),
                 lambda: ADV2(resnet_model, CAM(resnet_model), steps=1)(x.double(), t)):
        with pytest.raises(ValueError, match=r"dtype torch.float64 but the model's parameters are torch.float32"):
            call()


def test_cam_and_gradcam_take_module_objects_as_well_as_names(resnet_model, batch):
    x, y, _ = batch
    net = resnet_model.model  # inside the Normalized wrapper
    by_name = CAM(resnet_model, layer="layer4", head="fc")(x, y)
    torch.testing.assert_close(CAM(resnet_model, layer=net.layer4, head=net.fc)(x, y), by_name, rtol=0, atol=0)
    torch.testing.assert_close(GradCAM(resnet_model, layer=net.layer4)(x, y), GradCAM(resnet_model)(x, y))
    with pytest.raises(ValueError, match=r"the layer given \(<Conv2d module>\) is not a submodule") as e:
        CAM(resnet_model, layer=torch.nn.Conv2d(3, 3, 1))
    assert "kernel_size" not in str(e.value)  # the module is named, not printed
    with pytest.raises(ValueError, match="head <Sequential module> must be an nn.Linear"):
        CAM(resnet_model, layer=net.layer4, head=net.layer4)
    with pytest.raises(ValueError, match="must be a submodule's name or the module itself"):
        CAM(resnet_model, layer=4)


def test_decayed_schedules_against_hand_values(resnet_model):
    from adv2.attacks.adv2 import decayed

    assert decayed(0.03, 5, 11, "constant") == 0.03
    assert decayed(0.03, 0, 11, "cosine") == pytest.approx(0.03)
    assert decayed(0.03, 10, 11, "cosine") == pytest.approx(0.003)
    assert decayed(0.03, 5, 11, "cosine") == pytest.approx(0.0165)  # halfway: the mean of the ends
    assert decayed(0.03, 5, 11, "linear") == pytest.approx(0.0165)
    assert decayed(0.03, 2, 11, "linear") == pytest.approx(0.03 - 0.027 * 0.2)
    import math

    atk = ADV2(resnet_model, CAM(resnet_model), steps=11, alpha=0.03)  # the L∞ step: cosine by default
    old = [0.003 + 0.5 * (0.03 - 0.003) * (1 + math.cos(math.pi * t / 10)) for t in (0, 5, 10)]
    assert [atk.perturbation.alpha_at(t, atk.steps) for t in (0, 5, 10)] == old


def test_adapt_scale_against_hand_values():
    from adv2.attacks.objectives import LAM_SCALE_RANGE, adapt_scale

    scale = torch.tensor([1.0, 1.0, 2.0, 1e6, 1e-3])
    held = torch.tensor([True, False, True, True, False])
    out = adapt_scale(scale, held, 1.02)
    want = torch.tensor([1.02, 1.02**-20, 2.04, 1e6, 1e-3])  # clamped at both ends
    assert torch.allclose(out, want) and out.min() >= LAM_SCALE_RANGE[0] and out.max() <= LAM_SCALE_RANGE[1]


def test_flow_lr_schedule_sets_adams_rate_per_joint_step(resnet_model, batch, monkeypatch):
    x, _, t = batch
    seen = []
    step = torch.optim.Adam.step

    def record(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    ADV2(resnet_model, CAM(resnet_model), perturbation="flow", warmup=2, steps=5, flow_lr=0.03,
         flow_lr_schedule="cosine")(x[:2], t[:2])
    assert seen[:2] == [0.03, 0.03]  # warm-up: the base rate
    assert seen[2] == pytest.approx(0.03) and seen[-1] == pytest.approx(0.003)  # joint: 0.03 → 0.003
    assert all(a > b for a, b in zip(seen[2:], seen[3:], strict=False))


def test_adv2_lam_adapt_keeps_examples_independent(resnet_model, batch):
    x, y, t = batch
    g = Grad(resnet_model)
    atk = ADV2(resnet_model, g, perturbation="flow", warmup=3, steps=12, lam_adapt=1.5)
    # example 0 (target: its own class, held throughout) gets the same flow whether its neighbour
    # holds its target (its own class) or not (another class). Same batch size: another size runs
    # other convolution kernels, whose rounding Adam's normalised steps amplify.
    xs, maps = x[:2], g(x[:2], y[:2])
    held = atk(xs, y[:2], target_map=maps)
    lost = atk(xs, torch.stack([y[0], t[1]]), target_map=maps)
    assert held.success.all() and not lost.success[1]
    torch.testing.assert_close(held.flow[0], lost.flow[0], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_adv2_flow_lam_adapt_brings_the_grad_map_closer_and_keeps_the_class(resnet_model, batch):
    """Per-example λ adaptation (like the demo's GRAD flow settings, with half the steps and a
    faster-growing λ): every example still reaches the target, and the map ends nearer the
    benign one than with λ as scheduled."""
    x, y, t = batch
    g = Grad(resnet_model)
    benign = g(x, y)
    kw = dict(perturbation="flow", warmup=20, steps=300, flow_lr=0.03, flow_lr_schedule="cosine")
    plain = ADV2(resnet_model, g, **kw)(x, t, target_map=benign)
    adapt = ADV2(resnet_model, g, lam_adapt=1.05, **kw)(x, t, target_map=benign)
    assert adapt.success.all() and adapt.success_quantized.all()
    d_plain = adv2.metrics.lp_distance(plain.map, benign).mean()
    d_adapt = adv2.metrics.lp_distance(adapt.map, benign).mean()
    assert d_adapt < 0.9 * d_plain  # measured: 0.80
