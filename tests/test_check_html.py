""".ci/check_html.py fails on a page seeded with each class of defect a reader
should not see (STYLE.md 19), and passes on a clean page."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_html", REPO / ".ci" / "check_html.py")
check_html = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_html)

# The shape of a myst-nb page: prose with typeset math, a code cell and its output.
CLEAN = r"""<html><head><script src="_static/mathjax/tex-chtml-full.js"></script></head><body>
<nav>contents</nav>
<article>
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
</article></body></html>"""


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
