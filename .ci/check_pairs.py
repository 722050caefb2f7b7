"""Check that every chapter's MyST Markdown source and its .ipynb agree.

A chapter is written in ``book/NN_name.md`` (MyST Markdown, jupytext header)
and paired by jupytext with ``book/NN_name.ipynb``, which Colab, nbmake and
the book build use. After editing the ``.md``, run

    .venv/bin/jupytext --sync book/NN_name.md

This check fails when

* a pair is out of sync: the cells that ``jupytext`` reads from the ``.md``
  differ from the ``.ipynb``'s in type, source or metadata (tags), or in number;
* the ``.ipynb`` carries outputs or execution counts (``--allow-outputs``
  skips this, for a checkout where nbmake wrote executed notebooks back);
* one half of a pair is missing;
* the ``.md`` half is not excluded from the book (Jupyter Book would see two
  documents with one name).

Usage: python .ci/check_pairs.py [--allow-outputs] [BOOK_DIR]
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Cell metadata that tools write while running a notebook; not part of the source.
VOLATILE = {"execution", "ExecuteTime", "collapsed", "scrolled", "jupyter"}


def paired_formats(md: Path) -> str | None:
    """The jupytext ``formats`` of a Markdown file's header, or None when it has none."""
    text = md.read_text()
    if not text.startswith("---\n"):
        return None
    header = yaml.safe_load(text.split("\n---", 1)[0][4:]) or {}
    return (header.get("jupytext") or {}).get("formats")


def _cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source, {k: v for k, v in c.metadata.items() if k not in VOLATILE}) for c in nb.cells]


def check_pair(md: Path, ipynb: Path, allow_outputs: bool = False) -> list[str]:
    """Problems of one (``.md``, ``.ipynb``) pair; empty when they agree."""
    if not ipynb.is_file():
        return [f"{md}: paired with {ipynb.name}, which is missing (run: jupytext --sync {md})"]
    problems = []
    want, have = _cells(jupytext.read(md)), _cells(nbformat.read(ipynb, as_version=4))
    if len(want) != len(have):
        problems.append(f"{ipynb}: {len(have)} cells, but {md.name} has {len(want)}")
    for i, (w, h) in enumerate(zip(want, have)):
        if w != h:
            what = "type" if w[0] != h[0] else "source" if w[1] != h[1] else "metadata"
            problems.append(f"{ipynb}: cell {i} differs from {md.name} in its {what}: {h[1][:60]!r}")
            break
    if problems:
        problems[-1] += f" (edit {md.name}, then run: jupytext --sync {md})"
    if not allow_outputs:
        nb = nbformat.read(ipynb, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        if dirty:
            problems.append(f"{ipynb}: cells {dirty} carry outputs; commit it without them "
                            f"(jupyter nbconvert --clear-output --inplace {ipynb})")
    return problems


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether Sphinx would exclude ``path`` (relative to the book root) under ``patterns``."""
    return any(fnmatch.fnmatch(path, p) for p in patterns)


def check_book(book: Path, config: Path | None = None, allow_outputs: bool = False) -> list[str]:
    """Problems of every pair under ``book``; ``config`` is the Jupyter Book ``_config.yml``."""
    problems = []
    patterns = yaml.safe_load(config.read_text()).get("exclude_patterns", []) if config else []
    pairs = 0
    for md in sorted(book.glob("*.md")):
        formats = paired_formats(md)
        if not formats or "ipynb" not in formats:
            continue
        pairs += 1
        problems += check_pair(md, md.with_suffix(".ipynb"), allow_outputs)
        rel = md.relative_to(config.parent).as_posix() if config else md.name
        if config and not excluded(rel, patterns):
            problems.append(f"{md}: not in _config.yml exclude_patterns, so the book sees it beside {md.stem}.ipynb")
    for ipynb in sorted(book.glob("*.ipynb")):
        meta = nbformat.read(ipynb, as_version=4).metadata.get("jupytext", {})
        if "md" in str(meta.get("formats", "")) and not ipynb.with_suffix(".md").is_file():
            problems.append(f"{ipynb}: paired with {ipynb.stem}.md, which is missing")
    if not pairs:
        problems.append(f"no paired MyST notebooks under {book}")
    return problems


def main(argv: list[str]) -> int:
    allow = "--allow-outputs" in argv
    args = [a for a in argv if a != "--allow-outputs"]
    book = Path(args[0]) if args else ROOT / "book"
    problems = check_book(book, ROOT / "_config.yml", allow)
    if problems:
        print("Pair check failed:\n  " + "\n  ".join(problems))
        return 1
    print(f"Pair check passed: every .md under {book} matches its .ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
