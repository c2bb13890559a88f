"""mcicl's import structure: one-way layers, no cycles, imports at the top of each file.

Layers, bottom to top, read from the folder a module sits in (no module lists):
  0 core     mcicl/core/ (and mcicl/__init__)   configs, run folders, I/O, logging, vector format, job protocol
  1 engine   analysis/engine/                   the geometry engine and its figures
  2 worlds   synthetic/, probing/               independent of each other
  3 analysis analysis/                          comparison, matched world, maps, report
  4 app      mcicl/app/ (and mcicl/__main__)    job registry, command line, demo, Python front door
A module may import its own layer or below, never above; the two worlds never import each other; no package
(folder) imports another in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"mcicl": REPO / "mcicl", "mcicl.synthetic": REPO / "synthetic", "mcicl.probing": REPO / "probing",
           "mcicl.analysis": REPO / "analysis"}
# Folder (package) -> layer; a module's layer is that of the longest package prefix of its name.
LAYERS = {"mcicl": 0, "mcicl.core": 0, "mcicl.analysis.engine": 1, "mcicl.synthetic": 2, "mcicl.probing": 2,
          "mcicl.analysis": 3, "mcicl.app": 4, "mcicl.__main__": 4}
WORLDS = ("mcicl.synthetic", "mcicl.probing")


def module_files() -> dict[str, Path]:
    """Every mcicl module name -> its file, through the same folder mapping as pyproject's package-dir."""
    out = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def layer(module: str) -> tuple[int, str]:
    """(layer number, world name for layer 2) of an mcicl module, from the folder it sits in."""
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    world = next((w.rsplit(".", 1)[1] for w in WORLDS if module == w or module.startswith(w + ".")), "")
    return LAYERS[prefix], world


def package(module: str) -> str:
    """The folder (package) a module belongs to: itself for a package's __init__, else its parent."""
    if module == "mcicl.__main__":  # `python -m mcicl` must sit at the root, but it is the app's entry point
        return "mcicl.app"
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, ast.stmt, bool]]:
    """(imported mcicl module, node, at top level) for each mcicl import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from mcicl.x import y` may import the submodule mcicl.x.y
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        for name in names:
            if name == "mcicl" or name.startswith("mcicl."):
                found.append((name, node, id(node) in top))
    return found


MODULES = module_files()


def test_every_mcicl_folder_is_mapped():
    assert {"mcicl.core.runs", "mcicl.synthetic.model", "mcicl.probing.extract", "mcicl.app.cli"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downward_only(module):
    src_layer, src_world = layer(module)
    for target, node, _ in imports(MODULES[module], MODULES):
        dst_layer, dst_world = layer(target)
        assert dst_layer <= src_layer, (f"{module} (layer {src_layer}) imports {target} (layer {dst_layer}) "
                                        f"at line {node.lineno}: imports must run downward")
        if src_layer == dst_layer == 2:
            assert src_world == dst_world, f"{module} imports the other world {target} (line {node.lineno})"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_at_top(module):
    """mcicl's own modules are imported at the top; a deferred third-party import says why on its line."""
    path = MODULES[module]
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        assert not (name or "").startswith("mcicl"), f"{module}:{node.lineno} defers an import of {name}"
        context = lines[node.lineno - 2] + lines[node.lineno - 1]
        assert "deferred" in context, (f"{module}:{node.lineno} defers `import {name}` without a comment "
                                       "saying why (a '# deferred: ...' comment)")


def _module_graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports(p, MODULES) if t in MODULES and t != m} for m, p in MODULES.items()}


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {package(m): set() for m in MODULES}
    for m, targets in _module_graph().items():
        graph[package(m)] |= {package(t) for t in targets} - {package(m)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or None."""
    # A package imports its parent implicitly; only explicit edges count.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise _Cycle(stack[stack.index(t):] + [t])
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    try:
        for m in sorted(graph):
            if m not in state:
                visit(m)
    except _Cycle as cycle:
        return cycle.path
    return None


class _Cycle(Exception):
    def __init__(self, path: list[str]):
        self.path = path


def test_no_module_cycles():
    cycle = find_cycle(_module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_package_cycles():
    """Folders as a whole: probing may use the engine and analysis may use probing, but no circle of folders."""
    cycle = find_cycle(_package_graph())
    assert cycle is None, "package import cycle: " + " -> ".join(cycle or [])


def test_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_name_repeats_across_layers():
    """One name per idea: a module's last name part (geometry, contextual, ...) lives in one layer only."""
    seen: dict[str, set[int]] = {}
    for m in MODULES:
        leaf = m.rsplit(".", 1)[-1]
        if MODULES[m].name != "__init__.py":
            seen.setdefault(leaf, set()).add(layer(m)[0])
    repeated = {name: sorted(layers) for name, layers in seen.items() if len(layers) > 1}
    assert not repeated, f"module names in several layers: {repeated}"


def test_layer_check_catches_an_upward_import(tmp_path):
    """The check itself: a probing module importing the CLI is flagged (mutation of the rule's input)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from mcicl.app.cli import main\n")
    targets = [t for t, _, _ in imports(bad, MODULES)]
    assert targets == ["mcicl.app.cli"]
    assert layer("mcicl.app.cli")[0] > layer("mcicl.probing.extract")[0]
