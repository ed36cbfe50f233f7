"""The user's own model through every command: a factory ``package.module:function`` in a config or
on the command line, a model object from Python, timm architectures, the model's identity in the
run directory (a resume with another model is refused) and the one-line errors for bad models."""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap

import pytest
import torch
import yaml
from safetensors.torch import save_file

import adv2
from adv2.cli import main
from adv2.experiments.audit import run_audit
from adv2.experiments.config import load_config, resolve, run_config
from adv2.experiments.runner import run_experiment
from adv2.experiments.sources import build_model
from adv2.interpreters import layers
from adv2.interpreters.base import unwrap
from adv2.interpreters.timm_layers import timm_site

PKG = "adv2_userpkg"
NETS = textwrap.dedent('''
    """A user's package: a classifier that is no torchvision architecture, and factories."""
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, width=4, num_classes=10):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))


    def make(width=4, num_classes=10):
        return TinyNet(width, num_classes)


    def not_a_model(**kwargs):
        return "a string"


    class Flat(TinyNet):
        def forward(self, x):
            return super().forward(x).sum(1)


    def make_flat():
        return Flat()


    class Pair(TinyNet):
        def forward(self, x):
            return super().forward(x), x


    def make_pair():
        return Pair()
''')
#: The run's tiny settings: 2 images, 2 steps, grad and cam, pgd and adv2. TinyNet is no
#: architecture adv2 knows: CAM's layer and head are read from the order of its children.
TINY = ["data.n=2", "batch_size=2", "attacks.steps=2", "interpreters=[grad, cam]", "attacks=[pgd, adv2]"]


def _sets(items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project folder with the package ``adv2_userpkg`` and two weights files of TinyNet
    (random initialisations under two seeds, saved as safetensors)."""
    root = tmp_path_factory.mktemp("project")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text("")
    (root / PKG / "nets.py").write_text(NETS)
    (root / PKG / "broken.py").write_text("import adv2_no_such_dependency\n")
    saved = list(sys.path)
    sys.path.insert(0, str(root))
    try:
        nets = importlib.import_module(f"{PKG}.nets")
    finally:
        sys.path[:] = saved
    for seed, name in ((0, "tiny.safetensors"), (1, "other.safetensors")):
        torch.manual_seed(seed)
        save_file(nets.make().state_dict(), str(root / name))
    yield root, nets
    for mod in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
        del sys.modules[mod]


@pytest.fixture
def in_project(project, monkeypatch):
    """Work in the project folder, as a user would (``sys.path`` restored afterwards)."""
    root, nets = project
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return root, nets


def _tiny_net(nets, root, weights="tiny.safetensors"):
    net = nets.make()
    net.load_state_dict(adv2.models.loading._read_state(root / weights))
    return net


def _snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("adv2: error: ")
    return err


def test_factory_config_runs_through_cli(in_project, capsys):
    root, _ = in_project
    out = root / "runs" / "cli"
    rc = main(["run", "q1", "--out", str(out), "--no-progress",
               *_sets([f"model={PKG}.nets:make", "model.weights=tiny.safetensors", "model.label=tiny", *TINY])])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "tiny"
    assert {(r["attack"], r["interpreter"]) for r in summary["rows"]} == {
        ("pgd", "grad"), ("adv2", "grad"), ("pgd", "cam"), ("adv2", "cam")}
    assert (out / "report.html").is_file()
    ident = json.loads((out / "model.json").read_text())
    assert ident["label"] == "tiny" and ident["class"] == f"{PKG}.nets.TinyNet" and len(ident["sha256"]) == 64

    # a resume with other weights in the same file: refused in one line, nothing overwritten
    before = _snapshot(out)
    (root / "tiny.safetensors").rename(root / "tiny.bak")
    try:
        (root / "tiny.safetensors").write_bytes((root / "other.safetensors").read_bytes())
        rc = main(["run", "q1", "--out", str(out), "--no-progress",
                   *_sets([f"model={PKG}.nets:make", "model.weights=tiny.safetensors", "model.label=tiny", *TINY])])
    finally:
        (root / "tiny.safetensors").unlink()
        (root / "tiny.bak").rename(root / "tiny.safetensors")
    assert rc == 2
    err = _one_line_error(capsys)
    assert "another model: weights differ" in err and "label differs" not in err and "class differs" not in err
    assert _snapshot(out) == before


def test_demo_takes_a_factory(in_project, capsys):
    root, _ = in_project
    out = root / "runs" / "demo"
    rc = main(["demo", "--model", f"{PKG}.nets:make", "--weights", "tiny.safetensors", "-n", "2", "--interpreters",
               "grad", "--attacks", "pgd", "--set", "pgd.steps=1", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["model"] == "make:tiny"
    assert json.loads((out / "model.json").read_text())["class"] == f"{PKG}.nets.TinyNet"


def test_factory_mapping_with_kwargs_and_normalisation(in_project, tmp_path):
    root, _ = in_project
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{factory: "{PKG}.nets:make", kwargs: {{width: 4}}, weights: {root / 'tiny.safetensors'},
                 mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], label: mine}}
        data: {{name: shapes, n: 2, seed: 0}}
        interpreters: [grad]
        attacks: [pgd]
        budgets: fast
    """))
    resolved = load_config(cfg, ["attacks.steps=1"])
    net = build_model(resolved["model"], size=64)
    assert isinstance(net, adv2.models.Normalized) and not net.training
    assert torch.allclose(net.std.flatten(), torch.full((3,), 0.25))
    summary = run_experiment(resolved, tmp_path / "run", progress=False, verbose=False)
    assert summary["model"] == "mine"


