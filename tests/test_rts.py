"""RTS: the saliency network, its training (loss, resume, checkpoints), ADV² against it and AID."""

import json

import pytest
import torch

import adv2
from adv2.attacks import ADV2
from adv2.defenses import aid
from adv2.interpreters import RTS, RTSNet, get
from adv2.interpreters.rts import RECIPE, fingerprint, read_rts, rts_loss, save_rts, shipped_path, train_rts

EPS = 0.031
TINY = dict(width=4, batch_size=8, steps=6, checkpoint_every=3)


@pytest.fixture(scope="module")
def train_data():
    x, y, _ = adv2.data.shapes(64, split="train", seed=0)
    return x, y


@pytest.fixture(scope="module")
def rts(resnet_model):
    return RTS.load("shapes-resnet", model=resnet_model)


def test_network_shapes_and_ranges():
    torch.manual_seed(0)
    net = RTSNet(10, width=4).eval()
    x = torch.rand(3, 3, 64, 96)
    mask, head = net(x, torch.tensor([0, 4, 9]))
    assert mask.shape == (3, 1, 16, 24) and head.shape == (3, 10)
    assert mask.min() >= 0 and mask.max() <= 1


def test_shipped_maps_point_at_the_object_and_the_selector_works(rts, shapes_test):
    x, y, masks = shapes_test
    with torch.no_grad():
        m = rts(x, y)
        wrong = rts(x, (y + 3) % 10)
    assert m.shape == (16, 1, 16, 16) and 0 <= m.min() and m.max() <= 1
    assert adv2.metrics.pointing_game(m, masks).float().mean() >= 0.75
    # changing the class changes the map: a class the image does not show has an (almost) empty mask
    assert ((m - wrong).abs().flatten(1).mean(1) > 0.02).float().mean() >= 0.9
    assert wrong.mean() < 0.5 * m.mean()


def test_get_finds_the_shipped_network_and_refuses_unknown_models(resnet_model, densenet_model):
    assert get("rts", resnet_model).meta["classifier"] == "shapes-resnet"
    assert get("rts", densenet_model).meta["classifier"] == "shapes-densenet"
    assert get("rts-aid", resnet_model).name == "rts-aid"
    other = adv2.models.load("resnet18", num_classes=10)
    with pytest.raises(ValueError, match="no shipped RTS"):
        get("rts", other)


