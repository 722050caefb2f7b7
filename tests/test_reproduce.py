"""The papermill grid: bad names fail fast, records get written, finished runs are skipped,
and a failed run neither stops the grid nor hides in a zero exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spreadcon import reproduce
from spreadcon.records import load_records, validate_record

# A grid run shrunk below the smoke preset so the test stays fast; the record's
# config must show these values, which proves the overrides reach the notebook.
TINY = ["--set", "train_size=128", "--set", "val_size=64", "--set", "test_size=64",
        "--set", "probe_epochs=10", "--set", "batch_size=32"]


@pytest.mark.parametrize("argv, needle", [
    (["--preset", "huge", "--datasets", "mnist", "--methods", "ce"], "valid presets: smoke, cpu, paper"),
    (["--preset", "smoke", "--datasets", "mnist,nope", "--methods", "ce"], "valid datasets: mnist"),
    (["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "thanoss"], "valid methods: ce"),
    (["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--seeds", "x"], "--seeds"),
    (["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--alpha", "1.5"], "alpha=1.5"),
    (["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--set", "epoch=2"], "valid keys"),
])
def test_bad_arguments_exit_2_and_list_valid_names(argv, needle, capsys, tmp_path):
    assert reproduce.main([*argv, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err, err


def test_plan_expands_grid_in_order(tmp_path):
    plan = reproduce.plan_grid("smoke", ["mnist", "cifar10"], ["ce", "thanos"], [0, 1], alpha=0.25,
                               results_dir=tmp_path)
    assert [(r.dataset, r.method, r.seed) for r in plan] == [
        (d, m, s) for d in ("mnist", "cifar10") for m in ("ce", "thanos") for s in (0, 1)]
    assert all(r.alpha == 0.25 and r.existing is None for r in plan)
    assert plan[0].notebook_path(tmp_path) == tmp_path / "smoke" / "mnist" / "ce_seed0_alpha0.25.ipynb"


@pytest.mark.slow
def test_grid_writes_records_skips_them_and_reports_failures(data_root, tmp_path, capsys):
    """cifar10 fails (its data is absent from this root) before mnist runs; mnist must still run."""
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(data_root / "MNIST", root / "MNIST")
    results, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--preset", "smoke", "--datasets", "cifar10", "mnist", "--methods", "ce", "--seeds", "0",
            "--data-root", str(root), "--results", str(results), "--runs", str(runs), "--no-progress", *TINY]

    assert reproduce.main(argv) == 1
    out = capsys.readouterr().out
    assert "finished 1, skipped 0, failed 1" in out
    assert "cifar10/smoke/ce_seed0" in out.split("failed runs:")[1]

    recs = load_records(results)
    assert [(r["dataset"], r["method"], r["seed"], r["preset"]) for r in recs] == [("mnist", "ce", 0, "smoke")]
    validate_record(recs[0])
    assert recs[0]["provenance"]["config"]["train_size"] == 128
    assert (runs / "smoke" / "mnist" / "ce_seed0.ipynb").is_file()
    assert (runs / "smoke" / "cifar10" / "ce_seed0.ipynb").is_file()  # kept for debugging
    path = Path(recs[0]["path"])
    before = (path.stat().st_mtime_ns, path.read_text())

    # Second call: mnist is skipped (record untouched), cifar10 is retried and fails again.
    assert reproduce.main(argv) == 1
    out = capsys.readouterr().out
    assert "finished 0, skipped 1, failed 1" in out
    assert (path.stat().st_mtime_ns, path.read_text()) == before
    assert json.loads(path.read_text())["seed"] == 0

    # The dry run agrees: one recorded, one to run.
    assert reproduce.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 already recorded" in out and f"skip (record {path})" in out


def _timing_template(path: Path) -> Path:
    """A stand-in template: records its run's parameters, thread limit and start/end time, in ~2 s."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'dataset = "mnist"\nmethod = "ce"\npreset = "smoke"\nseed = 0\nalpha = None\n'
        "data_root = None\nresults_dir = None\noverrides = {}")
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json, os, time\n"
        "from spreadcon.records import record_path\n"
        "start = time.time()\n"
        "time.sleep(2)\n"
        "p = record_path(results_dir, task='transfer', dataset=dataset, preset=preset, method=method, seed=seed)\n"
        "p.parent.mkdir(parents=True, exist_ok=True)\n"
        "p.write_text(json.dumps({'seed': seed, 'omp': os.environ.get('OMP_NUM_THREADS'),\n"
        "                         'start': start, 'end': time.time()}))")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_jobs_run_side_by_side_with_limited_threads(tmp_path, capsys):
    template = _timing_template(tmp_path / "template.ipynb")
    results, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--seeds", "0", "1", "2", "3",
            "--results", str(results), "--runs", str(runs), "--template", str(template), "--no-progress",
            "--jobs", "2", "--threads", "3"]
    assert reproduce.main(argv) == 0
    assert "finished 4, skipped 0, failed 0" in capsys.readouterr().out
    recs = {json.loads(p.read_text())["seed"]: json.loads(p.read_text())
            for p in (results / "transfer" / "mnist" / "smoke").glob("*.json")}
    assert sorted(recs) == [0, 1, 2, 3]
    assert {r["omp"] for r in recs.values()} == {"3"}  # not the caller's OMP_NUM_THREADS
    spans = sorted((r["start"], r["end"]) for r in recs.values())
    # two workers: some run starts before the one started before it has ended
    assert any(b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    assert all((runs / "smoke" / "mnist" / f"ce_seed{s}.ipynb").is_file() for s in range(4))

    # everything recorded: a second call skips all four and starts no worker
    assert reproduce.main(argv) == 0
    assert "finished 0, skipped 4, failed 0" in capsys.readouterr().out


def test_jobs_must_be_positive(tmp_path, capsys):
    argv = ["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--results", str(tmp_path)]
    assert reproduce.main([*argv, "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err
    assert reproduce.default_threads(1) >= 1 and reproduce.default_threads(10 ** 6) == 1
