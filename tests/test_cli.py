"""The ``adv2`` command line: end-to-end runs and clean errors."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from torchvision.utils import save_image

import adv2
from adv2.cli import main
from adv2.experiments.store import SUMMARY_KEYS


def run_cli(*args, timeout=900, threads=None):
    """``python -m adv2 ARGS`` in a subprocess; ``threads``: its OMP_NUM_THREADS (default: the tests' own)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    return subprocess.run([sys.executable, "-m", "adv2", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def cli_exit_code(args, limit_s=60):
    """``main``'s exit code: returned for the errors it reports, raised (SystemExit) by argparse. A bad
    input must be refused before any work: past ``limit_s`` the call fails instead of running a whole demo."""

    def too_slow(signum, frame):
        raise TimeoutError(f"adv2 {' '.join(args)} still running after {limit_s} s: the input was not refused")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(limit_s)
    try:
        return main(list(args))
    except SystemExit as e:
        return e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "shapes-resnet" in out and "gradcam" in out and "rts-aid" in out and "efficientnet-lite0" in out
    assert "imagenet-photos" in out


@pytest.mark.parametrize(
    "args, match",
    [
        (["demo", "--model", "nope"], "adv2 demo runs on the embedded models"),
        (["demo", "--model", "resnet50"], "use the Python API"),
        (["demo", "--eps", "2"], "eps must be in (0, 1]"),
        (["demo", "--eps", "inf"], "eps must be in (0, 1]"),
        (["demo", "--n", "0"], "n must be a positive integer"),
        (["demo", "--interpreters", "cam,foo"], "unknown interpreter 'foo'"),
        (["train-zoo", "shapes-vgg"], "unknown embedded model"),
        (["demo", "--eps", "0"], "eps must be in (0, 1]"),
        (["demo", "--eps", "-0.1"], "eps must be in (0, 1]"),
        (["demo", "--batch-size", "0"], "batch_size must be a positive integer"),
        (["demo", "--set", "mask.n_step=0"], "n_step must be an integer ≥ 1"),
        (["demo", "--set", "mask.alpha_max=0"], "alpha_max must be a positive number"),
        (["demo", "--set", "mask.interpreter.lr=0"], "mask lr must be a positive number"),
        (["demo", "--set", "mask.interpreter.size=65", "--n", "1"], "mask size 65 is larger than the image"),
        (["demo", "--set", "mask.bogus=1"], "bad setting for mask"),
        (["demo", "--set", "nothing.steps=1"], "unknown setting 'nothing.steps'"),
        (["demo", "--set", "mask.n_step"], "--set expects KEY=VALUE"),
        (["demo", "--set", "rts.lam_enc=-1"], "lam_enc must be a non-negative number"),
        (["demo", "--attacks", "pgd,foo"], "unknown attack 'foo'"),
        (["demo", "--attacks", "pgd,pgd"], "at most once"),
        (["demo", "--set", "cam.flow.bogus=1"], "bad setting for cam"),
        (["demo", "--set", "cam.flow.tau=-1"], "tau must be a non-negative number"),
        (["demo", "--set", "stadv.tau=-1"], "tau must be a non-negative number"),
        (["demo", "--set", "stadv.bogus=1"], "bad setting for stadv"),
        (["train-rts", "--model", "nope"], "unknown model 'nope'"),
        (["train-rts", "--model", "resnet18"], "pass the training images with --data FOLDER"),
        (["train-aid", "--model", "shapes-resnet", "--rts", "/nonexistent.safetensors"], "not found"),
        (["eval-aid", "--model", "resnet18"], "embedded model"),
        (["eval-aid", "--n", "0"], "n must be a positive integer"),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_the_problem(args, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a run would write lands here
    assert cli_exit_code(args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


@pytest.mark.slow
def test_bad_input_in_a_real_process_prints_no_traceback():
    """The one subprocess error check: the installed entry point, not just ``main``, ends cleanly."""
    p = run_cli("demo", "--eps", "2", timeout=120)
    assert p.returncode == 2
    assert "eps must be in (0, 1]" in p.stderr and "Traceback" not in p.stderr


def test_demo_small_run_writes_run_directory(tmp_path, monkeypatch):
    from adv2.experiments import demo

    tiny = {"n": 3, "pgd": {"steps": 5}, "stadv": {"steps": 5},
            **{k: {"warmup": 3, "steps": 5, "flow": {"steps": 3}} for k in ("grad", "cam", "gradcam", "rts")},
            "mask": {"warmup": 3, "steps": 2, "n_step": 1, "n_reset": 1, "interpreter": {"steps": 5},
                     "flow": {"warmup": 0, "steps": 2, "n_reset": 1, "n_step": 1}}}
    monkeypatch.setitem(demo.BUDGETS, "fast", tiny)
    assert main(["demo", "--fast", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    run = tmp_path / "run"
    for f in ("config.yaml", "env.json", "examples.csv", "summary.json", "maps.png", "tensors.safetensors"):
        assert (run / f).exists(), f
    summary = json.loads((run / "summary.json").read_text())
    assert {(r["attack"], r["interpreter"]) for r in summary["rows"]} == {
        (a, i) for a in ("pgd", "adv2", "stadv", "adv2-stadv") for i in ("grad", "cam", "gradcam", "mask", "rts")
    }
    for r in summary["rows"]:
        assert set(SUMMARY_KEYS) <= set(r) and r["n"] == 3
        # the flow attacks report the flow's size (over successful examples, None if none succeeded)
        assert ("flow_mean" in r) == (r["attack"] in ("stadv", "adv2-stadv"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    env = json.loads((run / "env.json").read_text())
    assert config["data"]["seed"] == env["seed"] == 0 and len(config["data"]["indices"]) == 3
    lines = (run / "examples.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 3 * 20
    import csv

    for row in csv.DictReader(lines):
        assert int(row["label"]) != int(row["target"]) and 0 <= int(row["prediction"]) < 10
        assert (row["success"] == "True") == (row["prediction"] == row["target"])
        if row["attack"] in ("pgd", "adv2"):
            assert float(row["linf"]) <= config["eps"] + 1e-6
        mask = row["interpreter"] == "mask"  # tiny budgets: warm-up + joint iterations
        expected = {"pgd": 5, "stadv": 5, "adv2": 3 + (2 if mask else 5), "adv2-stadv": 2 if mask else 3}
        assert int(row["iterations"]) == expected[row["attack"]], row
    for r in summary["rows"]:
        assert r["success_rate_ci95"] is not None and r["success_rate_ci95"] >= 0
    assert "batch 0 done" in (run / "log.txt").read_text()
    from safetensors.torch import load_file

    tensors = load_file(run / "tensors.safetensors")
    assert tensors["flow_stadv"].shape == (3, 2, 64, 64) and tensors["flow_adv2-stadv_cam"].shape == (3, 2, 64, 64)
    assert tensors["map_adv2-stadv_mask"].shape == (3, 1, 16, 16)
    assert config["budgets"]["mask"]["interpreter"] == {"steps": 5}


@pytest.mark.slow
def test_demo_fast_shows_the_papers_point(tmp_path):
    """`adv2 demo --fast` end to end: ADV² success >= 90% and L1 <= 1/2 of PGD's for grad, cam,
    gradcam, rts. MASK (random: its jitter) as a defender sees it: success >= 90% and the judged
    figure over the defender seeds, (ADV² − floor) / (PGD − floor), <= 1/2 (0.39 measured,
    docs/results.md). ADV²-StAdv against StAdv likewise, with the looser bounds below."""
    # a hang guard, not a speed bar (the README times the demo): 1 min 53 s on the reference
    # machine
    # the demo alone on the machine, as a user runs it: both cores
    p = run_cli("demo", "--fast", "--out", str(tmp_path / "fast"), "--no-progress", timeout=3600, threads=2)
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "fast" / "summary.json").read_text())["rows"]
    by = {(r["attack"], r["interpreter"]): r for r in rows}
    for interp in ("grad", "cam", "gradcam", "mask", "rts"):
        adv, pgd = by[("adv2", interp)], by[("pgd", interp)]
        assert adv["success_rate"] >= 0.9, adv
        if interp == "mask":
            assert pgd["l1_defender"] > pgd["noise_floor"] and adv["judged_ratio"] <= 0.5, (adv, pgd)
        else:
            assert adv["l1"] <= 0.5 * pgd["l1"], (adv, pgd)
    # the flow variant: reaches the target, and keeps the map closer than StAdv (grad: by less,
    # mask: not at all yet, see the README)
    for interp, bound in (("grad", 0.85), ("cam", 0.6), ("gradcam", 0.6), ("rts", 0.6), ("mask", None)):
        adv, st = by[("adv2-stadv", interp)], by[("stadv", interp)]
        assert adv["success_rate"] >= 0.8 and st["success_rate"] >= 0.9, (adv, st)
        assert 0 < adv["flow_mean"] < 0.5, adv  # sub-pixel flows
        if bound is not None:
            assert adv["l1"] <= bound * st["l1"], (adv, st)
    assert "adv2" in p.stdout and "success_rate" in p.stdout


def test_demo_runs_a_chosen_subset_of_attacks(tmp_path, monkeypatch):
    from adv2.experiments import demo

    tiny = {"n": 2, "pgd": {"steps": 2}, "stadv": {"steps": 4}, "cam": {"warmup": 1, "steps": 2, "flow": {"steps": 3}}}
    monkeypatch.setitem(demo.BUDGETS, "fast", tiny)
    out = tmp_path / "run"
    assert main(["demo", "--fast", "--out", str(out), "--no-progress", "--interpreters", "cam",
                 "--attacks", "stadv,adv2-stadv"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["attack"], r["interpreter"]) for r in summary["rows"]] == [("stadv", "cam"), ("adv2-stadv", "cam")]
    assert yaml.safe_load((out / "config.yaml").read_text())["attacks"] == ["stadv", "adv2-stadv"]
    assert (out / "maps.png").exists() and "flow_mean" in (out / "summary.md").read_text()


def test_train_rts_for_any_classifier_on_an_image_folder(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(2):
            img = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i))
            save_image(img, tmp_path / "data" / c / f"{i}.png")
    assert main(["train-rts", "--model", "resnet18", "--data", str(tmp_path / "data")]) == 2  # no --out
    assert main(["train-rts", "--model", "resnet18", "--data", str(tmp_path / "data"), "--size", "32", "--steps", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    model = adv2.models.load("resnet18")  # random weights: the checkpoint's fingerprint is another init's
    g = adv2.interpreters.RTS(model, checkpoint=tmp_path / "out" / "rts-resnet18.safetensors", check_classifier=False)
    m = g(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert m.shape == (2, 1, 8, 8) and 0 <= m.min() and m.max() <= 1
