"""The experiment runner and the audit on the real ImageNet model (EfficientNet-Lite0) and the
shipped photographs: the ``photos`` data source, its labelling rule, the shipped
``imagenet-photos`` config, the refusal of RTS for a model without a trained RTS network."""

import csv
import json

import pytest
import torch
import yaml

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("skimage")

import adv2  # noqa: E402
from adv2.cli import main  # noqa: E402
from adv2.experiments.config import load_config, resolve, shipped_configs  # noqa: E402
from adv2.experiments.sampling import target_classes  # noqa: E402
from adv2.experiments.sources import PhotosData, build_data, select_examples  # noqa: E402

#: a smoke run of the shipped config: 2 photographs, one attack pair, CAM, 2 iterations per attack
TINY = ["--set", "data.n=2", "--set", "interpreters=[cam]", "--set", "attacks=[pgd,adv2]",
        "--set", "attacks.steps=2", "--no-progress"]


@pytest.fixture(scope="module")
def lite0():
    return adv2.models.load("efficientnet-lite0")


def _photos_cfg(**data):
    return {"model": "efficientnet-lite0", "data": {"name": "photos", **data}, "interpreters": ["cam"],
            "attacks": ["pgd"]}


def test_shipped_config_validates():
    assert "imagenet-photos" in shipped_configs()
    cfg = load_config("imagenet-photos")
    assert cfg["model"] == "efficientnet-lite0"
    assert cfg["data"] == {"name": "photos", "size": 224, "augment": "mirror", "n": 8, "seed": 0}
    assert cfg["interpreters"] == ["grad", "cam", "gradcam", "mask"]
    assert cfg["attacks"] == ["pgd", "adv2", "stadv", "adv2-stadv"]
    assert cfg["budgets"]["mask"]["interpreter"]["steps"] == 100


def test_photos_source_config_defaults_and_augment_spellings():
    cfg = resolve(_photos_cfg(n=4))
    assert cfg["data"]["size"] == 224 and cfg["data"]["augment"] == "mirror"
    assert resolve(_photos_cfg(n=4, augment=False))["data"]["augment"] == "none"
    assert resolve(_photos_cfg(n=8, augment=True))["data"]["augment"] == "mirror"
    assert resolve(_photos_cfg(n=16, augment="crops"))["data"]["augment"] == "crops"


@pytest.mark.parametrize("data, words", [
    ({"size": 0}, "data.size"),
    ({"size": "big"}, "data.size"),
    ({"size": 224.0}, "data.size"),
    ({"augment": "rotate"}, "data.augment"),
    ({"augment": ["mirror"]}, "data.augment"),
    ({"augment": "none", "n": 5}, "data.n"),
    ({"n": 9}, "are 8 images"),
    ({"root": "/tmp"}, "data.root"),
    ({"split": "test"}, "data.split"),
])
def test_photos_source_bad_inputs(data, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        resolve(_photos_cfg(**{"n": 2, **data}))


def test_photos_refuse_the_other_target_map():
    with pytest.raises(ValueError, match="target_map other"):
        resolve({**_photos_cfg(n=2), "target_map": "other"})


def test_photos_source_and_the_labelling_rule(lite0):
    data = build_data({"name": "photos", "size": 224, "augment": "mirror", "seed": 0})
    assert isinstance(data, PhotosData) and len(data) == 8 and data.num_classes == 1000
    assert data.classes == adv2.data.imagenet_classes() and not data.has_masks
    assert data.names == adv2.data.photo_names("mirror")
    assert "photos" in data.describe() and "8" in data.describe()
    x, y, m = data.load([0, 4])
    assert m is None and x.shape == (2, 3, 224, 224) and y.tolist() == [281, 281]  # the person's label
    assert torch.equal(x[1], x[0].flip(-1))
    # every photograph is kept, labelled by the model's prediction; targets differ from it
    xs, labels, masks, idx, scanned = select_examples(lite0, data, 8, 0)
    assert idx == list(range(8)) and scanned == 8 and masks is None
    with torch.no_grad():
        assert torch.equal(labels, lite0(xs).argmax(1))
    assert labels[0] != 281  # the tabby is a tiger cat to this model, and is kept all the same
    for seed in range(3):
        ct = target_classes(labels, idx, seed, 1000)
        assert (ct != labels).all() and ((0 <= ct) & (ct < 1000)).all()
    # a model whose outputs do not fit the 1000 ImageNet classes is refused with a hint
    with pytest.raises(ValueError, match="1000 classes.*ImageNet classifier"):
        select_examples(adv2.models.load("shapes-resnet"), data, 1, 0)


@pytest.mark.parametrize("interp, command", [("rts", "adv2 train-rts"), ("rts-aid", "adv2 train-aid")])
def test_rts_is_refused_before_any_work(tmp_path, capsys, interp, command):
    out = tmp_path / "run"
    code = main(["run", "imagenet-photos", "--out", str(out), "--set", f"interpreters=[grad,{interp}]",
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"interpreter {interp}" in err and "efficientnet-lite0" in err and command in err
    assert f"budgets.{interp}.interpreter.checkpoint" in err
    assert not out.exists()  # nothing was started


def test_rts_refusal_names_the_command_for_an_embedded_model():
    from adv2.experiments.runner import _no_rts

    assert _no_rts("rts", "shapes-resnet").endswith("make one with `adv2 train-rts --model shapes-resnet`")
    assert "adv2.interpreters.rts.train_rts" in _no_rts("rts", {"name": "shapes-resnet",
                                                                         "weights": "other.pth"})


@pytest.mark.slow
def test_tiny_run_of_the_shipped_config(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "imagenet-photos", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "efficientnet-lite0" and summary["n"] == 2
    assert {(r["attack"], r["interpreter"]) for r in summary["rows"]} == {("pgd", "cam"), ("adv2", "cam")}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data"]["indices"] == [0, 1] and config["data"]["names"] == ["chelsea", "coffee"]
    assert len(config["classes"]) == 1000
    from safetensors.torch import load_file

    t = load_file(str(out / "tensors.safetensors"))
    assert t["true_labels"].tolist() == [281, 967]
    assert (t["target_class"] != t["labels"]).all()
    with open(out / "examples.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["true_label"] for r in rows} == {"281", "967"}
    for name in ("report.html", "report.md", "maps.png", "figures/maps-cam.png", "figures/summary.png"):
        assert (out / name).is_file(), name
    assert "tiger cat" in (out / "log.txt").read_text()  # the prediction that differs from the label


@pytest.mark.slow
def test_tiny_audit_on_the_photographs(tmp_path):
    from adv2.experiments.audit import run_audit

    res = run_audit("efficientnet-lite0", interpreter_names=("grad", "cam"), eps=(2 / 255,),
                    objectives=("adv2", "manipulate"), n=2, steps=2, samples=1, out=tmp_path / "audit",
                    progress=False, verbose=False)
    assert res["data"] == "photos" and res["n"] == 2 and res["indices"] == [0, 1]
    assert {(r["interpreter"], r["objective"]) for r in res["rows"]} == {
        (i, o) for i in ("grad", "cam") for o in ("adv2", "manipulate")}
    assert all(r["random_l1"] >= 0 for r in res["rows"])
    assert (tmp_path / "audit" / "audit.png").is_file()


def test_audit_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    args = ["audit", "--model", "efficientnet-lite0", "--interpreter", "grad", "--out", str(tmp_path), "--no-progress"]
    assert main([*args, "--data", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite_pytorch", None)  # the extra is missing
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'adv2[imagenet]'" in err
