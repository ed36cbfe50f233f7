"""Beyond the paper: captum interpreters under attack, adv2 interpreters for captum / Quantus users,
the manipulate and fragility presets of the one loop, and ``adv2 audit``."""

import json

import numpy as np
import pytest
import torch

import adv2
from adv2 import interpreters, metrics
from adv2.attacks import ADV2, PGD, Fragility, Manipulate, as_perturbation, preset
from adv2.cli import main
from adv2.experiments.audit import parse_eps
from adv2.experiments.sampling import correctly_classified_shapes
from adv2.experiments.targets import shape_maps

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def setup():
    net = adv2.models.load("shapes-resnet")
    x, y, _, idx = correctly_classified_shapes(net, 4)
    return net, x, y, idx


def test_wrapped_saliency_and_layergradcam_equal_adv2s_grad_and_gradcam(setup):
    net, x, y, _ = setup
    sal = interpreters.from_captum(captum_attr.Saliency(net))
    assert torch.equal(sal(x, y), interpreters.Grad(net)(x, y))
    lgc = interpreters.from_captum(captum_attr.LayerGradCam(net, net.model.layer4))
    assert torch.allclose(lgc(x, y), interpreters.GradCAM(net, layer="layer4")(x, y), atol=1e-6)


@pytest.mark.parametrize("make, kwargs", [
    (lambda m: captum_attr.Saliency(m), {}),
    (lambda m: captum_attr.InputXGradient(m), {}),
    (lambda m: captum_attr.IntegratedGradients(m), {"n_steps": 4}),
    (lambda m: captum_attr.LayerGradCam(m, m.model.layer4), {}),
    (lambda m: captum_attr.NoiseTunnel(captum_attr.Saliency(m)), {"nt_type": "smoothgrad", "nt_samples": 3,
                                                                   "stdevs": 0.05}),
])
def test_wrapped_maps_are_maps_and_differentiable(setup, make, kwargs):
    net, x, y, _ = setup
    g = interpreters.from_captum(make(net), **kwargs)
    m = g(x, y)
    assert m.shape[:2] == (4, 1) and 0 <= m.min() and m.max() <= 1 and torch.isfinite(m).all()
    assert torch.equal(m, g(x, y))  # deterministic (NoiseTunnel's noise is seeded)
    xr = x.clone().requires_grad_(True)
    _, ms = g.logits_and_map(xr, y, create_graph=True, smooth=True)
    (grad,) = torch.autograd.grad((ms * torch.rand_like(ms)).sum(), xr)
    assert (grad != 0).float().mean() > 0.5  # the map reaches the input: ADV² can attack it


def test_smoothgrad_maps_do_not_depend_on_the_batch_and_attacks_use_other_noise(setup):
    net, x, y, _ = setup
    g = interpreters.from_captum(captum_attr.NoiseTunnel(captum_attr.Saliency(net)), nt_samples=3, stdevs=0.05)
    assert torch.allclose(g(x[1:2], y[1:2]), g(x, y)[1:2], atol=1e-6)
    _, attack_map = g.logits_and_map(x.clone().requires_grad_(True), y, create_graph=True, smooth=False)
    assert torch.allclose(attack_map, g(x, y), atol=1e-6)  # evaluation: the reported noise
    _, smooth_map = g.logits_and_map(x.clone().requires_grad_(True), y, create_graph=True, smooth=True)
    assert not torch.allclose(smooth_map, g(x, y), atol=1e-3)  # attacks: other draws (and the surrogate)


def test_undifferentiable_captum_methods_are_refused(setup):
    net = setup[0]
    for method in (captum_attr.Occlusion(net), captum_attr.GuidedBackprop(net), captum_attr.DeepLift(net),
                   captum_attr.NoiseTunnel(captum_attr.Occlusion(net))):
        with pytest.raises(ValueError, match="adv2 wraps the differentiable methods|is not differentiable here"):
            interpreters.from_captum(method)


def test_adv2_attacks_a_wrapped_captum_method(setup):
    net, x, y, _ = setup
    g = interpreters.from_captum(captum_attr.LayerGradCam(net, net.model.layer4))
    ct = (y + 1) % 10
    res = ADV2(net, g, steps=40, warmup=20)(x, ct)
    pgd = PGD(net, eps=0.031, alpha=1 / 255, steps=60)(x, ct)
    benign = g(x, y)
    assert res.success.all() and (res.x_adv - x).abs().max() <= 0.031 + 1e-6
    assert metrics.lp_distance(res.map, benign).mean() < metrics.lp_distance(g(pgd.x_adv, ct), benign).mean()


def test_adv2_interpreters_serve_quantus_and_captum_metric_code(setup):
    net, x, y, _ = setup
    quantus = pytest.importorskip("quantus")
    g = interpreters.Grad(net)
    explain = interpreters.explain_func(g)
    a = explain(net, x.numpy(), y.numpy())
    assert a.shape == (4, 1, 64, 64) and np.allclose(a, g(x, y).numpy())
    cam = interpreters.explain_func(interpreters.CAM(net))(net, x.numpy(), y.numpy())
    assert cam.shape == (4, 1, 64, 64)  # upsampled to the input, as Quantus expects
    metric = quantus.MaxSensitivity(nr_samples=2, lower_bound=0.02, disable_warnings=True, display_progressbar=False)
    scores = metric(model=net, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, explain_func=explain, device="cpu")
    assert len(scores) == 4 and all(np.isfinite(scores)) and max(scores) > 0
    from captum.metrics import sensitivity_max

    sens = sensitivity_max(interpreters.CaptumStyle(g).attribute, x, target=y, n_perturb_samples=2,
                           perturb_radius=0.02)
    assert sens.shape == (4,) and (sens > 0).all()


