"""Book hygiene: chapters are committed without outputs, and carry the cells
that make them runnable in Colab and parameterisable with papermill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "book").glob("*.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_book_has_notebooks():
    assert NOTEBOOKS, "no notebooks under book/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path):
    """What git holds has no outputs. CI executes the chapters first and writes their outputs back
    (nbmake --overwrite), so in a git checkout the committed version is read, not the working file."""
    import subprocess

    shown = subprocess.run(["git", "show", f"HEAD:{path.relative_to(path.parents[1]).as_posix()}"],
                           cwd=path.parent, capture_output=True, text=True)
    cells = json.loads(shown.stdout)["cells"] if shown.returncode == 0 else _cells(path)
    dirty = [i for i, c in enumerate(cells) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_installs_only_in_colab(path: Path):
    first = _cells(path)[0]
    source = "".join(first["source"])
    assert first["cell_type"] == "code"
    assert "remove-cell" in first.get("metadata", {}).get("tags", [])
    assert "google.colab" in source and "pip" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_has_parameters_cell(path: Path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters'"


def test_toc_lists_every_notebook():
    toc = (REPO / "_toc.yml").read_text()
    missing = [p.stem for p in NOTEBOOKS if f"book/{p.stem}" not in toc]
    assert not missing, f"notebooks missing from _toc.yml: {missing}"
