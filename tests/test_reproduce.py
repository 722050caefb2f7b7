"""The papermill grid: bad names fail fast, records get written, finished runs are skipped,
and a failed run neither stops the grid nor hides in a zero exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spreadcon.runs import reproduce
from spreadcon.runs.records import load_records, validate_record

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
    """cifar10 fails (its data is absent from this root) before mnist runs; mnist must still run. Every
    failure is a missing dataset, so the grid exits 3, as run and data do for a missing dataset."""
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(data_root / "MNIST", root / "MNIST")
    results, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--preset", "smoke", "--datasets", "cifar10", "mnist", "--methods", "ce", "--seeds", "0",
            "--data-root", str(root), "--results", str(results), "--runs", str(runs), "--no-progress", *TINY]

    assert reproduce.main(argv) == 3
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
    assert reproduce.main(argv) == 3
    out = capsys.readouterr().out
    assert "finished 0, skipped 1, failed 1" in out
    assert (path.stat().st_mtime_ns, path.read_text()) == before
    assert json.loads(path.read_text())["seed"] == 0

    # The dry run agrees: one recorded, one to run.
    assert reproduce.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 already recorded" in out and f"skip (record {path})" in out


def _stand_in_template(path: Path, payload: str, sleep: float = 2.0) -> Path:
    """A stand-in template: writes ``payload`` (a dict expression) as its run's record, in ~``sleep`` s.

    Its parameters cell has the template's names; ``start`` and ``time`` are in scope for ``payload``.
    """
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'dataset = "mnist"\nmethod = "ce"\npreset = "smoke"\nseed = 0\nalpha = None\n'
        "data_root = None\nresults_dir = None\noverrides = {}\ncheckpoint_dir = None\nresume = False\n"
        "progress = None")
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json, os, time\n"
        "from spreadcon.runs.records import record_path\n"
        "start = time.time()\n"
        f"time.sleep({sleep})\n"
        "p = record_path(results_dir, task='transfer', dataset=dataset, preset=preset, method=method, seed=seed)\n"
        "p.parent.mkdir(parents=True, exist_ok=True)\n"
        f"p.write_text(json.dumps({payload}))")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _timing_template(path: Path) -> Path:
    """Records its run's seed, thread limit and start/end time."""
    return _stand_in_template(path, "{'seed': seed, 'omp': os.environ.get('OMP_NUM_THREADS'), "
                                    "'start': start, 'end': time.time()}")


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


def test_the_kernel_imports_the_spreadcon_that_runs_the_grid(tmp_path, capsys, monkeypatch):
    """Another spreadcon earlier on the path (another checkout's editable install, say) must not run."""
    import spreadcon

    fake = tmp_path / "other" / "spreadcon"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the wrong spreadcon was imported')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    template = _stand_in_template(tmp_path / "template.ipynb",
                                  "{'seed': seed, 'pkg': __import__('spreadcon').__file__}", sleep=0)
    results = tmp_path / "results"
    argv = ["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--seeds", "0", "--results",
            str(results), "--runs", str(tmp_path / "runs"), "--template", str(template), "--no-progress"]
    assert reproduce.main(argv) == 0, capsys.readouterr()
    rec = json.loads(next((results / "transfer" / "mnist" / "smoke").glob("*.json")).read_text())
    assert Path(rec["pkg"]).resolve() == Path(spreadcon.__file__).resolve()
    assert os.environ["PYTHONPATH"] == str(fake.parent)  # the caller's value is back


