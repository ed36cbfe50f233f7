"""Golden tensors: the ADV² loop's outputs, bit for bit, as they were when this file was made.

{grad, cam, mask (few steps), rts} × {linf, flow} × {adv2, fragility objective} × {lam_adapt 1, 1.02}
on 4 embedded test images with tiny budgets. A refactor of the loop must keep every tensor
``torch.equal``; a deliberate change of results regenerates the file in a commit that says so::

    python tests/test_golden.py          # rewrites tests/data/golden.safetensors

The file records the torch version, thread count and CPU (model and the instruction set torch
dispatches to) it was made with; on another torch version or CPU the test skips. Kernels differ
at rounding level there, and sign steps, line searches and Adam amplify that: on another CPU
the fragility and MASK cases moved by up to a few 8-bit levels. Before a refactor on such a
machine, regenerate the file there, refactor, and check (without committing the file).
"""

from __future__ import annotations

import itertools
import json
import platform
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import adv2

GOLDEN = Path(__file__).parent / "data" / "golden.safetensors"
INTERPRETERS = ("grad", "cam", "mask", "rts")
PERTURBATIONS = ("linf", "flow")
OBJECTIVES = ("adv2", "fragility")
LAM_ADAPT = (1.0, 1.02)
THREADS = 2


def cases():
    return list(itertools.product(INTERPRETERS, PERTURBATIONS, OBJECTIVES, LAM_ADAPT))


def key(case) -> str:
    g, p, o, a = case
    return f"{g}-{p}-{o}-{a:g}"


def _interpreter(name, model):
    if name == "mask":
        return adv2.interpreters.Mask(model, steps=12)
    if name == "rts":
        return adv2.interpreters.RTS.load("shapes-resnet")
    return adv2.interpreters.get(name, model)


def cpu_signature() -> str:
    """The CPU's model name and the instruction set torch's CPU kernels dispatch to."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def run_case(case, model, x, y, t):
    """The outputs of one case: ``{"x_adv", "map", ["flow"]}``."""
    g_name, pert, objective, lam_adapt = case
    g = _interpreter(g_name, model)
    kw = dict(steps=3, lam_adapt=lam_adapt)
    if g_name == "mask":
        kw.update(n_step=2, n_reset=2)
    if objective == "adv2":
        atk = adv2.attacks.ADV2(model, g, perturbation=pert, warmup=2 if pert == "linf" else 0, **kw)
        target = t
    else:
        atk = adv2.attacks.ADV2(model, g, perturbation=pert, objective=objective, measure="l1", **kw)
        with torch.no_grad():
            target = model(x).argmax(1)
    torch.manual_seed(0)
    res = atk(x, target)
    out = {"x_adv": res.x_adv, "map": res.map}
    if res.flow is not None:
        out["flow"] = res.flow
    return out


def inputs():
    model = adv2.models.load("shapes-resnet")
    x, y, _ = adv2.data.shapes(4, split="test", seed=0)
    t = (y + 3) % 10
    return model, x, y, t


def _encode(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """On the 8-bit grid a tensor is stored as bytes (``u8``, decoded by ``/255``), else as it is."""
    tensor = tensor.detach().contiguous()
    u8 = torch.round(tensor * 255)
    if tensor.dtype == torch.float32 and u8.min() >= 0 and u8.max() <= 255 and torch.equal(u8 / 255, tensor):
        return {f"{name}:u8": u8.to(torch.uint8)}
    return {name: tensor}


def _decode(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in stored.items():
        if name.endswith(":u8"):
            out[name[:-3]] = tensor.float() / 255
        else:
            out[name] = tensor
    return out


def make(path: Path = GOLDEN):
    torch.set_num_threads(THREADS)
    model, x, y, t = inputs()
    tensors = {}
    for case in cases():
        for name, tensor in run_case(case, model, x, y, t).items():
            tensors.update(_encode(f"{key(case)}/{name}", tensor))
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": str(THREADS), "cpu": cpu_signature(),
            "cases": json.dumps([key(c) for c in cases()])}
    save_file(tensors, str(path), metadata=meta)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {len(tensors)} tensors)")


def _stored():
    if not GOLDEN.exists():
        pytest.skip(f"no golden file at {GOLDEN} (make it with: python tests/test_golden.py)")
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "pt") as f:
        meta = f.metadata()
    if meta["torch"] != torch.__version__:
        pytest.skip(f"golden tensors were made with torch {meta['torch']}; this is {torch.__version__} "
                    "(kernels differ at rounding level across versions)")
    if meta.get("cpu") != cpu_signature():
        pytest.skip(f"golden tensors were made on another CPU ({meta.get('cpu', 'not recorded')}); this is "
                    f"{cpu_signature()} (kernels differ at rounding level; regenerate here before a refactor)")
    return _decode(load_file(str(GOLDEN))), int(meta["threads"])


@pytest.fixture(scope="module")
def golden():
    stored, threads = _stored()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield stored, inputs()
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", cases(), ids=key)
def test_golden(golden, case):
    stored, (model, x, y, t) = golden
    out = run_case(case, model, x, y, t)
    prefix = key(case)
    expected = {k.split("/", 1)[1]: v for k, v in stored.items() if k.startswith(prefix + "/")}
    assert set(out) == set(expected), f"{prefix}: outputs {sorted(out)} vs stored {sorted(expected)}"
    for name, tensor in out.items():
        ref = expected[name]
        diff = (tensor - ref).abs().max().item() if tensor.shape == ref.shape else "shape"
        assert torch.equal(tensor, ref), f"{prefix}/{name} differs from the golden tensor (max |Δ| {diff})"


if __name__ == "__main__":
    make()
