"""Experiment configs (``adv2 run``): the shipped config, overrides, and clear errors for bad ones."""

import copy
import json
from pathlib import Path

import pytest

from adv2.cli import main
from adv2.experiments.config import load_config
from adv2.experiments.demo import BUDGETS

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_the_shipped_demo_config_is_the_demo():
    cfg = load_config(DEMO)
    budgets = copy.deepcopy(BUDGETS["default"])
    budgets.pop("n")
    assert cfg["budgets"] == budgets and cfg["data"] == {"name": "shapes", "n": BUDGETS["default"]["n"], "seed": 0}
    assert cfg["interpreters"] == ["grad", "cam", "gradcam", "mask", "rts"]
    assert cfg["attacks"] == ["pgd", "adv2", "stadv", "adv2-stadv"] and abs(cfg["alpha"] - 1 / 255) < 1e-12


def test_overrides_and_the_smoke_switch():
    cfg = load_config(DEMO, ["data.n=4", "eps=0.02", "budgets.cam.steps=7", "budgets.mask.flow.n_reset=3"])
    assert cfg["data"]["n"] == 4 and cfg["eps"] == 0.02
    assert cfg["budgets"]["cam"]["steps"] == 7 and cfg["budgets"]["mask"]["flow"]["n_reset"] == 3
    smoke = load_config(DEMO, ["attacks.steps=2"])["budgets"]
    seen = []

    def walk(node):
        for k, v in node.items():
            if k in ("steps", "warmup"):
                seen.append(v)
            elif isinstance(v, dict):
                walk(v)

    walk(smoke)
    assert len(seen) > 10 and set(seen) == {2}


@pytest.mark.parametrize("text, overrides, match", [
    ("modle: shapes-resnet\n", [], "unknown key 'modle'; allowed keys: model, data"),
    ("data: {name: shapes, size: 4}\n", [], "unknown key 'data.size' for data.name shapes; allowed: name, n, seed"),
    ("data: {name: imagenet}\n", [], "data.name must be one of shapes, folder"),
    ("data: {n: 0}\n", [], "data.n must be an integer ≥ 1"),
    ("data: {name: folder}\n", [], "data.root must name the image folder"),
    ("data: {name: folder, root: /nonexistent}\n", [], "image folder '/nonexistent' not found"),
    ("data: {name: shapes, split: dev}\n", [], "data.split must be one of test, train, val"),
    ("model: resnet5O\n", [], "model must be an embedded model name.*got 'resnet5O'"),
    ("model: {name: resnet18, weights: /no/such.pth}\n", [], "model.weights: file '/no/such.pth' not found"),
    ("model: {name: resnet18, wieghts: a.pth}\n", [], "unknown key 'model.wieghts'"),
    ("model: {name: resnet18, std: [1, 0, 1]}\n", [], "model.std must be positive"),
    ("model: {name: resnet18, mean: [1, 2]}\n", [], "model.mean must be a list of 3 numbers"),
    ("device: gpu\n", [], "device must be cpu, cuda, cuda:K or auto"),
    ("target_map: benigh\n", [], "target_map: file 'benigh' not found \\(or use one of benign, other, shape\\)"),
    ("transfer: {models: [nope]}\n", [], r"transfer.models\[0\] must be"),
    ("transfer: {interpreters: 1}\n", [], "transfer.interpreters must be true or false"),
    ("transfer: {model: []}\n", [], "unknown key 'transfer.model'"),
    ("eps: 2\n", [], r"eps must be in \(0, 1\]"),
    ("interpreters: [cam, foo]\n", [], "unknown interpreter 'foo' in interpreters; allowed: grad"),
    ("attacks: [pgd, pgd]\n", [], "attacks must be a non-empty list without repeats"),
    ("budgets: huge\n", [], "budgets must be default, fast, or a mapping"),
    ("batch_size: -1\n", [], "batch_size must be an integer ≥ 1"),
    ("[1, 2]\n", [], "a config must be a mapping"),
    ("model: [\n", [], "not valid YAML"),
    ("{}\n", ["colour=red"], "--set colour: unknown key 'colour'"),
    ("{}\n", ["eps"], "--set expects KEY=VALUE"),
    ("{}\n", ["attacks.steps=0"], "attacks.steps must be an integer ≥ 1"),
    ("{}\n", ["budgets.cam.bogus.x=1"], "unknown setting"),
    ("budgets: {grd: {steps: 1}}\n", [], "unknown budget section 'budgets.grd'"),
    ("budgets: {grad: 5}\n", [], "budgets.grad must be a mapping"),
    ("{}\n", ["data=foo"], "data must be a mapping"),
    ("transfer: {models: [shapes-resnet]}\n", [], "named 'shapes-resnet' like the source model"),
    ("transfer: {models: [shapes-densenet, shapes-densenet]}\n", [], "give it a distinct label"),
    ("defender_seeds: [0]\n", [], "defender_seeds must be the jitter seeds .* at least two"),
    ("defender_seeds: [3, 3]\n", [], "defender_seeds must be"),
    ("defender_seeds: 100\n", [], "defender_seeds must be"),
])
def test_bad_configs_name_the_key_and_the_allowed_values(tmp_path, text, overrides, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(path, overrides)


def test_adv2_run_end_to_end_and_clean_errors(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", str(DEMO), "--out", str(out), "--set", "data.n=2", "--set", "attacks.steps=2",
            "--set", "interpreters=[cam]", "--no-progress"]
    assert main(args) == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [(r["attack"], r["interpreter"]) for r in rows] == [(a, "cam") for a in ("pgd", "adv2", "stadv",
                                                                                   "adv2-stadv")]
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("eps: 5\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "eps must be in (0, 1]" in err and "Traceback" not in err and not (tmp_path / "x").exists()


def test_whole_mapping_overrides_keep_the_defaults_of_their_other_keys():
    cfg = load_config(DEMO, ["data={name: shapes, n: 4}", "transfer={models: [shapes-densenet]}"])
    assert cfg["data"] == {"name": "shapes", "n": 4, "seed": 0}
    assert cfg["transfer"] == {"interpreters": False, "models": ["shapes-densenet"]}
    cfg = load_config(DEMO, ["model={name: resnet18, label: mine}", "transfer.models=[resnet18]"])
    assert cfg["model"]["label"] == "mine"


def test_defender_seeds_the_attack_uses_are_refused(tmp_path, capsys):
    args = ["run", str(DEMO), "--out", str(tmp_path / "x"), "--set", "data.n=2", "--set", "attacks.steps=2",
            "--set", "interpreters=[mask]", "--set", "attacks=[pgd, adv2]", "--set", "defender_seeds=[0, 2]",
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "defender_seeds [2] are jitter seeds adv2 uses against mask (seeds 1..2, rotated at each fresh solve)" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
    # a seed of a later fresh solve (rotated seeds: seed + r·1 000 000 + i) is refused too
    args[args.index("defender_seeds=[0, 2]")] = "defender_seeds=[0, 1000001]"
    assert main(args) == 2
    assert "defender_seeds [1000001] are jitter seeds" in capsys.readouterr().err