def test_a_checkpoint_for_another_classifier_or_class_count_is_refused(densenet_model, tmp_path):
    with pytest.raises(ValueError, match="another classifier"):
        RTS(densenet_model, checkpoint=shipped_path("shapes-resnet"))
    five = adv2.models.load("resnet18", num_classes=5)
    with pytest.raises(ValueError, match="10-class classifier, but this model has 5"):
        RTS(five, checkpoint=shipped_path("shapes-resnet"))
    bad = tmp_path / "not-rts.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="not an adv2 RTS checkpoint"):
        RTS(densenet_model, checkpoint=bad)
    with pytest.raises(ValueError, match="not found"):
        RTS(densenet_model, checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not an embedded model name"):
        RTS.load("my-model")


def test_saved_and_reloaded_network_gives_identical_maps(resnet_model, shapes_test, tmp_path):
    torch.manual_seed(1)
    net = RTSNet(10, width=4).eval()
    path = save_rts(net, tmp_path / "r.safetensors", resnet_model, classifier="test")
    _, meta = read_rts(path)
    assert meta["fingerprint"] == fingerprint(resnet_model) and meta["width"] == "4"
    g = RTS(resnet_model, checkpoint=path)
    x, y, _ = shapes_test
    with torch.no_grad():
        assert torch.equal(g(x[:4], y[:4]), net(x[:4], y[:4])[0])


def test_training_loss_decreases_on_a_tiny_run(resnet_model, train_data):
    x, y = train_data
    recipe = {**RECIPE, **TINY}
    torch.manual_seed(0)
    fixed = RTSNet(10, width=4)
    c = y[:16].clone()
    with torch.no_grad():
        # batch statistics in both (an untrained network's running statistics mean nothing)
        before = rts_loss(resnet_model, fixed.train(), x[:16], y[:16], c, recipe)[0].item()
    torch.manual_seed(0)  # train_rts seeds the same initialisation
    g = train_rts(resnet_model, x, y, seed=0, progress=False, **{**TINY, "steps": 40, "lr": 3e-3})
    rec = g.record
    with torch.no_grad():
        after = rts_loss(resnet_model, g.net.train(), x[:16], y[:16], c, recipe)[0].item()
    assert after < 0.8 * before
    assert rec["log"][-1]["step"] == 40


def test_training_never_touches_the_classifier(resnet_model, train_data):
    x, y = train_data
    before = {k: v.clone() for k, v in resnet_model.state_dict().items()}
    for p in resnet_model.parameters():  # other tests may have left gradients on the shared model
        p.grad = None
    train_rts(resnet_model, x, y, seed=0, progress=False, **{**TINY, "steps": 2})
    assert not resnet_model.training
    assert all(torch.equal(v, before[k]) for k, v in resnet_model.state_dict().items())
    assert all(p.grad is None for p in resnet_model.parameters())
    # a classifier in train mode is explained in eval mode and handed back in train mode, unchanged
    import copy

    m = copy.deepcopy(resnet_model).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    g = train_rts(m, x, y, seed=0, progress=False, **{**TINY, "steps": 2})
    assert m.training and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert not g.net.training and not any(p.requires_grad for p in g.net.parameters())


def test_a_resumed_training_equals_an_uninterrupted_one(resnet_model, train_data, tmp_path):
    x, y = train_data
    full = train_rts(resnet_model, x, y, out=tmp_path / "a", name="t", seed=3, progress=False, **TINY)
    train_rts(resnet_model, x, y, out=tmp_path / "b", name="t", seed=3, progress=False, stop_after=4, **TINY)
    ckpt = tmp_path / "b" / "rts-t.ckpt"
    assert ckpt.exists() and not (tmp_path / "b" / "rts-t.safetensors").exists()
    resumed = train_rts(resnet_model, x, y, out=tmp_path / "b", name="t", seed=3, progress=False, **TINY)
    assert not ckpt.exists() and (tmp_path / "b" / "rts-t.safetensors").exists()
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another seed must not silently continue this checkpoint
    train_rts(resnet_model, x, y, out=tmp_path / "c", name="t", seed=3, progress=False, stop_after=1, **TINY)
    with pytest.raises(ValueError, match="another run"):
        train_rts(resnet_model, x, y, out=tmp_path / "c", name="t", seed=4, progress=False, **TINY)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=-1.0), dict(fake=1.0), dict(area=float("nan")),
                                 dict(bogus=1), dict(batch_size=2.5)])
def test_bad_training_settings_are_clear_errors(resnet_model, train_data, bad):
    x, y = train_data
    with pytest.raises(ValueError):
        train_rts(resnet_model, x, y, progress=False, **bad)


