""".ci/check_html.py fails on a page seeded with each class of defect a reader
should not see (STYLE.md 19), and passes on a clean page."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_html", REPO / ".ci" / "check_html.py")
check_html = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_html)

# The shape of a myst-nb page under sphinx-book-theme: the theme's scripts in <head> and at the end of
# <body>, its onclick buttons in the header, sphinx-thebe's two scripts at the end of the article; in the
# article, prose with typeset math, a code cell and its output.
CLEAN = r"""<html><head><script src="_static/mathjax/tex-chtml-full.js"></script>
<script>DOCUMENTATION_OPTIONS.pagename = 'book/02_spread';</script></head><body>
<nav>contents</nav>
<div class="bd-header-article"><button onclick="window.print()">.pdf</button>
<button onclick="toggleFullScreen()">full screen</button></div>
<article class="bd-article">
<h1>2. Spread<a class="headerlink" href="#spread">#</a></h1>
<p>The weight <span class="math notranslate nohighlight">\(\alpha\)</span> sets the spread, and
<span class="math notranslate nohighlight">\(\tau &lt; K/\bigl((K-1)\log n\bigr)\)</span> keeps it.</p>
<div class="math notranslate nohighlight">\[\rho^\star(0) &lt; 1\]</div>
<p>Costs 5 minutes (about 40% of the build).</p>
<div class="cell docutils container">
<div class="cell_input docutils container"><div class="highlight"><pre>path = Path("/tmp/x")  # $HOME \n</pre></div></div>
<div class="cell_output docutils container">
<div class="output stream highlight-myst-ansi notranslate"><div class="highlight"><pre>within-class cosine 1.0000</pre></div></div>
</div></div>
<p>Set <code>SPREADCON_DATA=$HOME/data</code> to read the data elsewhere:</p>
<div class="highlight-bash notranslate"><div class="highlight"><pre>make book   # creates .venv, then builds /tmp-free HTML
SPREADCON_DATA=/home/me/data make test</pre></div></div>
<script type="text/x-thebe-config">
    { requestKernel: true, kernelOptions: { name: "python3", path: "./book" }, predefinedOutput: true }
</script>
<script>kernelName = 'python3'</script>
</article>
<script defer src="_static/scripts/pydata-sphinx-theme.js"></script></body></html>"""


def seeded(snippet: str) -> str:
    return CLEAN.replace("</article>", snippet + "</article>")


def test_clean_page_passes():
    assert check_html.page_problems(CLEAN) == []


@pytest.mark.parametrize("snippet, defect", [
    # The chapter 2 bug: $$...$$ inside a list item, left as text.
    (r"<ul><li><p>positive iff $\tau &lt; K/\bigl((K-1)\log n\bigr)$. Then</p></li></ul>", "raw TeX"),
    (r"<p>then \rho^\star(0) &lt; 1 and no collapse</p>", "raw TeX"),
    (r"<p>$$ and the prose after it</p>", "raw TeX"),
    (r"<p>costs 5 $ per run</p>", "raw TeX"),
    (r"<p>the display \[ x \] is not typeset</p>", "raw TeX"),
    ("<div class=\"cell_output\"><pre>records from /work/main/results; build-time runs in /tmp/spreadcon-live-x1</pre></div>",
     "absolute build path"),
    ("<div class=\"cell_output\"><pre>record written to /home/ann/results/a.json</pre></div>", "absolute build path"),
    ("<div class=\"cell_output\"><pre>/opt/proj/.venv/lib/python3.11/tqdm/auto.py:21</pre></div>", "absolute build path"),
    ("<div class=\"output stderr highlight-myst-ansi notranslate\"><div class=\"highlight\"><pre></pre></div></div>",
     "stderr output box"),
    ("<div class=\"cell_output\"><pre>ch3.py:12: UserWarning: Attempting to set identical low and high xlims</pre></div>",
     "a warning"),
    ("<p>Warning: this ran on a smoke preset</p>", "a warning"),
    ("<div class=\"cell_output\"><pre>epoch 2:  45%|████▌     | 9/20 [00:01&lt;00:02,  4.50it/s]</pre></div>",
     "progress-bar snapshot"),
    ("<div class=\"cell_output\"><pre>train: 100%|##########| 20/20</pre></div>", "progress-bar snapshot"),
    ("<script type=\"application/vnd.jupyter.widget-view+json\">{\"model_id\": \"ab\"}</script>", "progress widget"),
    ("<p>as the contract says (CONTRACT §1)</p>", "readers do not have"),
    ("<figcaption><strong>0 of 3 have `paper` records.</strong></figcaption>", "unrendered Markdown"),
    # a record's device and git commit, rendered raw into a table by chapter 4 (stored script injection)
    ("<table><tr><td><img src=x onerror=alert(1)></td></tr></table>", "event-handler attribute"),
    ("<table><tr><td><script>alert(1)</script></td></tr></table>", "<script> element"),
    ("<div class=\"cell_output\"><script>document.title = 'x'</script></div>", "<script> element"),
    ("<p><a href=\" javascript:alert(1)\">x</a></p>", "javascript: URL"),
    ("<p><svg onload=\"alert(1)\"></svg></p>", "event-handler attribute"),
    ("<script>kernelName = 'python3'; alert(1)</script>", "<script> element"),  # not sphinx-thebe's line
])
def test_seeded_defect_fails(snippet, defect):
    problems = check_html.page_problems(seeded(snippet))
    assert len(problems) == 1 and defect in problems[0], problems


def test_site_check_reads_the_toc_and_fails_on_a_defect(tmp_path):
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("root: book/intro\nparts:\n  - chapters:\n      - file: book/ch\n")
    html = tmp_path / "html"
    (html / "book").mkdir(parents=True)
    (html / "_static" / "mathjax").mkdir(parents=True)
    (html / "_static" / "mathjax" / "tex-chtml-full.js").write_text("")
    (html / "book" / "intro.html").write_text(CLEAN)
    (html / "book" / "ch.html").write_text(CLEAN)
    assert check_html.site_problems(html, root) == ([], 2)
    (html / "book" / "ch.html").write_text(seeded("<p>UserWarning: boom</p>"))
    problems, _ = check_html.site_problems(html, root)
    assert len(problems) == 1 and problems[0].startswith(str(html / "book" / "ch.html"))
    (html / "book" / "intro.html").unlink()
    assert any(p.startswith("missing page") for p in check_html.site_problems(html, root)[0])


def test_a_record_injected_into_a_table_fails_the_check_however_it_is_hidden():
    """The check stripped scripts before it looked, so a page carrying them passed."""
    page = seeded('<div class="cell_output"><table><tr><td><img src=x onerror=alert(1)></td>'
                  '<td><script>alert(1)</script></td></tr></table></div>')
    problems = check_html.page_problems(page)
    assert sorted(p.split(" (")[0] for p in problems) == ["a <script> element in the page body",
                                                          "an event-handler attribute in the page body"]


def _player_page() -> tuple[str, str]:
    """A page whose article holds chapter 2's slider as myst-nb renders a text/html output; and the player."""
    import matplotlib

    matplotlib.use("Agg")
    from spreadcon.book.figures import spread_slider_html

    player = spread_slider_html([0.0, 0.5], n=4)
    return seeded(f'<div class="cell_output"><div class="output text_html">{player}</div></div>'), player


