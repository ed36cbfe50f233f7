"""``adv2 run`` beyond the demo: a user's image folder and torchvision model, target-map
policies, transfer measurements, every shipped config in smoke form, and the HTML report
(rendered in headless Chromium)."""

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from adv2 import interpreters, metrics, models
from adv2.cli import main
from adv2.experiments.config import shipped_configs
from adv2.experiments.sources import FolderData, ShapesData, select_examples
from adv2.experiments.targets import read_map, shape_map

SMOKE = ["--set", "data.n=2", "--set", "attacks.steps=2", "--no-progress"]


def write_folder(root: Path, classes=("cat<b>&$1$", "dog"), per_class=5, size=(72, 90)) -> Path:
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 80, size=(*size, 3)).astype(np.uint8)
            a[15:55, 20:60, k % 3] = 220
            Image.fromarray(a).save(d / f"img{i}.png")
    return root


def write_resnet(path: Path, num_classes: int, bias=None) -> Path:
    torch.manual_seed(0)
    import torchvision

    net = torchvision.models.resnet18(num_classes=num_classes)
    if bias is not None:
        with torch.no_grad():
            net.fc.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    torch.save(net.state_dict(), path)
    return path


def write_config(path: Path, **cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A user's folder of PNGs (class names with HTML characters) and a random-init torchvision
    ResNet-18 saved to a .pth, run end to end by ``adv2 run``."""
    tmp = tmp_path_factory.mktemp("user")
    root = write_folder(tmp / "images")
    weights = write_resnet(tmp / "r18.pth", 2)
    cfg = write_config(tmp / "mine.yaml", model={"name": "resnet18", "weights": str(weights), "num_classes": 2},
                       data={"name": "folder", "root": str(root), "size": 64, "n": 3, "seed": 1},
                       interpreters=["grad", "cam", "gradcam"], attacks=["pgd", "adv2"], batch_size=2,
                       budgets={"pgd": {"steps": 5},
                                **{k: {"warmup": 2, "steps": 3} for k in ("grad", "cam", "gradcam")}})
    out = tmp / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return out, root


def test_a_users_folder_and_torchvision_weights_run_end_to_end(user_run):
    out, root = user_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    data = FolderData(root, 64)
    assert config["classes"] == ["cat<b>&$1$", "dog"] and len(config["data"]["indices"]) == 3
    rows = list(csv.DictReader(open(out / "examples.csv")))
    assert len(rows) == 3 * 2 * 3
    for r in rows:
        i = int(r["index"])
        assert int(r["label"]) == data.labels[i] and int(r["target"]) == 1 - int(r["label"])
        assert float(r["linf"]) <= 0.031 + 1e-6
    # the kept images are the ones the model classifies correctly
    tensors = load_file(out / "tensors.safetensors")
    net = models.load("resnet18", weights=out.parent / "r18.pth", num_classes=2)
    assert torch.equal(net(tensors["x"]).argmax(1), tensors["labels"])
    assert tensors["x"].shape == (3, 3, 64, 64) and "masks" not in tensors
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["attack"], r["interpreter"]) for r in summary["rows"]} == {
        (a, i) for a in ("pgd", "adv2") for i in ("grad", "cam", "gradcam")}


def test_folder_sampling_is_class_balanced_seeded_and_batch_free(tmp_path):
    root = write_folder(tmp_path / "f", classes=("a", "b", "c"), per_class=4)
    data = FolderData(root, 32)
    order = list(data.order(seed=3))
    assert sorted(order) == list(range(12))
    assert [data.labels[i] for i in order[:6]] == [0, 1, 2, 0, 1, 2]  # round-robin across classes
    assert order == list(data.order(seed=3)) and order != list(data.order(seed=4))

    class Always(torch.nn.Module):  # "classifies" everything as its true class by looking it up
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].mul(0).long(), 3).float()  # always class 0

    x, y, m, idx, scanned = select_examples(Always(), data, 3, seed=3, chunk=2)
    assert m is None and y.tolist() == [0, 0, 0] and idx == [i for i in order if data.labels[i] == 0][:3]


@pytest.mark.parametrize("case, match", [
    ("empty", "no images under"),
    ("none_correct", "classifies 0 of the 10 images"),
    ("classes", "the model has 1000 outputs, but the data"),
    ("cuda", "CUDA is not available"),
])
def test_user_mistakes_give_one_clear_line_and_exit_code_2(tmp_path, case, match, capsys):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root = tmp_path / "images"
    if case == "empty":
        (root / "a").mkdir(parents=True), (root / "b").mkdir()
    else:
        write_folder(root, classes=("0", "1"))
    model = {"name": "resnet18", "weights": str(write_resnet(tmp_path / "w.pth", 3, bias=[0, 0, 50])),
             "num_classes": 3}
    data = {"name": "folder", "root": str(root), "size": 32, "n": 2, "labels": "numeric"}
    if case == "classes":
        model, data = "resnet18", {**data, "labels": "sorted"}
    cfg = write_config(tmp_path / "c.yaml", model=model, data=data, interpreters=["grad"], attacks=["pgd"],
                       device="cuda" if case == "cuda" else "cpu")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_shape_targets_are_seeded_shapes_in_range():
    a, b = shape_map(16, 24, seed=0, index=5), shape_map(16, 24, seed=0, index=5)
    assert torch.equal(a, b) and a.shape == (1, 16, 24) and 0 <= a.min() and a.max() <= 1
    area = float((shape_map(64, 64, 0, 5) > 0.5).float().mean())
    assert 0.05 < area < 0.4
    assert not torch.equal(shape_map(16, 16, 0, 5), shape_map(16, 16, 0, 6))


def test_map_files_are_read_and_bad_ones_named(tmp_path):
    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))).save(tmp_path / "m.png")
    m = read_map(tmp_path / "m.png")
    assert m.shape == (1, 1, 8, 16) and float(m.min()) == 0 and abs(float(m.max()) - 240 / 255) < 1e-6
    np.save(tmp_path / "m.npy", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="cannot read"):
        read_map(tmp_path / "m.npy")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match="must be one of .png"):
        read_map(tmp_path / "m.txt")


def _distances_match_target(out, policy_key="target"):
    tensors = load_file(out / "tensors.safetensors")
    rows = list(csv.DictReader(open(out / "examples.csv")))
    for name in {r["interpreter"] for r in rows}:
        for attack in {r["attack"] for r in rows}:
            l1 = metrics.lp_distance(tensors[f"map_{attack}_{name}"], tensors[f"map_{policy_key}_{name}"], p=1)
            got = [float(r["l1"]) for r in rows if r["attack"] == attack and r["interpreter"] == name]
            assert np.allclose(got, l1.tolist(), atol=1e-6), (attack, name)
    return tensors


def test_target_map_other_is_the_map_of_another_image_of_the_target_class(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "q2", "--out", str(out), "--set", "target_map=other", "--set", "interpreters=[cam]",
                 *SMOKE]) == 0
    tensors = _distances_match_target(out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    data = ShapesData("test", 0)
    xd, yd, _ = data.load(config["data"]["donors"])
    assert torch.equal(yd, tensors["target_class"]) and torch.equal(xd, tensors["x_donor"])
    assert all(d != i for d, i in zip(config["data"]["donors"], config["data"]["indices"], strict=True))
    net = models.load("shapes-resnet")
    g = interpreters.get("cam", net)
    assert torch.allclose(g(xd, yd), tensors["map_target_cam"], atol=1e-6)


def test_target_map_shape_and_file(tmp_path):
    out = tmp_path / "shape"
    assert main(["run", "q4", "--out", str(out), "--set", "interpreters=[cam]", *SMOKE]) == 0
    tensors = _distances_match_target(out)
    idx = yaml.safe_load((out / "config.yaml").read_text())["data"]["indices"]
    assert torch.equal(tensors["map_target_cam"][1], shape_map(8, 8, 0, idx[1]))
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(tmp_path / "diag.png")
    out = tmp_path / "file"
    assert main(["run", "q4", "--out", str(out), "--set", f"target_map={tmp_path / 'diag.png'}",
                 "--set", "interpreters=[grad]", *SMOKE]) == 0
    tensors = _distances_match_target(out)
    t = tensors["map_target_grad"]
    assert torch.equal(t[0], t[1]) and t.shape[-1] == 64 and float(t[0, 0, 0, 0]) > 0.9 > float(t[0, 0, 0, -1])


@pytest.mark.parametrize("name", ["demo", "q1", "q2", "q3", "q4", "transfer-models"])
def test_every_shipped_config_runs_in_smoke_form(tmp_path, name):
    assert name in shipped_configs()
    # the checkout's configs/ holds the same files the package ships
    repo = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    assert repo.is_file()
    out = tmp_path / name
    assert main(["run", name, "--out", str(out), *SMOKE]) == 0
    summary = json.loads((out / "summary.json").read_text())
    config = yaml.safe_load(repo.read_text())
    assert {r["attack"] for r in summary["rows"]} == set(config["attacks"])
    assert {r["interpreter"] for r in summary["rows"]} == set(config["interpreters"])
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    if name == "q3":  # a full matrix: ADV² made against every A, measured under every B
        t = [r for r in summary["transfer"] if r["attack"] == "adv2"]
        k = len(config["interpreters"])
        assert len(t) == k * k and {r["model"] for r in t} == {"shapes-resnet"}
        diag = {r["interpreter"]: r["l1"] for r in t if r["interpreter"] == r["measured_by"]}
        main_rows = {r["interpreter"]: r["l1"] for r in summary["rows"] if r["attack"] == "adv2"}
        assert diag == pytest.approx(main_rows)
        assert (out / "figures" / "transfer-adv2.png").is_file()
    if name == "transfer-models":
        t = summary["transfer"]
        assert {r["model"] for r in t} == {"shapes-densenet"} and len(t) == 2 * len(config["interpreters"])
        assert all(0 <= r["success_rate"] <= 1 for r in t)
        assert (out / "figures" / "transfer-models.png").is_file()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  document.body.setAttribute('data-text', document.body.innerText.length);
});</script></body>"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(user_run, tmp_path):
    """Every image of the page loads (they are embedded), the page is not blank, and user strings
    (class names with HTML characters) are escaped."""
    out, _ = user_run
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<code>cat&lt;b&gt;&amp;$1$</code>" in page and "cat<b>" not in page  # class names are user data
    assert "src=\"http" not in page and "src='http" not in page  # self-contained
    for f in ("summary.png", "maps-grad.png", "maps-cam.png", "maps-gradcam.png"):
        assert (out / "figures" / f).is_file()
    assert "| attack |" in (out / "report.md").read_text()
    exe = _chromium()
    if exe is None:
        if os.environ.get("ADV2_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (ADV2_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium is not installed (make test installs Debian's chromium)")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([exe, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert m, dom[:500]
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total >= 4 and loaded == total
    assert int(re.search(r'data-text="(\d+)"', dom).group(1)) > 200
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, "--window-size=1000,1400", f"--screenshot={shot}", probe.as_uri()],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # not a blank page


def test_target_classes_restricted_to_the_classes_a_folder_has():
    from adv2.experiments.sampling import target_classes

    t = target_classes(torch.tensor([3, 7, 3]), [0, 1, 2], 0, 1000, allowed=[3, 7, 9])
    assert all(c in (7, 9) for c in (t[0], t[2])) and t[1] in (3, 9)
    assert torch.equal(t[:1], target_classes(torch.tensor([3]), [0], 0, 1000, allowed=[3, 7, 9]))
    with pytest.raises(ValueError, match="single class"):
        target_classes(torch.tensor([3]), [0], 0, 1000, allowed=[3])


def test_a_bare_cuda_resolves_to_an_indexed_device(monkeypatch):
    # torch.cuda.set_device refuses a device without an index: a bare "cuda" (config, --device) must get one
    from adv2.experiments.runner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device("auto") == torch.device("cuda:1")
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="2 CUDA devices"):
        resolve_device("cuda:2")
