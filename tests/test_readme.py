"""The README's and the user guide's Python examples run as written, and the docs hang together.

Every ```python block of docs/guide.md runs, except one right after an HTML comment
``<!-- skip-test ... -->`` (blocks that need the user's files, a GPU or hours). Blocks that
contain one of the markers in ``CHECKS`` also have their printed output checked.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"
DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]

_BLOCK = re.compile(r"(<!--\s*skip-test\b[^>]*-->[ \t]*\n)?```python\n(.*?)```", re.S)


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` per ```python block of ``path``: ``line`` is the line before
    the code's first line (the fence), ``skipped`` whether a skip-test comment precedes it."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(2)), m.group(2), m.group(1) is not None) for m in _BLOCK.finditer(text)]


def run_block(path: Path, line: int, code: str) -> None:
    """Execute ``code`` in a fresh namespace, with tracebacks pointing at ``path``'s lines."""
    exec(compile("\n" * line + code, str(path), "exec"), {})


# --- the README's example


def test_readme_python_example_runs(capsys):
    blocks = python_blocks(README)
    assert blocks, "README has no python example"
    line, code, skipped = blocks[0]
    assert not skipped
    assert len(code.strip().splitlines()) <= 14
    run_block(README, line, code)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2


# --- the guide's examples: what some of them must print


def _flow(out: str) -> None:
    first, second = out.strip().splitlines()
    pixels, smooth = map(float, first.split())
    assert 0 < pixels < 1 and smooth > 0  # sub-pixel flows
    d_adv2, d_stadv = map(float, second.split())
    assert d_adv2 < d_stadv  # ADV²-StAdv keeps the map closer than StAdv


def _rts(out: str) -> None:
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["rts", "rts-aid"]
    l1 = {line.split()[0]: float(line.split()[2]) for line in lines}
    assert l1["rts-aid"] > l1["rts"]  # the defense makes the attack visible in the map


def _captum(out: str) -> None:
    first, second = out.strip().splitlines()
    success, l1 = map(float, first.split())
    assert success == 1.0 and 0 <= l1 < 0.05  # fooled, with the wrapped IG map kept close
    kept, rho = map(float, second.split())
    assert kept == 1.0 and rho < 0.9  # prediction kept, map rank order broken


def _imagenet(out: str) -> None:
    success, d_adv2, d_pgd = map(float, out.split())
    assert success == 1.0 and d_adv2 < d_pgd / 2  # fooled, with the Grad-CAM map kept close


#: a string that marks a guide example -> (modules it needs, the check of its output)
CHECKS = {
    'perturbation="flow"': ((), _flow),
    "aid=True": ((), _rts),
    "from_captum": (("captum",), _captum),
    "efficientnet-lite0": (("efficientnet_lite_pytorch", "skimage"), _imagenet),
}

GUIDE_BLOCKS = [(line, code) for line, code, skipped in python_blocks(GUIDE) if not skipped]


def test_guide_examples_are_found():
    assert len(GUIDE_BLOCKS) >= 5
    for marker in CHECKS:
        hits = [line for line, code in GUIDE_BLOCKS if marker in code]
        assert len(hits) == 1, f"docs/guide.md: {len(hits)} runnable examples contain {marker!r} (lines {hits})"


@pytest.mark.slow
@pytest.mark.parametrize("line, code", GUIDE_BLOCKS, ids=[f"guide.md:{line + 1}" for line, _ in GUIDE_BLOCKS])
def test_guide_example_runs(line, code, capsys):
    checks = [spec for marker, spec in CHECKS.items() if marker in code]
    for modules, _ in checks:
        for module in modules:
            pytest.importorskip(module)
    run_block(GUIDE, line, code)
    out = capsys.readouterr().out
    for _, check in checks:
        check(out)


# --- the docs hang together


def test_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) <= 200


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_docs_links_resolve():
    bad = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_docs_mention_no_issue_numbers():
    pattern = re.compile(r"\b(issues?|PR|pull request)\s*#?\s*\d+|(?<![\w/&])#\d+\b", re.I)
    hits = [f"{doc.relative_to(ROOT)}:{i}: {line.strip()}" for doc in DOCS
            for i, line in enumerate(doc.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_docs_python_blocks_are_tested_or_marked():
    """Python blocks outside the README and the guide are not executed: they must say so."""
    untested = [f"{doc.relative_to(ROOT)}:{line + 1}" for doc in DOCS if doc not in (README, GUIDE)
                for line, _, skipped in python_blocks(doc) if not skipped]
    assert not untested, f"mark these with <!-- skip-test -->, or move them to the guide: {untested}"
