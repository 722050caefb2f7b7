"""Process stays off the page (STYLE 25): the chapters state findings, the provenance appendix says where they come from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spreadcon.book.provenance import missing_commands, records_markdown

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("0[1-6]_*.md"))
APPENDIX = BOOK / "appendix_provenance.md"
PROCESS_WORDS = ("source hash", "worktree", "edition", "Cells marked *not run yet* come from", "clean checkout",
                 "wrong gradient")


def test_there_are_six_chapters():
    assert [p.name[:2] for p in CHAPTERS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_carries_no_provenance_machinery(chapter):
    text = chapter.read_text().lower()
    found = [w for w in PROCESS_WORDS if w.lower() in text]
    assert not found, f"{chapter.name} carries {found}: they belong in {APPENDIX.name}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_claims_table_is_shown_once(chapter):
    # a glued claims table is shown by its {glue:md}; a display() of the same table would show it twice
    assert chapter.read_text().count("claims_markdown(") <= 1


def test_every_appendix_link_of_a_chapter_has_its_target():
    targets = set(re.findall(r"^\((prov-[\w-]+)\)=$", APPENDIX.read_text(), flags=re.M))
    links = {m for p in CHAPTERS for m in re.findall(r"\{ref\}`(?:[^`<]*<)?(prov-[\w-]+)>?`", p.read_text())}
    assert {"prov-todo", "prov-gradient", "prov-mnist-cifar"} <= links
    assert links <= targets, f"links without a target: {sorted(links - targets)}"


def _rec(method, h, *, dataset="mnist", preset="cpu", scheme=None):
    prov = {"git_commit": "c" * 40, **({"source_hash": h} if h else {}), **({"hash_scheme": scheme} if scheme else {})}
    return {"dataset": dataset, "preset": preset, "method": method, "provenance": prov}


def test_records_table_counts_hashes_commits_and_schemes():
    md = records_markdown([_rec("ce", "a" * 64, scheme=2), _rec("thanos", "b" * 64), _rec("ce", None),
                           _rec("ce", "a" * 64, dataset="cifar10", preset="paper", scheme=2)]).splitlines()
    assert len(md) == 4  # header, rule, one row per (dataset, preset)
    assert md[2] == ("| cifar10 | paper | ce | 1 | aaaaaaaa (1) | cccccccc (1) | 2 (1) |")
    # a hash without a scheme predates the numbered schemes (scheme 1); no hash at all is unknown
    assert md[3] == ("| mnist | cpu | ce, thanos | 3 | aaaaaaaa (1), bbbbbbbb (1), unknown (1) | cccccccc (3) "
                     "| 1 (1), 2 (1), unknown (1) |")
    assert records_markdown([]) == "No records yet."


def test_records_table_escapes_strings_from_records():
    md = records_markdown([_rec("<b>x</b>", "a" * 64, dataset="d|x")])
    assert "<b>" not in md and "d|x" not in md and r"d\|x" in md


def test_missing_commands_name_only_the_missing_methods_of_the_preset():
    recs = [_rec("ce", None), _rec("thanos", None, preset="paper")]
    assert missing_commands(recs, "cpu", ["mnist"], ["ce", "thanos"], seeds=[0, 1]) == [
        "python -m spreadcon reproduce --preset cpu --datasets mnist --methods thanos --seeds 0 1"]
    assert missing_commands(recs + [_rec("thanos", None)], "cpu", ["mnist"], ["ce", "thanos"]) == []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_lines_of_provenance_leave_the_commits_out(chapter):
    calls = re.findall(r"provenance_line\(([^()]*(?:\([^()]*\))?[^()]*)\)", chapter.read_text())
    assert all("commits=False" in c for c in calls), f"{chapter.name}: {calls}"


def test_provenance_line_without_commits():
    from spreadcon.book.report import provenance_line

    rec = {"preset": "cpu", "provenance": {"git_commit": "0123456789abcdef", "torch_version": "2.x", "device": "cpu",
                                           "wall_time_s": 60.0, "started_at": "2026-01-01T00:00:00"}}
    assert "0123456789" in provenance_line([rec])
    line = provenance_line([rec], commits=False)
    assert "0123456789" not in line and "git" not in line and line.startswith("1 records; preset cpu; device cpu")
