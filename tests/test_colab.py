"""Colab: every notebook's install cell is the one the package writes, with the one repository URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spreadcon.book.colab import install_cell, repository_url, rewrite_notebooks

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "book").glob("*.ipynb"))


def test_the_url_has_one_home_and_the_launch_buttons_use_it():
    url = repository_url(REPO / "_config.yml")
    assert url.startswith("https://github.com/")
    homes = [p for p in [*REPO.glob("*.py"), *(REPO / "spreadcon").rglob("*.py")] if url in p.read_text()]
    assert homes == []  # the package writes it from _config.yml, never keeps a copy


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_starts_with_the_install_cell(path):
    nb = json.loads(path.read_text())
    first = nb["cells"][0]
    assert first["cell_type"] == "code"
    assert "".join(first["source"]) == install_cell(repository_url(REPO / "_config.yml"))
    assert "remove-cell" in first["metadata"].get("tags", [])  # hidden in the book


def test_rewrite_puts_the_cell_first_and_is_idempotent(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": ["print(1)\n"], "outputs": [],
                     "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "a.ipynb").write_text(json.dumps(nb))
    assert rewrite_notebooks(tmp_path, "https://example.org/r") == [tmp_path / "a.ipynb"]
    got = json.loads((tmp_path / "a.ipynb").read_text())["cells"][0]["source"]
    assert "".join(got) == install_cell("https://example.org/r")
    assert rewrite_notebooks(tmp_path, "https://example.org/r") == []


def test_the_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delenv("SPREADCON_COLAB", raising=False)
    calls = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    exec(install_cell("https://example.org/r"), {})
    assert calls == []
