"""The layout of the package: no import cycle, and torch only where a model trains."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "poisoncert").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the poisoncert modules it imports, at module level or inside functions."""
    mods = _modules()

    def home(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[mod] |= {t for t in map(home, names) if t and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = import_graph()
    assert "poisoncert.ray_executor" in graph["poisoncert.executors"]  # the graph sees lazy imports
    assert cycles(graph) == []


def test_only_training_imports_torch():
    """The math, the config and the experiment layer (and so ``poisoncert certify``) load
    without torch; it is imported when a model trains."""
    code = ("import sys, poisoncert.config, poisoncert.selection, poisoncert.votes, "
            "poisoncert.certify, poisoncert.training.settings, poisoncert.experiment, "
            "poisoncert.cli; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_progress_display_imports_the_cli():
    """docs/architecture.md: nothing below the CLI imports it but ``experiment.display``,
    which draws the CLI's bar for ``progress=True``."""
    graph = import_graph()
    importers = sorted(m for m, deps in graph.items()
                       if any(d == "poisoncert.cli" or d.startswith("poisoncert.cli.")
                              for d in deps)
                       and not (m == "poisoncert.cli" or m.startswith("poisoncert.cli.")
                                or m == "poisoncert._console"))
    assert importers == ["poisoncert.experiment.display"]