def test_matplotlibs_animation_player_passes_as_its_template_writes_it():
    page, player = _player_page()
    assert "<script" in player and 'onclick="anim' in player
    assert check_html.page_problems(page) == []


@pytest.mark.parametrize("change, defect", [
    # one statement added to the player's class, or to the script that starts it
    (lambda p: p.replace("this.img_id = img_id;", "this.img_id = img_id; fetch('https://x.example');", 1),
     "<script> element"),
    (lambda p: p.replace("/* Instantiate the Animation class. */", "alert(1); /* Instantiate the Animation class. */"),
     "<script> element"),
    # a frame that closes its string to run code
    (lambda p: re.sub(r'(frames\[0\] = "data:image/png;base64,)', r'\1"; alert(1); "', p, count=1),
     "<script> element"),
    # a handler that calls something else besides the player's method
    (lambda p: p.replace(".faster()\"", ".faster(); alert(1)\"", 1), "event-handler attribute"),
    (lambda p: p.replace('<input id="_anim_slider', '<input onfocus="alert(1)" id="_anim_slider', 1),
     "event-handler attribute"),
])
def test_a_changed_player_fails(change, defect):
    page, _ = _player_page()
    changed = change(page)
    assert changed != page
    problems = check_html.page_problems(changed)
    assert len(problems) == 1 and defect in problems[0], problems


def _cache_executions(cache_dir: Path, notebooks: dict[str, Path]) -> dict[str, object]:
    """jupyter-cache records of executed copies of ``notebooks``, as myst-nb stores them; ``{name: notebook}``."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache, read = get_cache(str(cache_dir)), {}
    for name, path in notebooks.items():
        nb = nbformat.read(path, as_version=4)
        nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
        nb.cells[0].execution_count = 1
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path)), check_validity=False, overwrite=True)
        read[name] = nbformat.read(path, as_version=4)
    return read


def test_a_failed_check_forgets_the_failed_chapters_cached_execution(tmp_path):
    """`make book` after a failed check executed nothing and failed again on the same cached outputs."""
    import nbformat
    from jupyter_cache import get_cache

    root, build = tmp_path / "repo", tmp_path / "repo" / "_build"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("root: book/intro\nparts:\n  - chapters:\n      - file: book/a\n"
                                   "      - file: book/b\n")
    notebooks = {}
    for name in ("a", "b"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"print('{name}')")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        notebooks[name] = root / "book" / f"{name}.ipynb"
        nbformat.write(nb, notebooks[name])
    read = _cache_executions(build / ".jupyter_cache", notebooks)
    html = build / "html"
    (html / "book").mkdir(parents=True)
    (html / "_static" / "mathjax").mkdir(parents=True)
    (html / "_static" / "mathjax" / "tex-chtml-full.js").write_text("")
    for page in ("intro", "a", "b"):
        (html / "book" / f"{page}.html").write_text(CLEAN)
    env = build / ".doctrees" / "environment.pickle"
    env.parent.mkdir(parents=True)
    env.write_bytes(b"sphinx")

    assert check_html.main([str(html), "--forget-failed", str(build)], root=root) == 0  # a pass forgets nothing
    assert env.is_file()
    stderr_box = '<div class="output stderr"><pre>spreadcon: decoded cifar10-jpeg once into /root/.cache/x</pre></div>'
    (html / "book" / "b.html").write_text(seeded(stderr_box))
    assert check_html.main([str(html), "--forget-failed", str(build)], root=root) == 1
    cache = get_cache(str(build / ".jupyter_cache"))
    assert cache.match_cache_notebook(read["a"]).uri == str(notebooks["a"])  # the passing chapter stays cached
    with pytest.raises(KeyError):
        cache.match_cache_notebook(read["b"])  # the failing one executes again on the next build
    assert not env.exists()  # and Sphinx reads every page again, so it asks the cache
    assert check_html.main([str(html)], root=root) == 1  # without the option, a failure forgets nothing
