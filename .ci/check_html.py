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
* unrendered Markdown: a backtick in text;
* active content in the article (the page's body, where cell outputs and
  record strings land): a ``<script>`` element, an ``on*`` event-handler
  attribute (``onerror``, ``onclick``, ...) or a ``javascript:`` URL. The
  theme's own scripts sit in ``<head>`` and at the end of ``<body>``, its
  ``onclick`` buttons in the header, all outside the article; the only
  scripts it puts inside are sphinx-thebe's two (:func:`_theme_script`).
  The one other exception is matplotlib's animation player
  (``Animation.to_jshtml``, chapter 2's slider): its two scripts and its
  buttons' handlers pass only when they are the installed matplotlib's own
  template, character for character, with nothing variable but the
  animation's id, frame count, interval and base64 PNG/JPEG frames
  (:func:`_player_patterns`).

On failure, ``--forget-failed BUILD_DIR`` (``make book`` passes ``_build``)
makes the next build run instead of failing on the same outputs without
running anything: it removes the jupyter-cache entries
(``BUILD_DIR/.jupyter_cache``) of the notebooks whose pages failed, and Sphinx's
saved environment (``BUILD_DIR/.doctrees/environment.pickle``), without which
Sphinx reads no unchanged source again and so never asks the cache.

Usage: python .ci/check_html.py [HTML_DIR] [--forget-failed BUILD_DIR]
"""

from __future__ import annotations

import argparse
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
THEBE_KERNEL = re.compile(r"\s*kernelName = '[\w.-]+'\s*")
URL_ATTRS = ("href", "src", "action", "formaction", "xlink:href", "data", "srcdoc")


def _article(soup: BeautifulSoup):
    """The page's content (the article), else the whole body."""
    return soup.select_one("article") or soup.select_one("main") or soup.body or soup


def _snippet(text: str, match: re.Match) -> str:
    return " ".join(text[max(0, match.start() - 40): match.end() + 40].split())


def _theme_script(tag) -> bool:
    """One of the two scripts sphinx-thebe appends to every article: its configuration (a
    ``text/x-thebe-config`` data block, which the browser does not run) and ``kernelName = '...'``."""
    if tag.parent is None or tag.parent.name != "article":
        return False
    if tag.attrs == {"type": "text/x-thebe-config"}:
        return True
    return not tag.attrs and THEBE_KERNEL.fullmatch(tag.string or "") is not None


#: what may vary between two players that matplotlib's template writes: nothing that can hold code
_PLAYER_FIELDS = {"id": r"[0-9a-f]{32}", "Nframes": r"\d+", "interval": r"\d+(?:\.\d+)?",
                  "fill_frames": r'\s*(?:frames\[\d+\] = "data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=\\\n]*"\s*)*'}


def _player_patterns() -> tuple[list[re.Pattern], dict[str, list[re.Pattern]]]:
    """The scripts and the event handlers (by attribute) of matplotlib's animation player, as regexes.

    Built from the installed matplotlib's own template (``matplotlib._animation_data``):
    ``JS_INCLUDE``'s script is taken literally, ``DISPLAY_TEMPLATE``'s script and
    handlers with each format field replaced by :data:`_PLAYER_FIELDS`. Without
    matplotlib, or with a template this does not understand, nothing is allowed.
    """
    import string

    try:
        from matplotlib import _animation_data as tpl

        def regex(template: str) -> re.Pattern:
            parts = []
            for literal, field, _, _ in string.Formatter().parse(template):
                parts.append(re.escape(literal))
                if field is not None:
                    parts.append(_PLAYER_FIELDS[field])
            return re.compile("".join(parts))

        body = r"<script[^>]*>(.*?)</script>"
        scripts = [re.compile(re.escape(x)) for x in re.findall(body, tpl.JS_INCLUDE, re.S)]
        scripts += [regex(x) for x in re.findall(body, tpl.DISPLAY_TEMPLATE, re.S)]
        handlers: dict[str, list[re.Pattern]] = {}
        for name, value in re.findall(r'\s(on\w+)="([^"]*)"', tpl.DISPLAY_TEMPLATE):
            handlers.setdefault(name.lower(), []).append(regex(value))
        return scripts, handlers
    except (ImportError, AttributeError, KeyError, ValueError):
        return [], {}


def _player_script(tag, patterns: list[re.Pattern]) -> bool:
    return tag.attrs == {"language": "javascript"} and any(p.fullmatch(tag.string or "") for p in patterns)


def _player_handler(tag, attr: str, patterns: dict[str, list[re.Pattern]]) -> bool:
    return any(p.fullmatch(str(tag.get(attr))) for p in patterns.get(attr.lower(), []))


def active_content(article) -> list[str]:
    """Scripts, event handlers and ``javascript:`` URLs in the article: one problem per kind, with the first."""
    player_scripts, player_handlers = _player_patterns()
    scripts = [t for t in article.find_all("script") if not _theme_script(t)
               and not _player_script(t, player_scripts)
               and not t.get("type", "").startswith("application/vnd.jupyter.widget")]  # a widget has its own check
    handlers = [(t, a) for t in article.find_all(True) for a in t.attrs if a.lower().startswith("on")
                and not _player_handler(t, a, player_handlers)]
    urls = [(t, a) for t in article.find_all(True) for a in URL_ATTRS
            if re.sub(r"[\x00-\x20]", "", str(t.get(a, ""))).lower().startswith("javascript:")]
    problems = []
    if scripts:
        problems.append(f"a <script> element in the page body ({len(scripts)}): {str(scripts[0])[:120]}")
    if handlers:
        (tag, attr), n = handlers[0], len(handlers)
        problems.append(f"an event-handler attribute in the page body ({n}): {attr}= on <{tag.name}>: {str(tag)[:120]}")
    if urls:
        (tag, attr), n = urls[0], len(urls)
        problems.append(f"a javascript: URL in the page body ({n}): {attr}= on <{tag.name}>: {str(tag)[:120]}")
    return problems


def page_problems(html: str) -> list[str]:
    """What a reader should not see on one page of HTML; empty when it is clean."""
    soup = BeautifulSoup(html, "html.parser")
    article = _article(soup)
    problems = active_content(article)   # before anything is stripped: a script must not hide from the check
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


def _file_problems(out: Path, source: Path) -> list[str]:
    """Problems of one built page ``out`` (``source``: its notebook, if the page is one)."""
    if not out.is_file():
        return [f"missing page {out}"]
    text = out.read_text(errors="replace")
    problems = []
    if 'class="math' in text and "mathjax/tex-chtml-full.js" not in text:
        problems.append("has math but MathJax is not the local copy")
    if re.search(r"cdn\.jsdelivr\.net/npm/mathjax", text):
        problems.append("loads MathJax from a CDN")
    if "Traceback (most recent call last)" in text or 'class="output traceback' in text:
        problems.append("contains an error traceback")
    if source.is_file() and "cell_output" not in text:
        problems.append("notebook page has no executed output")
    if source.is_file() and "matplotlib" in source.read_text() and "_images/" not in text:
        problems.append("the notebook plots, but the page has no figure image")
    if "&lt;Figure size" in text:
        problems.append("a figure rendered as text (no image/png output; is MPLBACKEND set?)")
    if re.search(r"<p>\|[^<]*\|\s*\|?(-{3}|\u2014)", text):
        problems.append("a Markdown table rendered as plain text")
    return [f"{out}: {p}" for p in problems + page_problems(text)]


def page_problems_by_page(html_dir: Path, root: Path = ROOT) -> tuple[dict[str, list[str]], list[str]]:
    """``({page: its problems}, site-wide problems)`` of the book under ``html_dir``; pages
    (``book/06_robustness``) from ``root``'s ``_toc.yml``, every one a key."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    by_page = {page: _file_problems(html_dir / f"{page}.html", root / f"{page}.ipynb") for page in pages}
    site = [] if (html_dir / "_static" / "mathjax" / "tex-chtml-full.js").is_file() else [
        "MathJax missing from _build/html/_static/mathjax"]
    return by_page, site


def site_problems(html_dir: Path, root: Path = ROOT) -> tuple[list[str], int]:
    """Problems of the built book under ``html_dir``, and its page count (pages from ``root``'s ``_toc.yml``)."""
    by_page, site = page_problems_by_page(html_dir, root)
    return [p for problems in by_page.values() for p in problems] + site, len(by_page)


def forget_cached(cache_dir: Path, notebooks: list[Path]) -> list[Path]:
    """Remove jupyter-cache's executed copies of ``notebooks`` from ``cache_dir``; returns those it had.

    ``make book`` reuses a cached execution while a notebook's code is unchanged
    (myst-nb matches it by the hash of its code cells; jupyter-cache never
    caches an execution that raised). Outputs that built a failing page would
    fail every later build without running anything; forgotten, the notebook
    executes again on the next ``make book``. A record is removed when it
    matches the notebook's code or was cached from the notebook's path.
    """
    if not cache_dir.is_dir() or not notebooks:
        return []
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    gone = []
    for nb in notebooks:
        pks = {r.pk for r in cache.list_cache_records() if Path(r.uri).resolve() == nb.resolve()}
        if nb.is_file():
            try:
                pks.add(cache.match_cache_notebook(nbformat.read(nb, as_version=4)).pk)
            except KeyError:  # no cached execution of this code
                pass
        for pk in sorted(pks):
            cache.remove_cache(pk)
        if pks:
            gone.append(nb)
    return gone


def main(argv: list[str], root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(prog="check_html.py", description="check the built HTML of the book")
    parser.add_argument("html_dir", nargs="?", default="_build/html", type=Path)
    parser.add_argument("--forget-failed", metavar="BUILD_DIR", type=Path, default=None,
                        help="on failure, remove from Jupyter Book's build folder (_build) the jupyter-cache entries "
                             "of the notebooks whose pages failed and Sphinx's saved environment, so the next "
                             "build reads every page again and executes those notebooks again")
    args = parser.parse_args(argv)
    by_page, site = page_problems_by_page(args.html_dir, root)
    problems = [p for page in by_page.values() for p in page] + site
    if not problems:
        print(f"HTML check passed: {len(by_page)} pages under {args.html_dir}")
        return 0
    print("HTML check failed:\n  " + "\n  ".join(problems))
    if args.forget_failed is not None:
        forget_failed(args.forget_failed, [root / f"{page}.ipynb" for page, found in by_page.items() if found], root)
    return 1


def forget_failed(build_dir: Path, notebooks: list[Path], root: Path = ROOT) -> None:
    """After a failed check: forget the cached executions of ``notebooks`` and Sphinx's saved environment."""
    gone = forget_cached(build_dir / ".jupyter_cache", notebooks)
    (build_dir / ".doctrees" / "environment.pickle").unlink(missing_ok=True)
    if gone:
        print(f"forgot the cached executions of {', '.join(str(nb.relative_to(root)) for nb in gone)}: "
              "the next build executes them again")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