def test_model_object_from_python(in_project, tmp_path):
    root, nets = in_project
    net = _tiny_net(nets, root)
    net.train()  # fresh from a constructor: the run uses eval mode and gives the mode back
    out = tmp_path / "obj"
    summary = run_config("q1", out, overrides=TINY, model=net, label="tinyobj", progress=False, verbose=False)
    assert net.training and all(m.training for m in net.modules())
    assert summary["model"] == "tinyobj"
    assert (out / "report.html").is_file()
    assert "tinyobj" in (out / "report.html").read_text()
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["model"] == {"object": f"{PKG}.nets.TinyNet", "label": "tinyobj"}
    ident = json.loads((out / "model.json").read_text())
    assert ident == adv2.models.model_identity(net, "tinyobj")

    # the same object resumes (nothing to do); another model's weights are refused, nothing overwritten
    again = run_experiment(load_config("q1", TINY), out, model=net, label="tinyobj", progress=False, verbose=False)
    assert again["rows"] == summary["rows"]
    before = _snapshot(out)
    other = _tiny_net(nets, root, "other.safetensors")
    with pytest.raises(ValueError, match="another model: weights differ") as e:
        run_experiment(load_config("q1", TINY), out, model=other, label="tinyobj", progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="label differs") as e:
        run_experiment(load_config("q1", TINY), out, model=net, label="renamed", progress=False)
    assert "weights differ" not in str(e.value)
    assert _snapshot(out) == before

    with pytest.raises(ValueError, match="run_config"):
        run_experiment("q1", tmp_path / "x", model=net)


