"""mcicl's import structure: one-way layers, no cycles, imports at the top of each file.

Layers, bottom to top:
  0 core     mcicl, mcicl.core.*                       (configs, run folders, vector format, plot style, options)
  1 engine   mcicl.analysis.{geometry, nulls, ...}     (the geometry engine and its figures)
  2 worlds   mcicl.synthetic.*, mcicl.probing.*        (independent of each other)
  3 top      comparison, matched world, maps, report, demo, CLI, the front door
A module may import its own layer or below, never above; the two worlds never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"mcicl": REPO / "mcicl", "mcicl.synthetic": REPO / "synthetic", "mcicl.probing": REPO / "probing",
           "mcicl.analysis": REPO / "analysis"}
ENGINE = {"geometry", "nulls", "polysemy", "probes", "geometry_figures", "embedding_plots", "contextual",
          "contextual_figures"}


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
    """(layer number, world name for layer 2) of an mcicl module."""
    if module == "mcicl" or module.startswith("mcicl.core"):
        return 0, ""
    if module.startswith("mcicl.synthetic"):
        return 2, "synthetic"
    if module.startswith("mcicl.probing"):
        return 2, "probing"
    if module.startswith("mcicl.analysis."):
        return (1, "") if module.split(".")[2] in ENGINE else (3, "")
    if module == "mcicl.analysis":
        return 1, ""  # the package __init__ is a docstring only
    return 3, ""  # mcicl.api, mcicl.__main__


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
    assert {"mcicl.core.runs", "mcicl.synthetic.model", "mcicl.probing.extract", "mcicl.analysis.cli"} <= set(MODULES)


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


def test_no_module_cycles():
    graph = {m: {t for t, _, _ in imports(p, MODULES) if t in MODULES and t != m} for m, p in MODULES.items()}
    # A package imports its parent implicitly; only explicit edges count.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_layer_check_catches_an_upward_import(tmp_path):
    """The check itself: a probing module importing the CLI is flagged (mutation of the rule's input)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from mcicl.analysis.cli import main\n")
    targets = [t for t, _, _ in imports(bad, MODULES)]
    assert targets == ["mcicl.analysis.cli"]
    assert layer("mcicl.analysis.cli")[0] > layer("mcicl.probing.extract")[0]
