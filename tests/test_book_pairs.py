"""The chapters' MyST sources and their .ipynb agree (.ci/check_pairs.py), and
the check fails on each way a pair can go wrong."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jupytext
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_pairs", REPO / ".ci" / "check_pairs.py")
check_pairs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_pairs)

MD = """---
jupytext:
  formats: ipynb,md:myst
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

```{code-cell}
:tags: [parameters]

N = 3
```

Some prose.

```{code-cell}
print(N)
```
"""


def test_repository_pairs_agree():
    # Outputs are allowed here: `make ci` lets nbmake write executed chapters back.
    # On a fresh clone .ci/run checks without --allow-outputs, before anything runs.
    problems = check_pairs.check_book(REPO / "book", REPO / "_config.yml", allow_outputs=True)
    assert problems == []


def test_every_chapter_in_the_toc_has_a_markdown_source():
    toc = (REPO / "_toc.yml").read_text()
    chapters = [p for p in (REPO / "book").glob("*.ipynb") if f"book/{p.stem}" in toc and p.stem != "experiment"]
    assert len(chapters) >= 7
    assert [p.name for p in chapters if not check_pairs.paired_formats(p.with_suffix(".md"))] == []


@pytest.fixture
def pair(tmp_path):
    """A small synced pair in tmp_path/book, and a config that excludes the .md."""
    book = tmp_path / "book"
    book.mkdir()
    md = book / "01_intro.md"
    md.write_text(MD)
    jupytext.write(jupytext.read(md), md.with_suffix(".ipynb"))
    config = tmp_path / "_config.yml"
    config.write_text('exclude_patterns: ["book/[0-9][0-9]_*.md"]\n')
    return md, md.with_suffix(".ipynb"), config


def test_synced_pair_passes(pair):
    md, ipynb, config = pair
    assert check_pairs.check_book(md.parent, config) == []


def test_edited_source_fails(pair):
    md, ipynb, config = pair
    md.write_text(MD.replace("N = 3", "N = 4"))
    problems = check_pairs.check_book(md.parent, config)
    assert len(problems) == 1 and "cell 1 differs" in problems[0] and "source" in problems[0]


def test_added_cell_fails(pair):
    md, ipynb, config = pair
    md.write_text(MD + "\n```{code-cell}\nN += 1\n```\n")
    problems = check_pairs.check_book(md.parent, config)
    assert "01_intro.ipynb: 4 cells, but 01_intro.md has 5" in problems[0]


def test_changed_tag_fails(pair):
    md, ipynb, config = pair
    md.write_text(MD.replace(":tags: [parameters]", ":tags: [parameters, hide-input]"))
    problems = check_pairs.check_book(md.parent, config)
    assert len(problems) == 1 and "metadata" in problems[0]


def test_committed_outputs_fail(pair):
    md, ipynb, config = pair
    nb = json.loads(ipynb.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["3\n"]}]
    code["execution_count"] = 1
    ipynb.write_text(json.dumps(nb))
    problems = check_pairs.check_book(md.parent, config)
    assert len(problems) == 1 and "carry outputs" in problems[0]
    assert check_pairs.check_book(md.parent, config, allow_outputs=True) == []


def test_missing_ipynb_fails(pair):
    md, ipynb, config = pair
    ipynb.unlink()
    assert any("missing" in p for p in check_pairs.check_book(md.parent, config))


def test_missing_markdown_fails(pair):
    md, ipynb, config = pair
    md.rename(md.with_suffix(".txt"))
    problems = check_pairs.check_book(md.parent, config)
    assert any("01_intro.md, which is missing" in p for p in problems)


def test_markdown_half_must_be_excluded_from_the_book(pair):
    md, ipynb, config = pair
    config.write_text("exclude_patterns: [_build]\n")
    problems = check_pairs.check_book(md.parent, config)
    assert len(problems) == 1 and "exclude_patterns" in problems[0]


def test_plain_markdown_pages_are_not_pairs(tmp_path):
    (tmp_path / "intro.md").write_text("# Intro\n\nText.\n")
    assert check_pairs.paired_formats(tmp_path / "intro.md") is None
    assert check_pairs.check_book(tmp_path) == [f"no paired MyST notebooks under {tmp_path}"]
