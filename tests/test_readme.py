"""The README's Python example runs as written."""

import re
from pathlib import Path

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


def test_readme_rts_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README has no RTS example"
    exec(compile(blocks[1], "README.md", "exec"), {})
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in out] == ["rts", "rts-aid"]
    l1 = {line.split()[0]: float(line.split()[2]) for line in out}
    assert l1["rts-aid"] > l1["rts"]  # the defense makes the attack visible in the map
