"""Checkpoints inside a batch and a progress bar that moves: a run stores each finished cell (one
attack × interpreter on a batch) at once, a killed or failed run resumes from the first unfinished
cell with results identical to an uninterrupted run, and the bar advances with the model's forward
passes, not once per cell."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_runs import same_results
from tqdm.auto import tqdm

from adv2.cli import main
from adv2.experiments import runner
from adv2.experiments.batching import RunProgress, cell_seed
from adv2.experiments.store import RunStore

#: 2 images, one batch; cells: pgd, maps × cam, adv2 × cam, adv2-stadv × cam (4)
TINY = ["-n", "2", "--interpreters", "cam", "--attacks", "pgd,adv2,adv2-stadv", "--set", "pgd.steps=3",
        "--set", "cam.warmup=2", "--set", "cam.steps=3", "--set", "cam.flow.steps=3", "--set", "cam.flow.warmup=2",
        "--no-progress"]
TAGS = ["pgd", "maps-cam", "adv2-cam", "adv2-stadv-cam"]


def log_of(run_dir) -> list[str]:
    return (run_dir / "log.txt").read_text().splitlines()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out


class Boom(RuntimeError):
    pass


def test_a_failure_in_the_third_cell_then_resume_loads_the_first_two(reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    compute = runner._Batch.compute
    seen = []

    def failing(self, cell, w, prog):
        seen.append((cell.tag, torch.initial_seed()))
        if cell.tag == "adv2-cam":
            raise Boom("killed in the third cell")
        return compute(self, cell, w, prog)

    monkeypatch.setattr(runner._Batch, "compute", failing)
    with pytest.raises(Boom):
        main(["demo", "--out", str(out), *TINY])
    cells = sorted(p.name for p in (out / "batches").iterdir())
    assert cells == ["batch-00000-cell-00-pgd.safetensors", "batch-00000-cell-01-maps-cam.safetensors"]
    assert [t for t, _ in seen] == TAGS[:3]
    assert seen[2][1] == cell_seed(0, 0, 2)  # each cell starts from its own seed, whatever ran before

    seen.clear()
    monkeypatch.setattr(runner._Batch, "compute", lambda self, cell, w, prog: (
        seen.append((cell.tag, torch.initial_seed())), compute(self, cell, w, prog))[1])
    assert main(["demo", "--out", str(out), *TINY]) == 0
    assert [t for t, _ in seen] == TAGS[2:]  # cells 1–2 are read back, not recomputed
    assert seen == [(t, cell_seed(0, 0, c)) for c, t in enumerate(TAGS) if c >= 2]
    log = log_of(out)
    assert any("batch 0: 2 of 4 cells read back from an earlier run, not recomputed (1 pgd, 2 maps × cam)" in line
               for line in log)
    assert any("batch 0 cell 3/4 adv2 × cam: 2 images in" in line for line in log)
    # the cell files are removed once the batch is stored
    assert sorted(p.name for p in (out / "batches").iterdir()) == ["batch-00000.json", "batch-00000.safetensors"]
    same_results(out, reference)


def test_a_damaged_cell_file_is_named_and_recomputed(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    compute = runner._Batch.compute

    def failing(self, cell, w, prog):
        if cell.tag == "adv2-stadv-cam":
            raise Boom
        return compute(self, cell, w, prog)

    monkeypatch.setattr(runner._Batch, "compute", failing)
    with pytest.raises(Boom):
        main(["demo", "--out", str(out), *TINY])
    path = out / "batches" / "batch-00000-cell-01-maps-cam.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    monkeypatch.setattr(runner._Batch, "compute", compute)
    capsys.readouterr()
    assert main(["demo", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "batch-00000-cell-01-maps-cam.safetensors does not read back" in err and "recomputing cell 2" in err
    same_results(out, reference)


def test_cell_files_round_trip_and_are_removed_with_the_batch(tmp_path):
    store = RunStore(tmp_path, {"a": 1})
    record = {"rows": [["pgd", "cam", [{"index": 3, "l1": 0.1 + 0.2}]]], "seconds": 1.5, "passes": 7}
    store.save_cell(0, 2, "adv2-cam", {"x_adv2_cam": torch.arange(6.0).reshape(2, 3)}, record)
    assert store.load_cell(0, 1, "maps-cam") is None
    tensors, back = store.load_cell(0, 2, "adv2-cam")
    assert back == record and torch.equal(tensors["x_adv2_cam"], torch.arange(6.0).reshape(2, 3))
    assert [p.name for p in store.cells(0)] == ["batch-00000-cell-02-adv2-cam.safetensors"] and store.cells(1) == []
    store.discard_cells(0)
    assert store.cells(0) == []


def test_cell_seeds_are_a_function_of_seed_batch_and_cell():
    seeds = {cell_seed(s, k, c) for s in (0, 1) for k in range(3) for c in range(12)}
    assert len(seeds) == 2 * 3 * 12 and cell_seed(0, 1, 2) == cell_seed(0, 1, 2)
    assert all(0 <= s < 2**32 for s in seeds)


class Recorder(tqdm):
    """A tqdm that records when and by how much it was advanced."""

    updates: list = []
    postfixes: list = []

    def update(self, n=1):
        Recorder.updates.append((time.perf_counter(), n))
        return super().update(n)

    def set_postfix_str(self, s="", refresh=True):
        Recorder.postfixes.append(s)
        return super().set_postfix_str(s, refresh=refresh)


def test_the_bar_moves_within_cells_and_names_them(tmp_path, monkeypatch):
    Recorder.updates, Recorder.postfixes = [], []
    monkeypatch.setattr(runner, "tqdm", Recorder)
    args = [a for a in TINY if a != "--no-progress"]
    assert main(["demo", "--out", str(tmp_path / "run"), "--batch-size", "1", *args]) == 0
    images, cells = 2, len(TAGS)
    moving = [n for _, n in Recorder.updates if n > 0]
    assert len(moving) >= images * cells  # per forward pass, not per cell
    assert sum(n for _, n in Recorder.updates) == pytest.approx(images * cells)  # the bar ends full
    assert any("adv2 × cam" in p and "s/img" in p for p in Recorder.postfixes)
    assert any("left" in p for p in Recorder.postfixes)
    log = log_of(tmp_path / "run")
    assert sum(" cell " in line and "s/img" in line for line in log) == images * cells  # a line per cell


class FakeBar:
    def __init__(self):
        self.total, self.n, self.postfix = 0, 0.0, ""

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, s="", refresh=True):
        self.postfix = s

    def close(self):
        pass


def test_rank_zero_shows_the_whole_job(tmp_path):
    """Under torchrun each rank writes its counts; rank 0's bar sums them (done and total) and
    shows the longest time left."""
    share = [tmp_path / "progress-rank-0.json", tmp_path / "progress-rank-1.json"]
    bar0, bar1 = FakeBar(), FakeBar()
    rank0 = RunProgress(bar0, others=share[1:], every=0.0)
    rank1 = RunProgress(bar1, share=share[1], every=0.0)
    for p in (rank0, rank1):
        p.plan("pgd", 4, 10)
        p.plan("adv2-cam", 4, 100)
    rank1.begin("pgd", "pgd", 4, 10)
    for _ in range(5):
        rank1.tick()
    rank1.end(2.0)
    rank1.begin("adv2-cam", "adv2 × cam", 4, 100)
    rank1.tick()
    rank0.poll()
    assert bar0.total == 16 and 4 < bar0.n < 5
    assert json.loads(share[1].read_text())["done"] == pytest.approx(bar0.n)
    rank0.begin("pgd", "pgd", 4, 10)
    rank0.tick()
    assert "pgd" in bar0.postfix and "left" in bar0.postfix


def test_within_a_cell_the_bar_follows_measured_passes_and_never_passes_the_cell():
    bar = FakeBar()
    p = RunProgress(bar)
    for _ in range(2):
        p.plan("adv2-cam", 10, 50)  # two batches of 10 images; 50 passes estimated
    p.begin("adv2-cam", "adv2 × cam", 10, 50)
    for _ in range(400):  # 8× the estimate: the bar keeps moving, stays inside the cell
        p.tick()
    assert 9.9 < bar.n < 10
    p.end(4.0)
    assert bar.n == pytest.approx(10)
    p.begin("adv2-cam", "adv2 × cam", 10, 50)  # the second batch: 400 passes measured
    for _ in range(100):
        p.tick()
    assert bar.n == pytest.approx(10 + 2.5)  # a quarter of the cell
    assert p.seconds_left() == (pytest.approx(4.0 - 0.0, abs=0.5), False)


@pytest.mark.slow
def test_sigkill_in_the_sixth_of_seven_cells_then_resume(tmp_path):
    """``adv2 demo`` killed (SIGKILL) while the 6th of its 7 cells runs: the rerun reads the first
    five back (the log says so), runs the last two, and every row equals an uninterrupted run's."""
    args = ["demo", "--fast", "-n", "2", "--interpreters", "grad,cam", "--attacks", "pgd,adv2,adv2-stadv",
            "--set", "grad.flow.steps=30", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, out = tmp_path / "ref", tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "adv2", *args, "--out", str(ref)], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.Popen([sys.executable, "-m", "adv2", *args, "--out", str(out)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fifth = out / "batches" / "batch-00000-cell-04-maps-cam.safetensors"
    deadline = time.time() + 600
    while not fifth.exists():
        assert p.poll() is None and time.time() < deadline, "the run ended before its fifth cell"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    names = sorted(f.name for f in (out / "batches").iterdir() if not f.name.startswith("."))
    assert names == ["batch-00000-cell-00-pgd.safetensors", "batch-00000-cell-01-maps-grad.safetensors",
                     "batch-00000-cell-02-adv2-grad.safetensors", "batch-00000-cell-03-adv2-stadv-grad.safetensors",
                     "batch-00000-cell-04-maps-cam.safetensors"]  # killed in the 6th
    r = subprocess.run([sys.executable, "-m", "adv2", *args, "--out", str(out)], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    pids = [line.split()[2] for line in log_of(out)]
    resumed = [line for line, pid in zip(log_of(out), pids, strict=True) if pid == pids[-1]]
    assert any("batch 0: 5 of 7 cells read back from an earlier run, not recomputed" in line for line in resumed)
    computed = [line.split(" cell ")[1].split()[0] for line in resumed if " cell " in line and "s/img" in line]
    assert computed == ["6/7", "7/7"]
    same_results(out, ref)


def test_an_attack_that_reports_its_iterations_sets_the_fraction_of_a_new_kind_of_cell():
    bar = FakeBar()
    p = RunProgress(bar)
    p.plan("adv2-mask", 4, 10)  # a far too small estimate of its passes
    p.begin("adv2-mask", "adv2 × mask", 4, 10, iterations=100)
    for t in range(1, 51):  # 50 of 100 iterations, 20 passes each
        for _ in range(20):
            p.tick()
        p.iteration(t, 100)
    assert bar.n == pytest.approx(2.0)  # half of the cell's 4 images
    for _ in range(10):  # half of the next iteration's passes
        p.tick()
    assert 2.0 < bar.n < 2.04


def test_attacks_with_a_callback_keyword_get_one():
    prog = RunProgress(FakeBar())

    class WithHook:
        def __call__(self, x, target_class, target_map=None, *, callback=None):
            pass

    class Without:
        def __call__(self, x, target_class, target_map=None):
            pass

    assert runner._callback(WithHook(), prog) == {"callback": prog.iteration}
    assert runner._callback(Without(), prog) == {}
