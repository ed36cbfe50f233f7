"""The README's Python example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, "README has no python example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 14
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2


def _block(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    assert blocks, f"README has no python example with {marker!r}"
    return blocks[0]


def test_readme_flow_example_runs(capsys):
    exec(compile(_block('perturbation="flow"'), "README.md", "exec"), {})
    first, second = capsys.readouterr().out.strip().splitlines()
    pixels, smooth = map(float, first.split())
    assert 0 < pixels < 1 and smooth > 0  # sub-pixel flows
    d_adv2, d_stadv = map(float, second.split())
    assert d_adv2 < d_stadv  # ADV²-StAdv keeps the map closer than StAdv


def test_readme_rts_example_runs(capsys):
    exec(compile(_block("aid=True"), "README.md", "exec"), {})
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in out] == ["rts", "rts-aid"]
    l1 = {line.split()[0]: float(line.split()[2]) for line in out}
    assert l1["rts-aid"] > l1["rts"]  # the defense makes the attack visible in the map


def test_readme_captum_example_runs(capsys):
    exec(compile(_block("from_captum"), "README.md", "exec"), {})
    first, second = capsys.readouterr().out.strip().splitlines()
    success, l1 = map(float, first.split())
    assert success == 1.0 and 0 <= l1 < 0.05  # fooled, with the wrapped IG map kept close
    kept, rho = map(float, second.split())
    assert kept == 1.0 and rho < 0.9  # prediction kept, map rank order broken


def test_readme_imagenet_example_runs(capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("skimage")
    exec(compile(_block("efficientnet-lite0"), "README.md", "exec"), {})
    success, d_adv2, d_pgd = map(float, capsys.readouterr().out.split())
    assert success == 1.0 and d_adv2 < d_pgd / 2  # fooled, with the Grad-CAM map kept close