def test_an_adv2_attack_runs_in_captums_attack_comparator(setup):
    net, x, y, _ = setup
    from captum.robust import AttackComparator

    ct = (y + 3) % 10

    def accuracy(out, target):
        return (out.argmax(1) == target).float().mean()

    comp = AttackComparator(forward_func=net, metric=accuracy)
    comp.add_attack(as_perturbation(PGD(net, eps=0.031, alpha=1 / 255, steps=20)), name="pgd",
                    additional_attack_arg_names=["target"])
    res = comp.evaluate(x, target=ct)
    assert float(res["Original"]) == 0.0 and float(res["pgd"]["mean"]) > 0.5  # now classified as the targets


@pytest.mark.slow
def test_fragility_pushes_the_map_further_than_random_noise_and_keeps_the_prediction(setup):
    net, x, y, _ = setup
    for name in ("grad", "cam"):
        g = interpreters.get(name, net)
        benign = g(x, y)
        res = Fragility(net, g, eps=4 / 255, steps=30)(x)
        assert res.success.all() and torch.equal(net(res.x_adv).argmax(1), y)
        assert (res.x_adv - x).abs().max() <= 4 / 255 + 1e-6 and 0 <= res.x_adv.min() and res.x_adv.max() <= 1
        noise = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 4 / 255).clamp(0, 1)
        l1 = metrics.lp_distance(res.map, benign).mean()
        assert l1 > 2 * metrics.lp_distance(g(noise, y), benign).mean(), name
    g = interpreters.Grad(net)
    benign = g(x, y)
    l1s = {m: metrics.lp_distance(Fragility(net, g, measure=m, eps=4 / 255, steps=20)(x).map, benign).mean()
           for m in ("topk", "l1")}
    assert l1s["l1"] > l1s["topk"]  # the L1 measure is the worst case for the L1 distance
    com = Fragility(net, interpreters.CAM(net), measure="center_of_mass", eps=4 / 255, steps=30)(x)
    assert metrics.center_of_mass_shift(com.map, interpreters.CAM(net)(x, y)).mean() > 0.3  # map pixels


def test_manipulate_reaches_a_target_map_and_keeps_the_prediction(setup):
    net, x, y, idx = setup
    g = interpreters.CAM(net)
    benign = g(x, y)
    target = shape_maps(*benign.shape[-2:], 0, idx)
    res = Manipulate(net, g, eps=8 / 255, steps=40)(x, target)
    assert res.success.all()
    p0, p1 = torch.softmax(net(x), 1).gather(1, y[:, None]), torch.softmax(net(res.x_adv), 1).gather(1, y[:, None])
    assert (p1 > 0.5).all() and (p1 - p0).abs().max() < 0.5  # the confidence stays too
    assert metrics.lp_distance(res.map, target).mean() < 0.6 * metrics.lp_distance(benign, target).mean()


def test_presets_and_objectives_reject_bad_input(setup):
    net, x, y, _ = setup
    g = interpreters.CAM(net)
    with pytest.raises(ValueError, match="unknown objective"):
        ADV2(net, g, objective="fragile")
    with pytest.raises(ValueError, match="unknown measure"):
        ADV2(net, g, objective="fragility", measure="com")
    with pytest.raises(ValueError, match=r"k must be a number in \(0, 1\]"):
        Fragility(net, g, k=0)
    with pytest.raises(ValueError, match="needs a target_map"):
        ADV2(net, g, objective="manipulate", steps=1)(x, y)
    with pytest.raises(ValueError, match="unknown objective"):
        preset("dombrowski", net, g)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        Fragility(net, g, steps=1)(x * 2)
    with pytest.raises(ValueError, match="takes no warmup"):
        ADV2(net, g, objective="fragility", warmup=5)
    with pytest.raises(ValueError, match="cannot serve"):
        ADV2(net, interpreters.Mask(net), objective="fragility", mask_loss="objective")
    with pytest.raises(ValueError, match="keeps the prediction: target_class must be"):
        ADV2(net, g, objective="fragility", steps=1)(x, (y + 1) % 10)


def test_the_default_objective_is_bit_identical_to_before(setup):
    """``objective="adv2"`` is the loop as it was: CE towards c_t, MSE to m_t."""
    net, x, y, _ = setup
    g = interpreters.CAM(net)
    ct = (y + 1) % 10
    a = ADV2(net, g, steps=5, warmup=2)(x, ct)
    b = ADV2(net, g, steps=5, warmup=2, objective="adv2")(x, ct)
    assert torch.equal(a.x_adv, b.x_adv)


def test_parse_eps():
    assert parse_eps("1/255, 0.5") == (1 / 255, 0.5)
    for bad in ("0", "2", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_eps(bad)


def test_adv2_audit_end_to_end(tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "--interpreter", "cam,captum-saliency", "--eps", "2/255,8/255", "-n", "2", "--steps", "3",
                 "--samples", "2", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "audit.json").read_text())
    assert (out / "audit.png").stat().st_size > 1000
    rows = data["rows"]
    assert len(rows) == 2 * 2 * 3
    for r in rows:
        assert {"interpreter", "objective", "eps", "success_rate", "l1", "random_l1"} <= set(r)
        assert 0 <= r["success_rate"] <= 1 and r["random_l1"] >= 0
        if r["objective"] == "manipulate":  # the same two maps: image i's and image i−1's
            assert r["unrelated_l1"] == pytest.approx(r["l1_start"])
        assert 0 < r["unrelated_l1"] <= 1
    assert {r["objective"] for r in rows} == {"adv2", "manipulate", "fragility"}
    assert "random_l1" in capsys.readouterr().out
    assert main(["audit", "--interpreter", "captum-occlusion", "--out", str(out)]) == 2
    assert main(["audit", "--eps", "9/255,3", "--out", str(out)]) == 2