def test_bad_training_data_is_a_clear_error(resnet_model, train_data):
    x, y = train_data
    with pytest.raises(ValueError, match="y"):
        train_rts(resnet_model, x, y[:10], progress=False, steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_rts(resnet_model, x * 2, y, progress=False, steps=1)


@pytest.mark.slow
def test_adv2_against_rts_keeps_the_map_and_the_budget(resnet_model, rts, shapes_test):
    x, y, _ = shapes_test
    x, y = x[:8], y[:8]
    ct = (y + 1) % 10
    benign = rts(x, y)
    res = ADV2(resnet_model, rts, eps=EPS, warmup=20, steps=60)(x, ct, target_map=benign)
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.success.float().mean() >= 0.75
    pgd = adv2.attacks.PGD(resnet_model, eps=EPS, steps=80)(x, ct)
    d_adv2 = adv2.metrics.lp_distance(res.map, benign, p=1)
    d_pgd = adv2.metrics.lp_distance(rts(pgd.x_adv, ct), benign, p=1)
    assert d_adv2.mean() < 0.6 * d_pgd.mean()


def test_the_encoder_term_reaches_the_image(resnet_model, rts, shapes_test):
    from adv2.attacks.adv2 import AttackContext

    x, y, _ = shapes_test
    x = x[:2].clone().requires_grad_(True)
    ct = (y[:2] + 1) % 10
    ctx = AttackContext(x.detach(), ct, rts(x.detach(), y[:2]), EPS)
    _, d, cand, aux = rts.tracker(lam_enc=0.1)(ctx, x, 0, False)
    (g_aux,) = torch.autograd.grad(aux.sum(), x, retain_graph=True)
    (g_d,) = torch.autograd.grad(d.sum(), x)
    assert aux.shape == (2,) and g_aux.abs().sum() > 0 and g_d.abs().sum() > 0
    assert rts.tracker(lam_enc=0)(ctx, x, 0, False)[3] is None
    with pytest.raises(ValueError, match="lam_enc"):
        ADV2(resnet_model, rts, lam_enc=-1)


@pytest.mark.slow
def test_aid_fine_tunes_a_copy_and_resumes_exactly(resnet_model, rts, train_data, tmp_path):
    x, y = train_data
    before = {k: v.clone() for k, v in rts.net.state_dict().items()}
    kw = dict(steps=3, aid_batch=4, checkpoint_every=2, attack={"warmup": 2, "steps": 3})
    with pytest.raises(ValueError, match="bad AID attack setting"):
        aid(resnet_model, rts, x, y, progress=False, attack={"bogus": 1})
    full = aid(resnet_model, rts, x, y, out=tmp_path / "a", name="t", seed=0, progress=False, **kw)
    rec = full.record
    assert full.name == "rts-aid" and rec["log"][-1]["step"] == 3 and rec["log"][-1]["aid"] >= 0
    assert rec["aid"]["attack"]["alpha"] == pytest.approx(2 / 255)  # a partial attack setting keeps the others
    assert all(torch.equal(v, before[k]) for k, v in rts.net.state_dict().items())  # the input is not changed
    assert any(not torch.equal(v, before[k]) for k, v in full.net.state_dict().items())
    aid(resnet_model, rts, x, y, out=tmp_path / "b", name="t", seed=0, progress=False, stop_after=2, **kw)
    resumed = aid(resnet_model, rts, x, y, out=tmp_path / "b", name="t", seed=0, progress=False, **kw)
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded = RTS(resnet_model, checkpoint=tmp_path / "a" / "rts-aid-t.safetensors")
    assert torch.equal(loaded(x[:2], y[:2]), full(x[:2], y[:2]))
    with pytest.raises(ValueError, match="unknown AID setting"):
        aid(resnet_model, rts, x, y, progress=False, bogus=1)
    with pytest.raises(ValueError, match="adv2.interpreters.RTS"):
        aid(resnet_model, adv2.interpreters.CAM(resnet_model), x, y, progress=False)


def test_cli_train_rts_and_eval_aid(tmp_path, capsys):
    from adv2.cli import main

    assert main(["train-rts", "--model", "resnet50", "--no-progress"]) == 2  # any classifier needs its images
    assert "--data FOLDER" in capsys.readouterr().err
    assert main(["eval-aid", "--n", "4", "--steps", "3", "--large-factor", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "rts-aid" in out and "pointing_game" in out
    res = json.loads((tmp_path / "aid.json").read_text())
    assert set(res) == {"rts", "rts-aid"}
    assert json.loads((tmp_path / "config.json").read_text())["n"] == 4
    for key in ("rts", "rts-aid"):
        assert {"pointing_game", "adv2_success", "adv2_l1", "adv2_iou", "pgd_l1"} <= set(res[key])


@pytest.mark.slow
def test_adv2_flow_against_rts_uses_table_11_and_keeps_the_map(resnet_model, rts, shapes_test):
    from adv2.attacks import StAdv
    from adv2.attacks.adv2 import FLOW_DEFAULTS

    x, y, _ = shapes_test
    x, y = x[:6], y[:6]
    t = (y + 1) % 10
    atk = ADV2(resnet_model, rts, perturbation="flow", steps=150)
    assert atk.lam == FLOW_DEFAULTS["rts"]["lam"] and atk.lam_enc == 0.1 and atk.warmup == 0
    benign = rts(x, y)
    res = atk(x, t, target_map=benign)
    st = StAdv(resnet_model, steps=150, interpreter=rts)(x, t)
    assert res.success.float().mean() >= 5 / 6
    d, d_st = (adv2.metrics.lp_distance(r.map, benign).mean() for r in (res, st))
    assert d < 0.6 * d_st, (d, d_st)