def test_run_audit_on_object_and_cli(in_project, tmp_path, capsys):
    root, nets = in_project
    net = _tiny_net(nets, root)
    kw = dict(interpreter_names=("grad",), eps=(4 / 255,), objectives=("adv2",), data="shapes", n=2, steps=2,
              samples=1, progress=False, verbose=False)
    res = run_audit(model=net, label="tinyobj", out=tmp_path / "a1", **kw)
    assert res["model"] == "tinyobj" and res["model_identity"]["class"] == f"{PKG}.nets.TinyNet"
    assert (tmp_path / "a1" / "audit.png").is_file()
    res_pos = run_audit(net, out=tmp_path / "a2", **kw)  # the object as the first argument; label: class name
    assert res_pos["model"] == "TinyNet" and res_pos["model_identity"]["sha256"] == res["model_identity"]["sha256"]

    rc = main(["audit", "--model", f"{PKG}.nets:make", "--weights", "tiny.safetensors", "--data", "shapes",
               "-n", "2", "--steps", "2", "--samples", "1", "--eps", "4/255", "--objectives", "adv2",
               "--interpreter", "grad", "--out", str(tmp_path / "a3"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    cli = json.loads((tmp_path / "a3" / "audit.json").read_text())
    assert cli["model"] == "make:tiny"
    assert cli["model_identity"]["sha256"] == res["model_identity"]["sha256"]


def test_cwd_is_put_on_sys_path(in_project, monkeypatch):
    root, _ = in_project
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != str(root)])
    fn = adv2.models.factory.import_factory(f"{PKG}.nets:make")
    assert callable(fn) and str(root) in sys.path


@pytest.mark.parametrize("ref, weights, expected", [
    ("adv2_no_such_pkg.nets:make", None, "cannot import module 'adv2_no_such_pkg.nets' (ModuleNotFoundError"),
    (f"{PKG}.broken:make", None, "No module named 'adv2_no_such_dependency'"),
    (f"{PKG}.nets:nope", None, "has no attribute 'nope'"),
    (f"{PKG}.nets:not_a_model", None, "returned a str, not a torch.nn.Module"),
    (f"{PKG}.nets:make_flat", None, "returns (2,)"),
    (f"{PKG}.nets:make_pair", None, "returns a tuple, not a tensor of logits"),
    (f"{PKG}.nets:make", "wrong.safetensors", "missing keys ['fc.bias', 'fc.weight']; unexpected keys ['head.bias'"),
])
def test_bad_models(in_project, capsys, ref, weights, expected):
    root, nets = in_project
    if weights == "wrong.safetensors":
        state = {k.replace("fc.", "head."): v for k, v in nets.make().state_dict().items()}
        save_file(state, str(root / weights))
    with pytest.raises(ValueError) as e:
        build_model({"factory": ref, **({"weights": weights} if weights else {})})
    assert expected in str(e.value) and "\n" not in str(e.value)
    args = ["audit", "--model", ref, "--data", "shapes", "-n", "2", "--steps", "1", "--samples", "1",
            "--objectives", "adv2", "--interpreter", "grad", "--no-progress", "--out", str(root / "bad")]
    assert main(args + (["--weights", weights] if weights else [])) == 2
    assert expected in _one_line_error(capsys)
    assert main(["run", "q1", "--no-progress", "--out", str(root / "bad"),
                 *_sets([f"model.factory={ref}", *([f"model.weights={weights}"] if weights else []), *TINY])]) == 2
    assert expected in _one_line_error(capsys)


def test_bad_model_objects(tmp_path):
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        run_experiment(load_config("q1", TINY), tmp_path / "o", model="shapes-resnet")
    with pytest.raises(ValueError, match=r"returns \(2, 10, 64, 64\)"):
        run_audit(model=torch.nn.Conv2d(3, 10, 1), out=tmp_path / "c", data="shapes", n=2, steps=1, samples=1,
                  progress=False, verbose=False)


def test_config_schema_for_factories(in_project):
    with pytest.raises(ValueError, match="both name and factory"):
        resolve({"model": {"name": "resnet18", "factory": f"{PKG}.nets:make"}})
    with pytest.raises(ValueError, match="package.module:function"):
        resolve({"model": {"factory": "not a reference"}})
    with pytest.raises(ValueError, match="num_classes does not apply to a factory"):
        resolve({"model": {"factory": f"{PKG}.nets:make", "num_classes": 10}})
    with pytest.raises(ValueError, match="kwargs applies to a factory"):
        resolve({"model": {"name": "resnet18", "kwargs": {}}})
    with pytest.raises(ValueError, match="both mean and std"):
        resolve({"model": {"factory": f"{PKG}.nets:make", "mean": [0.5, 0.5, 0.5]}})
    # --set model.factory replaces a named model (and the reverse)
    cfg = load_config("q1", ["model.weights=tiny.safetensors", f"model.factory={PKG}.nets:make"])
    assert cfg["model"] == {"factory": f"{PKG}.nets:make", "weights": "tiny.safetensors"}
    assert load_config("q1", [f"model.factory={PKG}.nets:make", "model.name=resnet18"])["model"] == {"name": "resnet18"}
    assert load_config("q1", [f"model={PKG}.nets:make"])["model"] == f"{PKG}.nets:make"


def test_timm_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'adv2\[timm\]'"):
        build_model({"name": "timm/resnet18"})


TIMM_CASES = {"resnet18": ("layer4", "fc", False), "convnext_atto": ("stages.3", "head.fc", True)}


@pytest.fixture(params=sorted(TIMM_CASES))
def timm_model(request, tmp_path):
    timm = pytest.importorskip("timm")
    arch = request.param
    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, num_classes=10)
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = adv2.models.load(f"timm/{arch}", weights=path, num_classes=10)
    return arch, net, model, path


