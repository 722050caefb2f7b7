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
    assert [(r["dataset"], r["method"], r["seed"]) for r in recs] == [("mnist", "ce", 0)]
    assert recs[0]["preset"].startswith("smoke.set.")  # --set overrides: never filed under the preset's own name
    validate_record(recs[0])
    assert recs[0]["provenance"]["config"]["train_size"] == 128
    assert (runs / recs[0]["preset"] / "mnist" / "ce_seed0.ipynb").is_file()  # beside its record's preset
    assert (runs / recs[0]["preset"] / "cifar10" / "ce_seed0.ipynb").is_file()  # kept for debugging
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


#: What a stand-in template writes besides its payload: the least a record must hold to count.
STAND_IN_RECORD = ("{'dataset': dataset, 'method': method, 'preset': preset, 'seed': seed, 'task': 'transfer', "
                   "'metrics': {'fine_test_acc': 0.5, 'coarse_test_acc': 0.5}, "
                   "'provenance': {'git_commit': 'stand-in', 'torch_version': 'none', 'device': 'cpu', "
                   "'started_at': '2026-01-01T00:00:00+00:00', 'wall_time_s': 0.0, 'config': {}}}")


def _stand_in_template(path: Path, payload: str, sleep: float = 2.0, before: str = "") -> Path:
    """A stand-in template: writes a valid record with ``payload`` (a dict expression) merged in, in
    ~``sleep`` s, after running the statement ``before``.

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
        f"{before or 'pass'}\n"
        f"time.sleep({sleep})\n"
        "p = record_path(results_dir, task='transfer', dataset=dataset, preset=preset, method=method, seed=seed)\n"
        "p.parent.mkdir(parents=True, exist_ok=True)\n"
        f"p.write_text(json.dumps({{**{STAND_IN_RECORD}, **{payload}}}))")
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
    ck_root = tmp_path / "killed" / "ck"  # ck/<the record's preset: smoke.set....>/mnist/seed0/spread/last.pt

    def checkpoint():
        return next(iter(sorted(ck_root.glob("smoke*/mnist/seed0/spread/last.pt"))), None)

    proc = subprocess.Popen(argv("killed"), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while checkpoint() is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        ckpt = checkpoint()
        assert ckpt is not None and proc.poll() is None, "the run ended or never checkpointed"
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


# ------------------------------------------------ damaged records, relative paths, killed workers


def _argv(tmp_path, template, *extra):
    return ["--preset", "smoke", "--datasets", "mnist", "--methods", "ce", "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), "--checkpoints", str(tmp_path / "ck"), "--template", str(template),
            "--no-progress", *extra]


def _good_record(results: Path, seed: int) -> Path:
    from spreadcon.runs.records import make_record, write_record

    return write_record(make_record(dataset="mnist", method="ce", preset="smoke", seed=seed, task="transfer",
                                    metrics={"fine_test_acc": 0.25, "coarse_test_acc": 0.75}, config={},
                                    started_at="2026-01-01T00:00:00+00:00", wall_time_s=1.0, git="0" * 40),
                        results)


def test_a_damaged_record_is_rerun_after_being_set_aside_and_a_duplicate_never_counts(tmp_path, capsys):
    """seed 0: a truncated record (rerun; the damaged bytes kept as .damaged); seed 1: good (skipped) with a
    copy beside it (named, untouched); seed 2: only a copy under another name (named, not counted: runs)."""
    import shutil

    template = _stand_in_template(tmp_path / "template.ipynb", "{'rerun': True}", sleep=0)
    results = tmp_path / "results"
    cut = _good_record(results, 0)
    cut.write_text(cut.read_text()[:80])
    damaged_bytes = cut.read_bytes()
    shutil.copy(_good_record(results, 1), cut.with_name("ce_seed1 (1).json"))
    only_copy = cut.with_name("ce_seed2 (1).json")
    shutil.copy(_good_record(results, 2), only_copy)
    (results / "transfer" / "mnist" / "smoke" / "ce_seed2.json").unlink()
    argv = _argv(tmp_path, template, "--seeds", "0", "1", "2")

    assert reproduce.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "1 already recorded" in out[0]
    named = [ln for ln in out if " record " in ln and ": " in ln and "run ->" not in ln and "skip" not in ln]
    assert len(named) == 3, out  # one line per file that does not count
    assert any(ln.strip().startswith(f"damaged record {cut}:") and "ce_seed0.json.damaged" in ln for ln in named)
    assert sum(ln.strip().startswith("duplicate record ") for ln in named) == 2
    assert cut.read_bytes() == damaged_bytes  # a dry run moves nothing

    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    assert "finished 2, skipped 1, failed 0" in out, out
    assert cut.with_name("ce_seed0.json.damaged").read_bytes() == damaged_bytes  # nothing lost
    fresh = {r["seed"]: r for r in load_records(results)}
    assert sorted(fresh) == [0, 1, 2] and fresh[0].get("rerun") and fresh[2].get("rerun") and "rerun" not in fresh[1]
    assert only_copy.is_file() and cut.with_name("ce_seed1 (1).json").is_file()  # named, never deleted

    assert reproduce.main(argv) == 0  # now every cell holds a good record
    assert "finished 0, skipped 3, failed 0" in capsys.readouterr().out


def test_relative_data_and_cache_folders_are_the_callers_not_the_kernels(tmp_path, capsys, monkeypatch):
    """The kernel works in the template's folder (book/); SPREADCON_DATA=data means ./data of the caller,
    as it does for `run`."""
    (tmp_path / "book").mkdir()
    template = _stand_in_template(
        tmp_path / "book" / "template.ipynb",
        "{'data': str(__import__('spreadcon.data.datasets', fromlist=['x']).default_root().resolve()), "
        "'cache': str(__import__('spreadcon.data.cache', fromlist=['x']).cache_dir().resolve())}", sleep=0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPREADCON_DATA", "data")
    monkeypatch.setenv("SPREADCON_CACHE", "caches/decoded")
    assert reproduce.main(_argv(tmp_path, template)) == 0, capsys.readouterr()
    rec = load_records(tmp_path / "results")[0]
    assert (rec["data"], rec["cache"]) == (str((tmp_path / "data").resolve()),
                                           str((tmp_path / "caches" / "decoded").resolve()))
    assert (os.environ["SPREADCON_DATA"], os.environ["SPREADCON_CACHE"]) == ("data", "caches/decoded")  # restored


def test_a_killed_worker_fails_its_own_run_only(tmp_path, capsys):
    """seed 1's worker process is killed (SIGKILL, as the OOM killer does) while seed 0 runs beside it:
    seed 1 fails, naming the signal; seeds 0, 2 and 3 finish."""
    template = _stand_in_template(
        tmp_path / "template.ipynb", "{}", sleep=3,
        before="if seed == 1:\n    import signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    os._exit(0)")
    argv = _argv(tmp_path, template, "--seeds", "0", "1", "2", "3", "--jobs", "2", "--threads", "1")
    assert reproduce.main(argv) == 1
    out = capsys.readouterr().out
    assert "finished 3, skipped 0, failed 1" in out, out
    failed = out.split("failed runs:")[1].strip().splitlines()
    assert len(failed) == 1 and failed[0].startswith("mnist/smoke/ce_seed1:") and "SIGKILL" in failed[0]
    assert sorted(r["seed"] for r in load_records(tmp_path / "results")) == [0, 2, 3]


def test_grid_functions_take_their_many_inputs_by_keyword_and_stay_short():
    import ast
    import inspect

    for fn in (reproduce.plan_grid, reproduce.execute_run, reproduce.run_grid):
        positional = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 4, (fn.__name__, [p.name for p in positional])
    from spreadcon.runs import cost, records

    for module in (reproduce, records, cost):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n_pos = len(node.args.posonlyargs) + len(node.args.args)
                assert n_pos <= 6 and node.end_lineno - node.lineno < 100, (module.__name__, node.name)
