"""The package's modules import each other without cycles.

A cycle (``bench -> engine -> data.augment -> bench`` was one) makes the
import order matter and hides layering mistakes. The check reads the source
(nothing is imported), with the project's tool where it is available and the
same rule written here otherwise.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO.parent / "shared" / "tools" / "import_cycles.py"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file, lazy imports included).

    A package's ``__init__`` re-exporting its own submodules, and a module
    importing its own package, are not counted (as in the shared tool).
    """
    mods = {}
    for f in package.rglob("*.py"):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = m.split(".") if is_pkg else m.split(".")[:-1]
                base = base[: len(base) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not (is_pkg and t.startswith(m + ".")) and not m.startswith(t + "."):
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_check_sees_a_cycle(tmp_path):
    """The check can fail: a two-module cycle, one of its imports lazy, is found."""
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from toy.a import g\n")
    (pkg / "c.py").write_text("import toy.a\n")
    assert cycles(import_graph(pkg)) == [["toy.a", "toy.b"]]


def test_spreadcon_has_no_import_cycles():
    assert cycles(import_graph(REPO / "spreadcon")) == []


@pytest.mark.skipif(not TOOL.is_file(), reason=f"the shared tool {TOOL} is not in this checkout's neighbourhood")
def test_shared_tool_agrees():
    out = subprocess.run([sys.executable, str(TOOL), "spreadcon"], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