def test_timm_loads_with_its_normalisation(timm_model):
    arch, net, model, path = timm_model
    assert isinstance(model, adv2.models.Normalized) and not model.training
    assert torch.allclose(model.mean.flatten(), torch.tensor(net.pretrained_cfg["mean"]))
    assert torch.allclose(model.std.flatten(), torch.tensor(net.pretrained_cfg["std"]))
    x = torch.rand(2, 3, 64, 64)
    net.eval()
    assert torch.allclose(model(x), net((x - model.mean) / model.std), atol=1e-5)
    assert build_model({"name": f"timm/{arch}", "weights": str(path), "num_classes": 10})(x).shape == (2, 10)
    with pytest.raises(ValueError, match="do not match the architecture"):
        adv2.models.load(f"timm/{arch}", weights=path, num_classes=5)
    with pytest.raises(ValueError, match="unknown timm architecture"):
        adv2.models.load("timm/resnet_nope", num_classes=10)


def test_timm_sites_maps_and_gradients(timm_model, monkeypatch):
    arch, _, model, _ = timm_model
    layer_name, head_name, has_norm = TIMM_CASES[arch]
    net = unwrap(model)
    spec = timm_site(net)
    assert spec["layer_name"] == layer_name and spec["head"] is net.get_submodule(head_name)
    assert (spec["norm"] is not None) == has_norm and spec["cam_refusal"] is None
    # the dispatch layers.py gets: FeatureSite(**timm_site(net)) for timm models
    auto = layers._auto_site
    monkeypatch.setattr(layers, "_auto_site", lambda n: layers.FeatureSite(**timm_site(n)) if timm_site(n) else auto(n))
    x = torch.rand(2, 3, 64, 64)
    t = torch.tensor([1, 7])
    site = layers.find_site(model)
    with layers.capture(site) as cap, torch.no_grad():
        logits = model(x)
    site.check_cam(cap.value, logits)  # CAM is exact (ConvNeXt: the head's LayerNorm folded)
    for g, shape in ((adv2.interpreters.GradCAM(model), (2, 1, 2, 2)), (adv2.interpreters.CAM(model), (2, 1, 2, 2)),
                     (adv2.interpreters.Grad(model), (2, 1, 64, 64))):
        xr = x.clone().requires_grad_(True)
        with adv2.interpreters.smooth_relu():
            m = g(xr, t)
        assert m.shape == shape and float(m.detach().min()) >= 0 and float(m.detach().max()) <= 1
        (grad,) = torch.autograd.grad((m * torch.rand_like(m)).sum(), xr)
        assert grad.abs().sum() > 0, type(g).__name__
    # without the monkeypatched dispatch, Grad-CAM works on the named layer
    monkeypatch.undo()
    m = adv2.interpreters.GradCAM(model, layer=layer_name)(x, t)
    assert m.shape == (2, 1, 2, 2)


def test_timm_refusals():
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=16)
    with pytest.raises(ValueError, match="token-based"):
        timm_site(vit)
    mnv3 = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10)
    spec = timm_site(mnv3)
    assert spec["layer_name"] == "blocks" and "CAM does not apply" in spec["cam_refusal"]
    assert timm_site(torch.nn.Linear(2, 2)) is None
