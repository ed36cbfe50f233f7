"""The built wheel, not the editable install: it carries the package data and runs from outside the repo.

Offline here, so the fresh venv gets the wheel (``--no-deps``) and borrows torch & co. from the dev venv
through a ``.pth`` line; a ``.pth`` path line only appends that folder to ``sys.path`` (its own ``.pth``
files, among them the editable install's, are not processed), so ``adv2`` can only come from the wheel,
and the test checks it does. ``make wheel-check`` is the full version (dependencies from an index).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "adv2"
# what pyproject's [tool.setuptools.package-data] must bring into the wheel
DATA = ["py.typed", "models/weights/*.safetensors", "models/weights/*.json",
        "interpreters/weights/*.safetensors", "interpreters/weights/*.json", "experiments/configs/*.yaml"]


def _run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the sources (so no build/ or egg-info lands in the working tree),
    with the dev venv's setuptools (no build isolation: nothing to download)."""
    tmp = tmp_path_factory.mktemp("wheel")
    project = tmp / "project"
    project.mkdir()
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / f).exists():
            shutil.copy2(ROOT / f, project / f)
    shutil.copytree(SRC, project / "src" / "adv2", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", project], cwd=tmp)
    (whl,) = (tmp / "dist").glob("adv2-*.whl")
    return whl


def test_wheel_carries_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"adv2/{p.relative_to(SRC).as_posix()}" for pattern in DATA for p in SRC.glob(pattern)}
    assert "adv2/py.typed" in expected and "adv2/models/weights/shapes-resnet.safetensors" in expected
    assert "adv2/experiments/configs/demo.yaml" in expected
    assert expected <= names, sorted(expected - names)
    modules = {f"adv2/{p.relative_to(SRC).as_posix()}" for p in SRC.rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "adv2 = adv2.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist: torch")]
    assert requires and not any("==" in r for r in requires), requires  # a range, not a pin


def test_installed_wheel_runs_from_outside_the_repo(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel])
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    dev_site = Path(sysconfig.get_path("purelib"))
    # the dev venv holds adv2 only as an editable .pth (not processed through a .pth path line), never a copy
    assert not (dev_site / "adv2").exists() and not (dev_site / "adv2.py").exists()
    (site / "_adv2_test_deps.pth").write_text(f"{dev_site}\n")

    work = tmp_path / "work"  # cwd outside the repository, no PYTHONPATH
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    probe = _run([py, "-c", "import adv2, importlib.resources as r; print(adv2.__file__); "
                  "print((r.files('adv2') / 'py.typed').is_file())"], cwd=work, env=env).stdout.split()
    assert Path(probe[0]).resolve().is_relative_to(venv.resolve()), probe
    assert not Path(probe[0]).resolve().is_relative_to(ROOT), probe
    assert probe[1] == "True"

    adv2 = venv / "bin" / "adv2"
    out = _run([adv2, "list"], cwd=work, env=env).stdout
    assert "shapes-resnet" in out and "gradcam" in out and "imagenet-photos" in out
    # `adv2 demo --fast --n 2` cut to two interpreters (RTS reads its shipped weights) and tiny budgets: this
    # checks the wheel, not the attacks (make wheel-check runs the whole --fast demo)
    tiny = ["--interpreters", "cam,rts", "--attacks", "pgd,adv2", "--set", "pgd.steps=2",
            *[f"--set={k}.{s}=2" for k in ("cam", "rts") for s in ("warmup", "steps")]]
    _run([adv2, "demo", "--fast", "--n", "2", "--out", "run", "--no-progress", *tiny], cwd=work, env=env)
    rows = json.loads((work / "run" / "summary.json").read_text())["rows"]
    assert {(r["attack"], r["interpreter"]) for r in rows} == {(a, i) for a in ("pgd", "adv2") for i in ("cam", "rts")}
    assert all(r["n"] == 2 for r in rows)
