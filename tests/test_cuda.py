"""adv2 on a CUDA device: every interpreter, both baselines, ADV² in both perturbations and the
runner follow the model's device, and keep their invariants there. Skipped where no GPU is
present (CI has none); on a GPU machine: ``python -m pytest tests/test_cuda.py``."""

import json

import pytest
import torch

import adv2
from adv2.attacks import ADV2, PGD, StAdv
from adv2.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

INTERPRETERS = ["grad", "cam", "gradcam", "mask", "rts"]
SMALL = {"grad": {}, "cam": {}, "gradcam": {}, "rts": {}, "mask": {"n_reset": 1, "n_step": 1, "n_seeds": 1}}


@pytest.fixture(scope="module")
def setup():
    model = adv2.models.load("shapes-resnet", device="cuda")
    x, y, _ = adv2.data.shapes(4, split="test", seed=0)
    x, y = x.cuda(), y.cuda()
    return model, x, y, (y + 1) % 10


def _interpreter(name, model):
    return adv2.interpreters.get(name, model, **({"steps": 10} if name == "mask" else {}))


@pytest.mark.parametrize("name", INTERPRETERS)
def test_maps_on_the_gpu_match_the_cpu(setup, name):
    model, x, y, _ = setup
    m = _interpreter(name, model)(x, y)
    assert m.device.type == "cuda" and m.shape[:2] == (4, 1)  # CAM: at its layer's resolution
    assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    cpu = adv2.models.load("shapes-resnet")
    ref = _interpreter(name, cpu)(x.cpu(), y.cpu())
    tol = 0.05 if name == "mask" else 1e-2  # cuDNN convolutions use TF32; MASK: 10 Adam steps on top
    assert (m.cpu() - ref).abs().mean() < tol


@pytest.mark.parametrize("name", INTERPRETERS)
def test_adv2_linf_on_the_gpu(setup, name):
    model, x, y, ct = setup
    g = _interpreter(name, model)
    benign = g(x, y)
    res = ADV2(model, g, warmup=3, steps=3, **SMALL[name])(x, ct, benign)
    assert res.x_adv.device.type == "cuda" and res.map.device.type == "cuda"
    assert (res.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.map.min() >= 0 and res.map.max() <= 1 and torch.isfinite(res.map).all()


def test_baselines_and_flow_on_the_gpu(setup):
    model, x, y, ct = setup
    g = adv2.interpreters.get("grad", model)
    pgd = PGD(model, steps=10, interpreter=g)(x, ct)
    assert pgd.x_adv.device.type == "cuda" and (pgd.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert pgd.success.float().mean() > 0
    st = StAdv(model, steps=10, interpreter=g)(x, ct)
    assert st.flow.device.type == "cuda" and torch.isfinite(st.flow).all()
    res = ADV2(model, g, perturbation="flow", steps=5)(x, ct, g(x, y))
    assert res.flow.device.type == "cuda" and res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_the_runner_on_the_gpu(tmp_path):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "-n", "4", "--interpreters", "grad,mask", "--attacks", "pgd,adv2,stadv",
                 "--device", "cuda", "--set", "pgd.steps=3", "--set", "grad.warmup=2", "--set", "grad.steps=3",
                 "--set", "mask.warmup=2", "--set", "mask.steps=2", "--set", "mask.n_reset=1",
                 "--set", "mask.n_step=1", "--set", "mask.interpreter.steps=8", "--set", "stadv.steps=3",
                 "--no-progress"]) == 0
    env = json.loads((out / "env.json").read_text())
    assert "cuda" in json.dumps(env)
    assert (out / "summary.json").exists()


def test_the_audit_on_the_gpu(tmp_path):
    assert main(["audit", "--device", "cuda", "-n", "2", "--steps", "2", "--samples", "1", "--interpreter", "grad",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    assert "cuda" in (tmp_path / "audit.json").read_text()
