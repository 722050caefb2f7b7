"""Damaged or hostile record files: each is named in one line and left out, never silently skipped,
never counted twice and never a crash of the book build (spreadcon.runs.records.load_records and the
book's loaders)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from spreadcon.book import evidence, proxies, report
from spreadcon.runs import records

REPO = Path(__file__).resolve().parents[1]


def _record(seed=0, task="transfer", **extra):
    metrics = ({"fine_test_acc": 0.5, "coarse_test_acc": 0.9} if task == "transfer"
               else {"worst_group_acc": 0.5, "avg_acc": 0.6})
    return records.make_record(dataset="mnist", method="spread", preset="smoke", seed=seed, task=task,
                               metrics=metrics, config={"alpha": 0.5}, started_at="2026-01-01T00:00:00+00:00",
                               wall_time_s=1.0, git="0" * 40, extra=extra or None)


def test_a_truncated_record_is_named_once_and_left_out(tmp_path, capsys):
    records.write_record(_record(0), tmp_path)
    damaged = records.write_record(_record(1), tmp_path)
    damaged.write_text(damaged.read_text()[:100])        # a copy cut short
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "cpu.json").write_text("{}")    # not under a task folder: not a record at all

    loaded = records.load_records(tmp_path)
    assert [r["seed"] for r in loaded] == [0]
    assert [(p.path, p.kind) for p in loaded.problems] == [(damaged, records.DAMAGED)]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(damaged) in err[0] and "damaged" in err[0] and "not strict JSON" in err[0]

    again = records.load_records(tmp_path)                # a second table of the same page: not named again
    assert len(again.problems) == 1 and capsys.readouterr().err == ""
    assert records.load_records(tmp_path, seed=0).problems == loaded.problems  # it could have been seed 0
    assert records.load_records(tmp_path, preset="cpu").problems == []          # its folder says smoke


def test_a_copied_record_is_a_duplicate_not_a_second_seed(tmp_path, capsys):
    path = records.write_record(_record(0), tmp_path)
    copy = path.with_name("spread_seed0 (1).json")
    shutil.copy(path, copy)
    renamed = path.with_name("spread_seed5.json")         # seed 0's record under seed 5's name
    shutil.copy(path, renamed)

    loaded = records.load_records(tmp_path)
    cell = report.summarize(loaded, "fine_test_acc")["mnist", "spread"]
    assert (cell.n, cell.seeds) == (1, (0,))
    assert sorted((p.path.name, p.kind) for p in loaded.problems) == [
        ("spread_seed0 (1).json", records.DUPLICATE), ("spread_seed5.json", records.DUPLICATE)]
    assert all(str(path) in p.reason for p in loaded.problems)  # each says whose record it holds
    assert len(capsys.readouterr().err.splitlines()) == 2


def _hostile(record: dict, change: str) -> str:
    """The JSON text of ``record`` with one hostile change."""
    r = json.loads(json.dumps(record))
    if change == "metrics list":      # passes a `key in metrics` check, then has no .items()
        r["metrics"] = ["fine_test_acc", "coarse_test_acc"]
    elif change == "provenance string":  # every key name is a substring of it
        r["provenance"] = " ".join(records.PROVENANCE_KEYS)
    elif change == "bool accuracy":
        r["metrics"]["fine_test_acc"] = True
    elif change == "string seed":
        r["seed"] = "0"
    elif change == "bool seed":
        r["seed"] = False
    elif change == "numeric dataset":
        r["dataset"] = 7
    elif change == "wall time string":
        r["provenance"]["wall_time_s"] = "1"
    elif change == "config list":
        r["provenance"]["config"] = []
    elif change == "per-group list":
        r["metrics"]["per_group_acc"] = [0.5]
    elif change == "epochs garbage":
        r["metrics_by_epoch"] = {"1": "high"}
    elif change == "map of strings":
        r["embedding_map"] = {"coarse": 0, "fine": [0, 1], "xy": [["<script>", 0.0], [0.1, 0.2]],
                              "explained": 0.5, "scale": 0.1}
    elif change == "map too short":
        r["embedding_map"] = {"coarse": 0, "fine": [0, 1], "xy": [[0.0, 0.0]], "explained": 0.5, "scale": 0.1}
    elif change == "not an object":
        r = [r]
    text = json.dumps(r)
    if change == "NaN accuracy":
        text = text.replace('"fine_test_acc": 0.5', '"fine_test_acc": NaN')
    elif change == "infinite wall time":
        text = text.replace('"wall_time_s": 1.0', '"wall_time_s": 1e999')
    elif change == "key twice":
        text = text.replace('"seed": 0', '"seed": 0, "seed": 1')
    return text


HOSTILE = ["metrics list", "provenance string", "bool accuracy", "string seed", "bool seed", "numeric dataset",
           "wall time string", "config list", "per-group list", "epochs garbage", "map of strings", "map too short", "not an object",
           "NaN accuracy", "infinite wall time", "key twice"]


@pytest.mark.parametrize("change", HOSTILE)
def test_a_hostile_record_is_damaged_not_a_crash_nor_a_number(change, tmp_path, capsys):
    good = _record(0)
    path = records.record_path(tmp_path, task="transfer", dataset="mnist", preset="smoke", method="spread", seed=0)
    path.parent.mkdir(parents=True)
    text = _hostile(good, change)
    assert text != json.dumps(good)  # the change happened
    path.write_text(text)

    loaded = records.load_records(tmp_path)
    assert list(loaded) == [] and [(p.path, p.kind) for p in loaded.problems] == [(path, records.DAMAGED)]
    assert report.summarize(loaded, "fine_test_acc") == {}
    assert evidence.committed(tmp_path).problems == loaded.problems
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(path) in err[0]


def test_records_are_written_as_strict_json(tmp_path):
    rec = _record(0)
    rec["provenance"]["config"]["lr"] = float("nan")   # JSON has no NaN: refused before any file is touched
    with pytest.raises(ValueError):
        records.write_record(rec, tmp_path)
    assert not list(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="not strict JSON"):
        records.parse_record(json.dumps(_record(0)).replace('"wall_time_s": 1.0', '"wall_time_s": Infinity'))


def test_every_committed_record_loads_as_a_good_one():
    files = [p for task in ("transfer", "robustness") for p in (REPO / "results" / task).rglob("*.json")]
    loaded = records.load_records(REPO / "results", quiet=True)
    assert loaded.problems == [] and len(loaded) == len(files) > 100


def test_records_at_a_commit_name_a_damaged_file_and_keep_the_good_ones(tmp_path, capsys):
    repo = tmp_path / "repo"
    good = records.write_record(_record(0, task="robustness"), repo / "results")
    bad = records.write_record(_record(1, task="robustness"), repo / "results")
    bad.write_text("{")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=n"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "records"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    got = proxies.records_at_commit(commit, dataset="mnist", preset="smoke", repo=str(repo))
    assert [r["seed"] for r in got] == [0] and good.name == "spread_seed0.json"
    assert [(p.path.name, p.kind) for p in got.problems] == [("spread_seed1.json", records.DAMAGED)]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "spread_seed1.json" in err[0] and commit[:10] in err[0]
