"""A batch that does not fit in memory is split in halves: the same results (up to the rounding of
batched kernels), in more calls."""

import pytest
import torch

import adv2
from adv2.attacks import ADV2, PGD
from adv2.experiments.batching import concat, is_out_of_memory, split_on_oom


def _limited(fn, limit: int, calls: list):
    """``fn`` that fails like an allocator on batches larger than ``limit``."""

    def run(x, *args, **kwargs):
        calls.append(len(x))
        if len(x) > limit:
            raise RuntimeError(f"[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                               f"{len(x)} images")
        return fn(x, *args, **kwargs)

    return run


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_split_results_equal_one_call(resnet_model, shapes_test, limit):
    x, y, _ = shapes_test
    x, y = x[:5], y[:5]
    ct = (y + 1) % 10
    g = adv2.interpreters.CAM(resnet_model)
    atk = ADV2(resnet_model, g, warmup=2, steps=3)
    whole = atk(x, ct, target_map=g(x, y))
    calls, splits = [], []
    parts = split_on_oom(_limited(atk, limit, calls), x, ct, target_map=g(x, y), on_split=splits.append)
    assert max(c for c in calls if c <= limit) <= limit and splits[0] == 5
    for field in ("x_adv", "success", "success_quantized", "prediction"):
        assert torch.equal(getattr(parts, field), getattr(whole, field)), field
    for field in ("confidence", "map", "map_distance"):  # batched kernels round differently by batch size
        torch.testing.assert_close(getattr(parts, field), getattr(whole, field), atol=1e-5, rtol=1e-5)
    assert parts.flow is None


def test_other_errors_and_single_examples_are_not_split(resnet_model, shapes_test):
    x, y, _ = shapes_test
    pgd = PGD(resnet_model, steps=1)

    def broken(x, t):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        split_on_oom(broken, x[:4], y[:4])
    calls = []
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        split_on_oom(_limited(pgd, 0, calls), x[:2], y[:2])
    assert calls == [2, 1]  # split once, then the single example fails as it is


def test_is_out_of_memory_and_concat_tensors():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(ValueError("out of memory"))
    assert torch.equal(concat([torch.zeros(2, 3), torch.ones(1, 3)]), torch.cat([torch.zeros(2, 3), torch.ones(1, 3)]))
    with pytest.raises(TypeError):
        concat([1, 2])


def test_concat_tuples_and_dicts_element_by_element():
    a = ({"p": torch.zeros(2)}, torch.ones(2))
    b = ({"p": torch.ones(1)}, torch.zeros(1))
    d, t = concat([a, b])
    assert torch.equal(d["p"], torch.tensor([0.0, 0.0, 1.0])) and torch.equal(t, torch.tensor([1.0, 1.0, 0.0]))


def test_every_cell_of_a_run_splits_a_batch_that_does_not_fit(tmp_path, monkeypatch):
    # MASK's maps (the benign cell, the baselines' maps, the matched StAdv, the defender seeds' re-solves)
    # fail like an allocator on more than 2 images: the run splits each of those calls and gives the results
    # of a run that fit
    import csv

    from adv2.cli import main
    from adv2.interpreters.mask import Mask

    args = ["run", "demo", "--set", "data.n=4", "--set", "batch_size=4", "--set", "interpreters=[mask]",
            "--set", "attacks=[pgd,stadv,adv2-stadv]", "--set", "matched_flow=true", "--set", "attacks.steps=2",
            "--set", "budgets.mask.interpreter.steps=6", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    original, calls = Mask.__call__, []

    def limited(self, x, target):
        calls.append(len(x))
        if len(x) > 2:
            raise RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory")
        return original(self, x, target)

    monkeypatch.setattr(Mask, "__call__", limited)
    assert main([*args, "--out", str(tmp_path / "split")]) == 0
    assert 4 in calls and max(c for c in calls if c <= 2) == 2
    assert "did not fit in memory" in (tmp_path / "split" / "log.txt").read_text()

    def rows(run):
        with open(tmp_path / run / "examples.csv") as f:
            return list(csv.DictReader(f))

    whole, split = rows("whole"), rows("split")
    assert len(whole) == len(split) and {r["attack"] for r in whole} == {"pgd", "stadv", "adv2-stadv", "stadv-matched"}
    for a, b in zip(whole, split, strict=True):
        assert (a["attack"], a["success"]) == (b["attack"], b["success"])
        for k in ("l1", "l1_defender", "noise_floor"):
            if a.get(k):
                assert abs(float(a[k]) - float(b[k])) < 5e-3, (a["attack"], k, a[k], b[k])
