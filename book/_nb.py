"""Shared helpers of the notebook builders (book/_build_notebooks_*.py).

The chapters are generated: a builder lists cells made with :func:`md` and
:func:`code`, wraps them with :func:`notebook` (which prepends the Colab install
cell and gives every cell a stable id, so rebuilding does not churn the diff)
and saves them with :func:`write`, without outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

BOOK = Path(__file__).resolve().parent

COLAB = (
    "import sys\n"
    'if "google.colab" in sys.modules:\n'
    "    get_ipython().run_line_magic(\"pip\", \"install -q 'spreadcon[book] @ git+https://github.com/spreadcon/spreadcon'\")"
)


def md(text: str) -> nbformat.NotebookNode:
    """A markdown cell; leading and trailing newlines are dropped."""
    return new_markdown_cell(text.strip("\n"))


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    """A code cell with optional tags (``parameters``, ``remove-cell``, ...)."""
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def notebook(cells) -> nbformat.NotebookNode:
    """The Colab install cell (tagged ``remove-cell``) followed by ``cells``, with ids ``cell-00``, ``cell-01``, ..."""
    nb = new_notebook(cells=[code(COLAB, "remove-cell"), *cells])
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write(name: str, nb: nbformat.NotebookNode) -> None:
    """Validate and save ``book/<name>.ipynb``."""
    nbformat.validate(nb)
    path = BOOK / f"{name}.ipynb"
    path.write_text(nbformat.writes(nb) + "\n")
    print(f"wrote {path}")
