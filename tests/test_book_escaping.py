"""A record's strings reach the book's tables as text, never as markup.

Chapter 4 put a record's provenance (device, git commit) into a Markdown table
raw, and MyST passes raw HTML through: a device recorded as
``<img src=x onerror=alert(1)>`` became an element of the published page.
Each table builder of ``spreadcon.book`` is rendered here with the book's own
Markdown parser (MyST, the extensions of ``_config.yml``) and the HTML is
inspected: no element may come out of a record, and the record's text must
still be there to read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

from spreadcon.book import collapse, proxies, report
from spreadcon.book.markup import escape_md

REPO = Path(__file__).resolve().parents[1]
DEVICE = "<img src=x onerror=alert(1)>"
COMMIT = "<script>alert(1)</script>"


def render(markdown: str) -> BeautifulSoup:
    """HTML of ``markdown`` as the book renders a cell's Markdown output (``nb_render_markdown_format: myst``)."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    extensions = yaml.safe_load((REPO / "_config.yml").read_text())["parse"]["myst_enable_extensions"]
    parser = create_md_parser(MdParserConfig(enable_extensions=set(extensions)), RendererHTML)
    return BeautifulSoup(parser.render(markdown), "html.parser")


def assert_shown_as_text(markdown: str, *texts: str) -> None:
    html = render(markdown)
    assert html.find("table") is not None, markdown          # still a table
    assert html.find_all(["img", "script"]) == [], str(html)
    assert [a for t in html.find_all(True) for a in t.attrs if a.startswith("on")] == [], str(html)
    shown = " ".join(html.get_text(" ").split())
    for text in texts:
        assert text in shown, (text, shown)


def hostile(dataset="d", method="m", seed=0, metrics=None):
    return {"dataset": dataset, "method": method, "seed": seed, "preset": "cpu", "task": "robustness",
            "metrics": metrics or {"fine_test_acc": 0.5},
            "provenance": {"git_commit": COMMIT, "torch_version": "2.x", "device": DEVICE,
                           "started_at": "2026-01-01T00:00:00+00:00", "wall_time_s": 10.0, "config": {}}}


def test_provenance_line_in_a_table_cell_as_chapter_4_uses_it():
    recs = [hostile(seed=0), hostile(seed=1)]
    row = f"| loss | records |\n|---|---|\n| SupCon | {report.provenance_line(recs)} |"
    assert_shown_as_text(row, f"device {DEVICE}", f"git {COMMIT[:10]}")


def test_markdown_table_labels_from_records():
    recs = [hostile(dataset=COMMIT, method=DEVICE, seed=s) for s in (0, 1)]
    table = report.summarize(recs, "fine_test_acc")
    md = report.markdown_table(table, [DEVICE], [COMMIT], row_title=DEVICE, missing=COMMIT,
                               extra_cols={COMMIT: {DEVICE: COMMIT}})
    assert_shown_as_text(md, DEVICE, COMMIT, "50.0 ± 0.0 (n=2)")


def test_validation_markdown_dataset_from_records():
    metrics = {"coarse_head_test_acc": 0.7, "oracle_worst_group_acc": 0.7, "erm_worst_group_acc": 0.4}
    recs = [hostile(dataset=DEVICE, method="ce", seed=s, metrics=metrics) for s in (0, 1)]
    md = proxies.validation_markdown({DEVICE: proxies.proxy_validation(recs, DEVICE),
                                      COMMIT: proxies.proxy_validation([], COMMIT)})
    assert_shown_as_text(md, f"{DEVICE} class head, balanced test 70.0", f"{COMMIT} no ERM records yet")


def test_explanation_markdown_method_from_records():
    recs = [hostile(dataset="p", method=m, seed=s, metrics={"inferred_group_ami": 0.2 + s / 100,
                                                            "inferred_fine_ami": 0.1 + s / 100})
            for m in (DEVICE, COMMIT) for s in (0, 1)]
    rows = proxies.explanation_rows(recs, "p", [DEVICE, COMMIT], baseline=COMMIT)
    md = proxies.explanation_markdown(rows, baseline=COMMIT)
    assert_shown_as_text(md, f"{DEVICE} 20.5 ± 0.7 (n=2)", f"against {COMMIT}")


def test_metrics_markdown_keys():
    assert_shown_as_text(collapse.metrics_markdown([{DEVICE: 0.5, "epoch": 1}]), DEVICE, "0.5")


@pytest.mark.parametrize("text", [DEVICE, COMMIT, "a|b", "`code`", "$x$", "{{ sub }}", "[l](javascript:x)",
                                  "**bold**", "&lt;b&gt;", "two\nlines", "back\\slash"])
def test_escape_md_renders_exactly_its_text(text):
    html = render(f"| h |\n|---|\n| {escape_md(text)} |")
    cells = html.find_all("td")
    assert len(cells) == 1 and cells[0].find(True) is None      # one cell, no element inside it
    assert cells[0].get_text() == " ".join(text.split())
