"""The layers stay acyclic: config/warehouse at the bottom, pipeline/CLI/DAGs on top."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recon", "loaders", "settlement", "reports")
BOTTOM = {"recon.config", "recon.money", "recon.warehouse", "recon.errors", "recon.views", "recon.formula"}
TOP = ("recon.pipeline", "recon.cli", "recon.commands", "recon.orchestration", "recon.airflow_demo")


def modules() -> dict[str, set[str]]:
    graph = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            deps = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    deps.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    deps.update(a.name for a in node.names)
            graph[name] = {d for d in deps if d.split(".")[0] in PACKAGES}
    # "from pkg.mod import name" depends on pkg.mod (or on pkg.mod.name when that is a module itself)
    for name, deps in graph.items():
        graph[name] = {d if d in graph else d.rsplit(".", 1)[0] for d in deps} - {name}
    return graph


def test_the_bottom_layer_imports_nothing_above_it():
    graph = modules()
    for mod in BOTTOM:
        assert graph[mod] <= BOTTOM, f"{mod} imports {graph[mod] - BOTTOM}"


def test_nothing_below_the_top_imports_the_top():
    for mod, deps in modules().items():
        if mod.startswith(TOP):
            continue
        bad = {d for d in deps if d.startswith(TOP)}
        assert not bad, f"{mod} imports the top layer: {bad}"


def test_there_is_no_import_cycle():
    graph = modules()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            dep = dep if dep in graph else next((m for m in graph if dep.startswith(m + ".")), dep)
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [dep]))
            if dep in graph and not state.get(dep):
                visit(dep, path + [dep])
        state[node] = 2

    for mod in graph:
        if not state.get(mod):
            visit(mod, [mod])


def test_flake8_is_clean():
    """setup.cfg's [flake8] rules hold for the whole tree (120 columns, no unused imports)."""
    pytest.importorskip("flake8")   # only the test extra installs it
    proc = subprocess.run([sys.executable, "-m", "flake8"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
