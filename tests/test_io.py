"""Files on disk: written atomically with the permissions the user's umask gives; a stored batch
that no longer reads back is named and recomputed on resume, and ``adv2 merge`` names it in one
line; the shared training loop resumes to the same weights (the embedded models' training)."""

from __future__ import annotations

import csv
import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from adv2._io import (
    DamagedFileError,
    atomic_write_bytes,
    current_umask,
    read_safetensors,
    safetensors_problem,
    write_safetensors,
)
from adv2.cli import main
from adv2.experiments.store import write_run
from adv2.models.train import train_zoo

TINY = ["-n", "4", "--batch-size", "2", "--interpreters", "cam", "--attacks", "pgd,adv2", "--set", "pgd.steps=2",
        "--set", "cam.warmup=1", "--set", "cam.steps=2", "--no-progress"]


@pytest.fixture
def umask():
    """Set the process umask for a test, restore it after."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_permissions_of_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    atomic_write_bytes(tmp_path / "a.txt", b"x")
    write_run(tmp_path / "run", {"a": 1}, {"env": 1}, [{"index": 0, "l1": 0.5}], {"rows": []}, {"x": torch.ones(2)})
    expected = 0o666 & ~mask
    for path in (tmp_path / "a.txt", *(tmp_path / "run" / f for f in ("config.yaml", "env.json", "examples.csv",
                                                                       "summary.json", "tensors.safetensors"))):
        assert mode(path) == expected, (path.name, oct(mode(path)))
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_a_demo_run_is_readable_by_others_under_umask_022(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    for name in ("report.html", "report.md", "summary.json", "summary.md", "examples.csv", "env.json", "config.yaml",
                 "tensors.safetensors", "batches/batch-00000.safetensors", "batches/batch-00000.json"):
        assert mode(out / name) == 0o644, (name, oct(mode(out / name)))


def test_a_truncated_safetensors_file_is_named(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"x": torch.arange(100.0)})
    assert safetensors_problem(path) is None
    assert torch.equal(read_safetensors(path)["x"], torch.arange(100.0))
    data = path.read_bytes()
    for broken in (data[:-7], data[:5], data + b"\0\0", b"\x10" + data[1:]):
        path.write_bytes(broken)
        assert safetensors_problem(path) is not None
        with pytest.raises(DamagedFileError, match="t.safetensors: damaged file") as e:
            read_safetensors(path)
        assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def rows(run_dir):
    with open(run_dir / "examples.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_a_damaged_batch_is_recomputed_on_resume_and_merge_names_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    reference, ref_tensors = rows(out), load_file(out / "tensors.safetensors")
    bad = out / "batches" / "batch-00000.safetensors"
    other = out / "batches" / "batch-00001.json"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated
    stamp = other.stat().st_mtime_ns
    capsys.readouterr()

    # merge: one clear line naming the file, exit 2, no traceback
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "damaged" in err and "Traceback" not in err, err
    assert "SafetensorError" not in err

    # resume: a warning line naming the file, the batch recomputed, the other one kept
    assert main(["demo", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("adv2: warning")]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "recomputing batch 0" in warnings[0], err
    assert other.stat().st_mtime_ns == stamp
    assert safetensors_problem(bad) is None
    assert rows(out) == reference
    tensors = load_file(out / "tensors.safetensors")
    assert tensors.keys() == ref_tensors.keys() and all(torch.equal(tensors[k], ref_tensors[k]) for k in tensors)

    # a batch whose rows were edited into invalid JSON: recomputed as well
    (out / "batches" / "batch-00001.json").write_text('[{"index": ')
    assert main(["merge", str(out)]) == 2
    assert "batch-00001.json" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), *TINY]) == 0
    assert "batch-00001.json" in capsys.readouterr().err and rows(out) == reference


def test_report_names_a_damaged_tensors_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    path = out / "tensors.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_the_zoo_training_resumes_to_the_same_weights(tmp_path):
    """The embedded models' training runs on the shared loop: stopped and resumed (network,
    optimiser, one-cycle schedule, generator, epoch state from the checkpoint), it ends with the
    weights of an uninterrupted training."""
    tiny = dict(n_train=96, epochs=2, batch_size=32)
    full = train_zoo("shapes-resnet", tmp_path / "a", seed=3, progress=False, **tiny)
    assert [e["epoch"] for e in full["log"]] == [1, 2] and not (tmp_path / "a" / "shapes-resnet.ckpt").exists()
    part = train_zoo("shapes-resnet", tmp_path / "b", seed=3, progress=False, stop_after=4, checkpoint_every=2, **tiny)
    assert part.get("stopped") and (tmp_path / "b" / "shapes-resnet.ckpt").exists()
    assert not (tmp_path / "b" / "shapes-resnet.safetensors").exists()
    done = train_zoo("shapes-resnet", tmp_path / "b", seed=3, progress=False, checkpoint_every=2, **tiny)
    assert done["log"] == full["log"]
    a, b = (load_file(tmp_path / d / "shapes-resnet.safetensors") for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train_zoo("shapes-resnet", tmp_path / "b", seed=4, progress=False, stop_after=1, **tiny)
    with pytest.raises(ValueError, match="belongs to another run"):
        train_zoo("shapes-resnet", tmp_path / "b", seed=3, progress=False, **tiny)