def test_jobs_must_be_positive(tmp_path, capsys):
    argv = ["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--results", str(tmp_path)]
    assert reproduce.main([*argv, "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err
    assert reproduce.default_threads(1) >= 1 and reproduce.default_threads(10 ** 6) == 1


# ------------------------------------------------ the grid's own checks, checkpoints and the paper's plan


@pytest.mark.parametrize("extra, needle", [
    (["--seeds", "0", "1", "0"], "--seeds lists 0 more than once"),
    (["--seeds", "0", "-1"], "--seeds must be integers >= 0; got -1"),
    (["--datasets", "mnist", "mnist,cifar10"], "--datasets lists 'mnist' more than once"),
    (["--methods", "ce", "spread", "ce"], "--methods lists 'ce' more than once"),
])
def test_repeated_cells_and_negative_seeds_exit_2_with_one_line(extra, needle, capsys, tmp_path):
    argv = {"--datasets": ["mnist"], "--methods": ["ce"], "--seeds": ["0"]}
    argv[extra[0]] = extra[1:]
    flat = ["--preset", "smoke", "--results", str(tmp_path)] + [x for k, v in argv.items() for x in (k, *v)]
    assert reproduce.main(flat) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_the_grid_checks_import_no_torch(tmp_path):
    """A repeated seed is refused before torch (seconds to import) is loaded."""
    import subprocess
    import sys

    code = ("import sys; from spreadcon.runs.reproduce import main; "
            f"rc = main(['--datasets', 'mnist', '--methods', 'ce', '--seeds', '1', '1', '--results', {str(tmp_path)!r}]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], (out.stdout, out.stderr)


def test_checkpoint_folders_one_per_run_composites_on_their_backbones(tmp_path):
    plan = reproduce.plan_grid("paper", ["cifar10"], ["spread", "autoencoder", "thanos"], [1], alpha=0.25,
                               results_dir=tmp_path)
    dirs = {r.method: r.checkpoint_dir(tmp_path / "ck") for r in plan}
    seed_dir = tmp_path / "ck" / "paper" / "cifar10" / "seed1_alpha0.25"
    assert dirs == {"spread": seed_dir / "spread", "autoencoder": seed_dir / "autoencoder", "thanos": seed_dir}
    # run_experiment trains a composite's backbone `name` in checkpoint_dir / name: the backbones' own folders
    assert [dirs["thanos"] / b for b in plan[2].backbones] == [dirs["spread"], dirs["autoencoder"]]
    assert [r.composite for r in plan] == [False, False, True]


def test_paper_dry_run_plans_every_run_and_totals_the_cost_model(capsys, tmp_path):
    from spreadcon.runs.cost import gpu_hours, run_cost, throughput

    assert reproduce.main(["--paper", "--dry-run", "--results", str(tmp_path / "r"),
                           "--checkpoints", str(tmp_path / "ck")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    runs = [ln for ln in lines if "/official/" in ln]
    assert len(runs) == 8 * 4 * 3 == len(lines) - 2  # the grid line, one per run, the total
    assert {ln.split("/")[0].strip() for ln in runs} == set(reproduce.PAPER_DATASETS) and len(reproduce.PAPER_DATASETS) == 8
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    flops = sum(run_cost(d, m, "official").total_flops if m != "thanos" else run_cost(d, m, "official").eval_flops
                for d in reproduce.PAPER_DATASETS for m in ("supcon", "spread", "autoencoder", "thanos")) * 3
    at = throughput()
    total = lines[-1]
    assert total.startswith(f"total: {gpu_hours(flops, at):.1f} GPU-hours for 96 runs"), total
    assert total.endswith(f"), {at.describe()}") and at.describe().startswith(f"{at.label}: ")  # labelled
    thanos = next(ln for ln in runs if "cifar10/official/thanos_seed0" in ln)
    c = run_cost("cifar10", "thanos", "official")
    assert f"{gpu_hours(c.eval_flops, at):.2f} GPU-h (reuses spread, autoencoder; stand-alone " \
           f"{gpu_hours(c.total_flops, at):.2f})" in thanos


def test_colab_grids_are_priced_at_a_t4(capsys, tmp_path):
    from spreadcon.runs.cost import gpu_hours, run_cost, throughput

    argv = ["--preset", "colab", "--datasets", "cifar10", "--methods", "spread", "--dry-run",
            "--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "ck")]
    assert reproduce.main(argv) == 0
    total = capsys.readouterr().out.strip().splitlines()[-1]
    at = throughput("t4")
    assert total.startswith(f"total: {gpu_hours(run_cost('cifar10', 'spread', 'colab').total_flops, at):.1f} GPU-hours")
    assert total.endswith(at.describe()) and "T4" in total
    assert reproduce.main([*argv, "--gpu", "reference"]) == 0
    assert capsys.readouterr().out.strip().endswith(throughput("reference").describe())


def test_thanos_alone_is_priced_stand_alone_unless_its_checkpoints_exist(capsys, tmp_path):
    argv = ["--preset", "paper", "--datasets", "cifar10", "--methods", "thanos", "--dry-run",
            "--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "ck")]
    assert reproduce.main(argv) == 0
    assert "(trains its backbones; stand-alone 2.66)" in capsys.readouterr().out
    for b in ("spread", "autoencoder"):  # a previous grid left their checkpoints
        (tmp_path / "ck" / "paper" / "cifar10" / "seed0" / b).mkdir(parents=True)
        (tmp_path / "ck" / "paper" / "cifar10" / "seed0" / b / "last.pt").write_bytes(b"")
    assert reproduce.main(argv) == 0
    assert "0.05 GPU-h (reuses spread, autoencoder" in capsys.readouterr().out


def _params_template(path: Path) -> Path:
    """Records the checkpoint parameters it was given and when it ran."""
    return _stand_in_template(path, "{'checkpoint_dir': checkpoint_dir, 'resume': resume, 'progress': progress, "
                                    "'start': start, 'end': time.time()}", sleep=0.5)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_runs_get_their_checkpoint_folder_with_resume_and_composites_run_last(jobs, tmp_path, capsys):
    template = _params_template(tmp_path / "template.ipynb")
    results, ck = tmp_path / "results", tmp_path / "ck"
    argv = ["--preset", "smoke", "--datasets", "mnist", "--methods", "thanos", "spread", "autoencoder",
            "--results", str(results), "--runs", str(tmp_path / "runs"), "--checkpoints", str(ck),
            "--template", str(template), "--no-progress", "--jobs", jobs, "--threads", "1"]
    assert reproduce.main(argv) == 0
    assert "finished 3, skipped 0, failed 0" in capsys.readouterr().out
    got = {m: json.loads((results / "transfer" / "mnist" / "smoke" / f"{m}_seed0.json").read_text())
           for m in ("thanos", "spread", "autoencoder")}
    seed_dir = (ck / "smoke" / "mnist" / "seed0").resolve()
    assert {m: g["checkpoint_dir"] for m, g in got.items()} == {
        "thanos": str(seed_dir), "spread": str(seed_dir / "spread"), "autoencoder": str(seed_dir / "autoencoder")}
    assert all(g["resume"] is True and g["progress"] is False for g in got.values())
    assert got["thanos"]["start"] >= max(got["spread"]["end"], got["autoencoder"]["end"])


@pytest.mark.slow
def test_a_killed_grid_resumes_its_run_and_ends_with_the_same_record(data_root, tmp_path):
    """SIGKILL the whole reproduce process group once the run has checkpointed; the rerun resumes
    from that checkpoint and writes the record an uninterrupted run writes (CPU runs resume exactly)."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "data"
    root.mkdir()
    os.symlink(data_root / "MNIST", root / "MNIST")

    def argv(name):
        return [sys.executable, "-m", "spreadcon", "reproduce", "--preset", "smoke", "--datasets", "mnist",
                "--methods", "spread", "--data-root", str(root), "--results", str(tmp_path / name / "results"),
                "--runs", str(tmp_path / name / "runs"), "--checkpoints", str(tmp_path / name / "ck"),
                "--no-progress", *TINY, "--set", "train_size=512", "--set", "epochs=4",
                "--set", "checkpoint_every=1"]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ckpt = tmp_path / "killed" / "ck" / "smoke" / "mnist" / "seed0" / "spread" / "last.pt"
    proc = subprocess.Popen(argv("killed"), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ckpt.exists() and proc.poll() is None, "the run ended or never checkpointed"
    finally:
        # reproduce, papermill and the kernel: jupyter starts the kernel in a session of its own, so a kill of
        # reproduce's process group misses it, and it would train on; kill every descendant, and wait for them
        import psutil

        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=60)
        psutil.wait_procs(family, timeout=60)
    assert not list((tmp_path / "killed" / "results").rglob("*.json"))  # killed before its record
    stamp = ckpt.stat().st_mtime_ns
    import torch

    epoch = int(torch.load(ckpt, weights_only=True)["epoch"])
    assert 1 <= epoch < 4

    for name in ("killed", "clean"):
        out = subprocess.run(argv(name), env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0 and "finished 1, skipped 0, failed 0" in out.stdout, out.stdout + out.stderr
    assert ckpt.stat().st_mtime_ns != stamp  # the rerun trained on in the same folder
    got, want = (load_records(tmp_path / n / "results")[0] for n in ("killed", "clean"))
    keep = {k: v for k, v in want["metrics"].items() if not k.endswith("time_s")}
    assert {k: got["metrics"][k] for k in keep} == keep
    # once run_experiment records it (CONTRACT section 3), the record says where it resumed from
    assert got["provenance"].get("resumed_from_epoch", epoch) == epoch


def test_a_missing_dataset_exits_3_as_from_run_and_data(tmp_path):
    """Every failure of the grid was a missing dataset: the grid exits with the data code (3), not 1."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SPREADCON_MIRROR": "http://127.0.0.1:9/", "SPREADCON_DOWNLOAD_TIMEOUT": "5"}
    out = subprocess.run([sys.executable, "-m", "spreadcon", "reproduce", "--preset", "smoke", "--datasets", "mnist",
                          "--methods", "ce", "--seeds", "0", "--data-root", str(tmp_path / "empty"),
                          "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "runs"),
                          "--checkpoints", str(tmp_path / "ck"), "--no-progress"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "DatasetNotFound" in out.stdout
