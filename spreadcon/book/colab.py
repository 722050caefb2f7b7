"""The first cell of every chapter: in Colab, install the package and its records from the repository.

The repository's URL has one home, ``repository.url`` in ``_config.yml``: the
launch buttons read it there, and :func:`install_cell` writes it into the
cell. ``tests/test_colab.py`` checks that every notebook's first cell is
exactly ``install_cell(<that url>)``, and ``python -m spreadcon.book.colab``
rewrites the cells after the URL changes.

What the cell does, only inside Colab (or with ``SPREADCON_COLAB=1``, which
``.ci/colab_sim.py`` sets to run a chapter the way Colab sees it):

1. clone the repository (``$SPREADCON_REPO``, default the URL above; the
   simulation swaps in the local clone) into ``$SPREADCON_CHECKOUT``
   (default ``/content/spreadcon``), so the committed records come along;
2. ``pip install`` that checkout with the ``[book]`` extra, which brings
   everything a chapter imports and keeps Colab's own CUDA torch;
3. point ``$SPREADCON_RESULTS`` at the checkout's ``results/`` (the chapters'
   tables read it) and, unless set, ``$SPREADCON_DATA`` at a data folder in
   the checkout's parent, where missing datasets are downloaded.

Example:
    >>> cell = install_cell("https://example.org/x")
    >>> '"clone"' in cell and '"https://example.org/x"' in cell
    True
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

__all__ = ["install_cell", "repository_url", "rewrite_notebooks"]

_CELL = '''import os, subprocess, sys
if "google.colab" in sys.modules or os.environ.get("SPREADCON_COLAB") == "1":
    # Colab: install spreadcon and its recorded results from the repository (hidden in the book)
    repo = os.environ.get("SPREADCON_REPO", "{url}")
    dest = os.environ.get("SPREADCON_CHECKOUT", "/content/spreadcon")
    if not os.path.isdir(dest):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", repo, dest], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", dest + "[book]"], check=True)
    os.environ["SPREADCON_RESULTS"] = os.path.join(dest, "results")
    os.environ.setdefault("SPREADCON_DATA", os.path.join(os.path.dirname(dest), "spreadcon-data"))'''


def install_cell(url: str) -> str:
    """The install cell's source for the repository at ``url``."""
    return _CELL.format(url=url)


def repository_url(config: str | Path) -> str:
    """``repository.url`` from a Jupyter Book ``_config.yml`` (read without a YAML dependency)."""
    text = Path(config).read_text()
    m = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, re.M)
    if not m:
        raise ValueError(f"{config} has no repository.url")
    return m.group(1).strip("'\"")


def rewrite_notebooks(book: str | Path, url: str) -> list[Path]:
    """Make the first cell of every ``.ipynb`` under ``book`` the install cell; return those changed.

    A chapter's MyST Markdown half is regenerated from its notebook by jupytext (``.ci/check_pairs.py``
    says which pairs then differ).
    """
    changed = []
    for path in sorted(Path(book).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = nb["cells"][0]
        want = install_cell(url)
        if cell["cell_type"] == "code" and "".join(cell["source"]) != want:
            cell["source"] = want.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":  # python -m spreadcon.book.colab [BOOK_DIR [CONFIG]]
    book = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("book")
    config = Path(sys.argv[2]) if len(sys.argv) > 2 else book.parent / "_config.yml"
    for p in rewrite_notebooks(book, repository_url(config)):
        print(f"rewrote {p}")
