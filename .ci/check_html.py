"""Check the built HTML of the book.

Every page in the TOC exists, executed chapters carry outputs and figures, and
MathJax is served locally. A page shows results, not machinery (STYLE.md 19),
so a page also fails when it shows

* raw TeX outside math: a TeX command (``\\tau``, ``\\bigl``), ``$$`` or a
  stray ``$`` in text that MathJax does not typeset (math it typesets sits in
  ``class="math"`` elements; code and cell outputs are not prose);
* an absolute build path (``/tmp/...``, ``/work/...``, ``/home/...``,
  ``/root/...``) or a virtual environment (``.venv``, ``site-packages``);
* a stderr output box;
* a warning (``UserWarning:``, ``Warning:``);
* a progress-bar snapshot (tqdm's ``45%|####  | 9/20 [00:01<00:02, 4.5it/s]``)
  or a progress widget;
* a traceback, or a figure rendered as text;
* a reference to a file readers do not have (``CONTRACT``);
* unrendered Markdown: a backtick in text.

Usage: python .ci/check_html.py [HTML_DIR]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]

TEX_COMMAND = re.compile(r"\\[A-Za-z]{2,}|\\[{}()\[\]]")
BUILD_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|work|home|root|Users|private/var)/[\w.-]|\.venv\b|site-packages")
WARNING = re.compile(r"\b[A-Z]?\w*Warning:")
PROGRESS = re.compile(r"\d{1,3}%\|[^|\n]*\|\s*\d+(?:\.\d+)?[kMG]?/\d+|\[\d\d:\d\d<[\d:?]+|\d(?:it|s)/(?:s|it)\]")
OUTSIDE_READERS = re.compile(r"\bCONTRACT\b")


def _article(soup: BeautifulSoup):
    """The page's content (the article), else the whole body."""
    return soup.select_one("article") or soup.select_one("main") or soup.body or soup


def _snippet(text: str, match: re.Match) -> str:
    return " ".join(text[max(0, match.start() - 40): match.end() + 40].split())


def page_problems(html: str) -> list[str]:
    """What a reader should not see on one page of HTML; empty when it is clean."""
    soup = BeautifulSoup(html, "html.parser")
    problems = []
    article = _article(soup)
    for tag in article.select("script, style, template"):
        tag.decompose()
    text = article.get_text(" ")
    checks = [(WARNING, "a warning"), (PROGRESS, "a progress-bar snapshot"),
              (OUTSIDE_READERS, "a reference to a file readers do not have")]
    for pattern, what in checks:
        m = pattern.search(text)
        if m:
            problems.append(f"{what}: ...{_snippet(text, m)}...")
    # A path in what a cell printed, or in prose, is this machine's; one in code
    # (a cell's source, a command in a code block) is the code's.
    shown = BeautifulSoup(str(article), "html.parser")
    for tag in shown.select(".cell_input, pre, code"):
        if tag.find_parent(class_="cell_output") is None and not tag.select(".cell_output"):
            tag.decompose()
    m = BUILD_PATH.search(shown.get_text(" "))
    if m:
        problems.append(f"an absolute build path: ...{_snippet(shown.get_text(' '), m)}...")
    if article.select(".output.stderr, .stderr"):
        problems.append("a stderr output box")
    if "widget-view+json" in html or article.select(".jupyter-widgets, .widget-html"):
        problems.append("a progress widget (an ipywidgets view)")
    # Prose only: drop math that MathJax typesets, code, and cell inputs and outputs.
    for tag in article.select(".math, mjx-container, .MathJax, code, pre, kbd, .cell_input, .cell_output, "
                              ".highlight, .headerlink"):
        tag.decompose()
    prose = article.get_text(" ")
    m = TEX_COMMAND.search(prose) or re.search(r"\$", prose)
    if m:
        problems.append(f"raw TeX outside math: ...{_snippet(prose, m)}...")
    m = re.search(r"`", prose)   # e.g. a glued string with Markdown code, which {glue:text} shows as is
    if m:
        problems.append(f"unrendered Markdown (a backtick) in text: ...{_snippet(prose, m)}...")
    return problems


def site_problems(html_dir: Path, root: Path = ROOT) -> tuple[list[str], int]:
    """Problems of the built book under ``html_dir``, and its page count (pages from ``root``'s ``_toc.yml``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    problems = []
    for page in pages:
        out = html_dir / f"{page}.html"
        if not out.is_file():
            problems.append(f"missing page {out}")
            continue
        text = out.read_text(errors="replace")
        if 'class="math' in text and "mathjax/tex-chtml-full.js" not in text:
            problems.append(f"{out}: has math but MathJax is not the local copy")
        if re.search(r"cdn\.jsdelivr\.net/npm/mathjax", text):
            problems.append(f"{out}: loads MathJax from a CDN")
        if "Traceback (most recent call last)" in text or 'class="output traceback' in text:
            problems.append(f"{out}: contains an error traceback")
        source = root / f"{page}.ipynb"
        if source.is_file() and "cell_output" not in text:
            problems.append(f"{out}: notebook page has no executed output")
        if source.is_file() and "matplotlib" in source.read_text() and "_images/" not in text:
            problems.append(f"{out}: the notebook plots, but the page has no figure image")
        if "&lt;Figure size" in text:
            problems.append(f"{out}: a figure rendered as text (no image/png output; is MPLBACKEND set?)")
        if re.search(r"<p>\|[^<]*\|\s*\|?(-{3}|\u2014)", text):
            problems.append(f"{out}: a Markdown table rendered as plain text")
        problems += [f"{out}: {p}" for p in page_problems(text)]
    if not (html_dir / "_static" / "mathjax" / "tex-chtml-full.js").is_file():
        problems.append("MathJax missing from _build/html/_static/mathjax")
    return problems, len(pages)


def main(argv: list[str]) -> int:
    html_dir = Path(argv[0] if argv else "_build/html")
    problems, n = site_problems(html_dir)
    if problems:
        print("HTML check failed:\n  " + "\n  ".join(problems))
        return 1
    print(f"HTML check passed: {n} pages under {html_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
