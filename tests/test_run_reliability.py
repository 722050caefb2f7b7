"""A finished run is never lost, a bad setting never trains, a signal never corrupts.

Most tests drive the real CLI (in-process through ``main`` where that is
enough, in a subprocess where a signal or a kill is the point), smoke-sized.
Waits are bounded polls for a file or an exit, never sleeps that guess.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spreadcon.util import atomic
from spreadcon.train import loop as engine
from spreadcon.runs.cli import main
from spreadcon.runs.checks import DATASET_NAMES, METHOD_NAMES, SettingError, check_settings

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train_size=128", "--set", "val_size=64", "--set", "test_size=128", "--set", "batch_size=32",
        "--set", "probe_epochs=20", "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "spreadcon", "run", *args], cwd=kw.get("cwd", REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended first (rc {proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


# --------------------------------------------------------------------------- settings, before anything loads


def test_name_lists_match_the_registries():
    from spreadcon.data import DATASETS
    from spreadcon.methods import METHODS

    assert tuple(DATASETS) == DATASET_NAMES
    assert tuple(METHODS) == METHOD_NAMES


@pytest.mark.parametrize("argv,match", [
    (["mnist", "ce", "--seed", "-1"], "--seed must be an integer from 0"),
    (["mnist", "ce", "--alpha", "1.5"], "--alpha must be in"),
    (["mnist", "ce", "--eval-only"], "--eval-only needs --checkpoint-dir"),
    (["mnist", "ce", "--set", "epochs=0"], "epochs"),
])
def test_bad_settings_exit_2_in_one_line_before_torch_is_imported(argv, match, tmp_path):
    code = (f"import sys; from spreadcon.runs.cli import main; rc = main({[*argv, '--results', str(tmp_path)]!r}); "
            f"print('torch' in sys.modules); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2
    assert out.stdout.strip() == "False"  # rejected before torch was imported
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and match in err[0], out.stderr


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_unwritable_results_folder_fails_before_data_loads(where, tmp_path, monkeypatch, capsys):
    if where == "under_a_file":
        (tmp_path / "f").write_text("x")
        target = tmp_path / "f" / "results"
    else:
        if os.geteuid() == 0:  # root writes anywhere: refuse the probe write as a read-only folder would
            import spreadcon.runs.checks as S

            def refuse(*a, **k):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(S.tempfile, "mkstemp", refuse)
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o555)
    import spreadcon.data as sdata

    monkeypatch.setattr(sdata, "load", lambda *a, **k: pytest.fail("data loaded before the settings were checked"))
    assert main(["mnist", "ce", "--preset", "smoke", "--results", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be written" in err[0] and "--results" in err[0]


def test_cuda_device_without_a_gpu_is_a_setting_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SettingError, match="no CUDA device"):
        check_settings(dataset="mnist", method="ce", preset="smoke", seed=0, results_dir=tmp_path, device="cuda")
    with pytest.raises(SettingError, match="not a device name"):
        check_settings(dataset="mnist", method="ce", preset="smoke", seed=0, results_dir=tmp_path, device="gpu0")


# --------------------------------------------------------------------------- checkpoints


def _trained(data_root: Path, tmp_path: Path, capsys) -> tuple[Path, list[str], str]:
    """A finished smoke run of ``ce`` checkpointed in ``tmp_path/ck``: the folder, the run's
    arguments and the sha256 of its ``last.pt``."""
    ck = tmp_path / "ck"
    args = ["mnist", "ce", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
            "--checkpoint-dir", str(ck), *TINY]
    assert main(args) == 0
    capsys.readouterr()
    return ck, args, _sha(ck / "last.pt")


@pytest.mark.data
def test_rerun_without_resume_refuses_and_leaves_the_checkpoint(data_root, tmp_path, capsys):
    ck, args, before = _trained(data_root, tmp_path, capsys)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"checkpoint at {ck} from epoch 1; pass --resume to continue or --fresh to start over" in err[0]
    assert _sha(ck / "last.pt") == before
    # --fresh starts over: a new training, a new checkpoint
    assert main([*args, "--fresh"]) == 0
    assert (ck / "last.pt").exists()


@pytest.mark.data
def test_previous_checkpoint_is_kept_and_resume_falls_back_to_it(data_root, tmp_path, capsys):
    ck = tmp_path / "ck"
    args = ["mnist", "ce", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
            "--checkpoint-dir", str(ck), "--set", "epochs=2", *TINY]
    assert main(args) == 0
    first = json.loads(Path(capsys.readouterr().out.strip().splitlines()[-1]).read_text())
    assert int(engine.load_checkpoint(ck / "last.pt")["epoch"]) == 2
    assert int(engine.load_checkpoint(ck / "prev.pt")["epoch"]) == 1
    (ck / "last.pt").write_bytes((ck / "last.pt").read_bytes()[:1000])  # a torn last.pt
    assert main([*args, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "skipping" in captured.err and "prev.pt" in captured.err
    second = json.loads(Path(captured.out.strip().splitlines()[-1]).read_text())
    assert second["provenance"]["resumed_from_epoch"] == 1 and second["provenance"]["attempts"] == 2
    # resuming at the epoch boundary restores every source of randomness: the same run
    assert second["metrics"]["fine_test_acc"] == first["metrics"]["fine_test_acc"]


@pytest.mark.data
def test_resume_on_another_dataset_or_other_data_is_refused_before_training(data_root, tmp_path, capsys,
                                                                             monkeypatch):  # fmt: skip
    """A cifar10 checkpoint used to resume a cifar-patch run (exit 0, a cifar-patch record from the CIFAR-10
    encoder). Another dataset is refused from the checkpoint alone, before any data loads; other data under
    the same name (here another subset) once the data is loaded, before any step. One line, exit 2."""
    import spreadcon.data as sdata

    ck = tmp_path / "ck"
    common = ["spread", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
              "--checkpoint-dir", str(ck), *TINY]
    assert main(["cifar10", *common]) == 0
    before = _sha(ck / "last.pt")
    capsys.readouterr()
    real_load = sdata.load
    monkeypatch.setattr(sdata, "load", lambda *a, **k: pytest.fail("data loaded before the checkpoint was checked"))
    assert main(["cifar-patch", *common, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "belongs to a different run (dataset 'cifar10', not 'cifar-patch')" in err[0], err
    monkeypatch.setattr(sdata, "load", real_load)
    monkeypatch.setattr(engine, "train_step", lambda *a, **k: pytest.fail("trained on other data"))
    assert main(["cifar10", *common, "--resume", "--set", "train_size=96"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data fingerprint" in err[0] and "train_size=128 (now 96)" in err[0], err
    assert _sha(ck / "last.pt") == before
    assert [p.name for p in (tmp_path / "r").rglob("*.json")] == ["spread_seed0.json"]  # the cifar10 record only


@pytest.mark.data
def test_a_second_run_into_a_folder_in_use_is_refused(data_root, tmp_path, monkeypatch, capsys):
    """Two runs writing one --checkpoint-dir would interleave last.pt and prev.pt (or --fresh would delete
    the other's): the second is refused in one line, exit 2, before its data loads."""
    import spreadcon.data as sdata

    ck = tmp_path / "ck"
    args = ["mnist", "ce", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
            "--checkpoint-dir", str(ck), "--set", "epochs=40", *TINY]
    first = _cli(*args)
    try:
        _wait_for(lambda: (ck / "last.pt").exists(), 240, first)  # training, and holding the folder
        monkeypatch.setattr(sdata, "load", lambda *a, **k: pytest.fail("data loaded before the folder was checked"))
        for mode in ("--resume", "--fresh"):
            assert main([*args, mode]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"{ck} is in use by another run (process {first.pid})" in err[0], err
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        first.kill()
        first.communicate(timeout=120)


@pytest.mark.parametrize("damage,code", [("missing", 3), ("corrupt", 4)])
def test_a_data_error_leaves_no_temporary_checkpoint_folder(damage, code, tmp_path, monkeypatch, capsys):
    import tempfile

    import numpy as np
    from test_data_fixtures import write_mnist

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where a run without --checkpoint-dir makes its folder
    root = tmp_path / "data"
    root.mkdir()
    if damage == "corrupt":
        write_mnist(root, labels=np.array([12] + [i % 10 for i in range(1, 50)]))  # a label out of range
    assert main(["mnist", "ce", "--preset", "smoke", "--data-root", str(root), "--results", str(tmp_path / "r"),
                 *TINY]) == code
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("spreadcon run: ")
    assert list(temp.iterdir()) == []  # was: an empty spreadcon-checkpoints-XXXX per failed run


def _killed_writer(folder: Path) -> None:
    code = ("import os, signal, sys; from spreadcon.util.atomic import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os.kill(os.getpid(), signal.SIGKILL)))")
    out = subprocess.run([sys.executable, "-c", code, str(folder / "last.pt")], timeout=60, cwd=REPO)
    assert out.returncode == -signal.SIGKILL


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    _killed_writer(tmp_path)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".last.pt.") and left[0].endswith(".tmp")
    atomic.atomic_write(tmp_path / "other.txt", lambda f: f.write(b"ok"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    mine = tmp_path / f".x.{os.getpid()}.abcd.tmp"
    mine.write_bytes(b"in progress")
    atomic.atomic_write(tmp_path / "y", lambda f: f.write(b"ok"))
    assert mine.exists()


def test_temporaries_are_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "-q", "results/.x.json.123.abcd.tmp"], cwd=REPO)
    assert out.returncode == 0


def test_the_package_is_not_ignored_but_smoke_records_are():
    """``runs/`` (reproduce's executed notebooks) used to hide new files of ``spreadcon/runs/`` from git."""
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO).returncode == 0

    assert not ignored("spreadcon/runs/__init__.py") and not ignored("spreadcon/runs/names.py")
    assert ignored("runs/smoke/mnist/ce_seed0.ipynb")
    assert ignored("results/transfer/mnist/smoke/ce_seed0.json")
    assert ignored("results/transfer/mnist/smoke.set.epochs-2/ce_seed0.json")
    assert not ignored("results/transfer/mnist/cpu.set.epochs-2/ce_seed0.json")


# --------------------------------------------------------------------------- signals and late errors


@pytest.mark.data
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_resume_finishes_with_the_truth_in_the_record(sig, code, data_root, tmp_path):
    ck = tmp_path / "ck"
    args = ["mnist", "ce", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
            "--checkpoint-dir", str(ck), "--set", "epochs=40", *TINY]
    proc = _cli(*args)
    _wait_for(lambda: (ck / "prev.pt").exists(), 240, proc)  # two epochs checkpointed
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [line for line in err.strip().splitlines() if line.startswith("spreadcon run:")]
    assert len(lines) == 1 and f"interrupted by {signal.Signals(sig).name}" in lines[0]
    assert "--resume" in lines[0]
    state = engine.load_checkpoint(ck / "last.pt")  # intact
    stopped = int(state["epoch"])
    assert not [p for p in ck.rglob("*.tmp")]
    # the run continues from there
    proc = _cli(*args, "--resume")
    _wait_for(lambda: int(engine.load_checkpoint(ck / "last.pt")["epoch"]) > stopped, 240, proc)
    proc.terminate()
    proc.communicate(timeout=120)
    assert proc.returncode == 143


@pytest.mark.data
def test_resumed_record_says_from_which_epoch_and_the_total_time(data_root, tmp_path):
    from spreadcon.data import load
    from spreadcon.presets import resolve
    from spreadcon.runs.experiment import run_experiment, subset_dataset

    ck = tmp_path / "ck"
    over = {"train_size": 128, "val_size": 64, "test_size": 128, "batch_size": 32, "probe_epochs": 20, "epochs": 3}
    cfg = resolve("smoke", "mnist", over)
    ds = subset_dataset(load("mnist", root=data_root), cfg)
    part = engine.train("ce", ds, cfg, seed=0, checkpoint_dir=ck, max_epochs_this_call=2, progress=False)
    assert part.epochs_done == 2 and not part.finished
    path = run_experiment("mnist", "ce", preset="smoke", data_root=data_root, results_dir=tmp_path / "r",
                          overrides=over, checkpoint_dir=ck, resume=True, progress=False)
    prov = json.loads(path.read_text())["provenance"]
    assert prov["resumed_from_epoch"] == 2 and prov["attempts"] == 2
    assert prov["train_time_total_s"] > part.wall_time_s
    from spreadcon.train.loop import cpu_has_native_bf16

    assert prov["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")  # amp=auto on this CPU
    assert len(prov["source_hash"]) == 64


@pytest.mark.data
def test_a_failed_record_write_keeps_the_training_and_eval_only_finishes_it(data_root, tmp_path, monkeypatch,
                                                                           capsys):  # fmt: skip
    from spreadcon.runs import records

    real = records.write_record
    import shlex

    monkeypatch.setattr(records, "write_record", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    args = ["mnist", "ce", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
            "--cache", str(tmp_path / "cache"), *TINY]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Training finished and is saved in" in err[0] and "--eval-only" in err[0]
    folder = Path(err[0].split("saved in ")[1].split(";")[0])
    assert (folder / "last.pt").exists()
    # the printed command is the whole invocation (--set, --results, --data-root, --cache) with --eval-only
    command = shlex.split(err[0].split("without retraining: ")[1])
    assert command[:4] == ["python", "-m", "spreadcon", "run"]
    for flag, value in (("--results", tmp_path / "r"), ("--data-root", data_root), ("--cache", tmp_path / "cache"),
                        ("--checkpoint-dir", folder)):
        assert command[command.index(flag) + 1] == os.path.abspath(value)
    assert [command[i + 1] for i, a in enumerate(command) if a == "--set"] == [s for s in TINY if "=" in s]
    monkeypatch.setattr(records, "write_record", real)
    assert main(command[4:]) == 0  # exactly what was printed
    out = capsys.readouterr().out.strip().splitlines()
    rec = json.loads(Path(out[-1]).read_text())
    assert rec["method"] == "ce" and 0 <= rec["metrics"]["fine_test_acc"] <= 1
    assert rec["provenance"]["config"]["train_size"] == 128 and Path(out[-1]).is_relative_to(tmp_path / "r")
    assert out[-2].startswith("mnist ce (smoke.set.batch_size-32.") and "seed 0): fine_test_acc " in out[-2]


@pytest.mark.data
def test_control_methods_run_and_record_what_they_are(data_root, tmp_path):
    from spreadcon.runs.experiment import run_experiment

    over = {"train_size": 128, "val_size": 64, "test_size": 128, "batch_size": 32, "probe_epochs": 20}
    rand = json.loads(run_experiment("mnist", "random-init", preset="smoke", data_root=data_root,
                                     results_dir=tmp_path, overrides=over, progress=False).read_text())
    assert rand["untrained"] is True and "coarse_val_acc" not in rand["metrics"]
    assert 0.1 < rand["metrics"]["fine_test_acc"] < 1.0  # an untrained CNN plus a probe beats chance on MNIST
    pair = json.loads(run_experiment("mnist", "supcon-pair", preset="smoke", data_root=data_root,
                                     results_dir=tmp_path, overrides=over, checkpoint_dir=tmp_path / "ck",
                                     progress=False).read_text())
    assert {"supcon_0_coarse_val_acc", "supcon_1_coarse_val_acc"} <= set(pair["metrics"])
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["supcon", "supcon-seed1000"]
    a, b = (engine.load_checkpoint(tmp_path / "ck" / s / "last.pt")["model"] for s in ("supcon", "supcon-seed1000"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two different networks


# --------------------------------------------------------------------------- distributed


@pytest.mark.data
@pytest.mark.slow
def test_an_error_on_one_rank_ends_the_whole_job_promptly(data_root, tmp_path):
    """Rank 1 raises in its third training step; the job must end nonzero, not hang in a barrier or
    an all-reduce until the process-group timeout."""
    script = tmp_path / "inject.py"
    script.write_text(
        "import os, sys\n"
        "import spreadcon.train.loop as E\n"
        "real, n = E.train_step, [0]\n"
        "def step(*a, **k):\n"
        "    n[0] += 1\n"
        "    if os.environ['RANK'] == '1' and n[0] == 3:\n"
        "        raise RuntimeError('injected failure on rank 1')\n"
        "    return real(*a, **k)\n"
        "E.train_step = step\n"
        "from spreadcon.runs.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(script), "mnist", "ce", "--preset", "smoke", "--data-root",
           str(data_root), "--results", str(tmp_path / "r"), "--set", "epochs=3", *TINY]
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    assert out.returncode != 0
    assert "injected failure on rank 1" in out.stderr
    assert time.monotonic() - start < 180  # far below the 30-minute process-group timeout
    assert not list((tmp_path / "r").rglob("*.json"))


@pytest.mark.data
def test_metrics_by_epoch_come_from_the_runs_own_snapshots(data_root, tmp_path, capsys):
    args = ["mnist", "supcon", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
            "--checkpoint-dir", str(tmp_path / "ck"), "--set", "epochs=3", "--eval-epochs", "1,3", *TINY]
    assert main(args) == 0
    rec = json.loads(Path(capsys.readouterr().out.strip().splitlines()[-1]).read_text())
    by = rec["metrics_by_epoch"]
    assert sorted(by) == ["1", "3"]
    for metrics in by.values():
        assert 0 <= metrics["fine_test_acc"] <= 1 and -1 <= metrics["within_class_cosine"] <= 1
    assert by["1"] != by["3"]  # two different states of one run
    assert sorted(p.name for p in (tmp_path / "ck" / "snapshots").iterdir()) == ["epoch-0001.pt", "epoch-0003.pt"]
    # an epoch past the run is a setting error, before training
    assert main([*args[:-len(TINY)], "--eval-epochs", "9", "--fresh", *TINY]) == 2


def test_a_robustness_run_without_umap_is_refused_before_training(monkeypatch, tmp_path):
    import importlib.util

    from spreadcon.data import DATASETS
    from spreadcon.runs.checks import ROBUSTNESS_NAMES

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    kw = dict(method="ce", preset="smoke", seed=0, results_dir=tmp_path)
    with pytest.raises(SettingError, match="needs umap-learn.*subgroup_cluster=kmeans-raw"):
        check_settings(dataset="mnist-cifar", **kw)
    # the named option without UMAP, and transfer datasets, need no umap
    check_settings(dataset="mnist-cifar", overrides={"subgroup_cluster": "kmeans-raw"}, **kw)
    check_settings(dataset="mnist", **kw)
    assert {d for d in DATASETS if d != "folder"} - set(ROBUSTNESS_NAMES) == {
        "mnist", "cifar10", "cifar100", "cifar100u", "tinyimagenet"}
    from spreadcon.runs.cost import DATASET_SIZES

    assert set(ROBUSTNESS_NAMES) == {d for d, s in DATASET_SIZES.items() if s.task == "robustness"}


# --------------------------------------------------------------------------- trust: names, settings, commands


def test_run_experiment_takes_everything_but_dataset_and_method_by_keyword():
    import inspect

    from spreadcon.runs.experiment import _train, run_experiment

    for fn, positional in ((run_experiment, ["dataset", "method"]), (_train, ["m", "ds", "cfg"])):
        params = inspect.signature(fn).parameters.values()
        assert [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD] == positional


def test_the_checks_and_the_command_line_import_no_training_code():
    code = ("import sys; import spreadcon.runs.checks, spreadcon.runs.cli, spreadcon.runs.names; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('spreadcon.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


BAD_SETS = ["lr=inf", "temperature=inf", "ce_weight=nan", "recon_weight=-1", "eval_batch_size=0", "knn_k=-1",
            "probe_epochs=0", "probe_weight_decay=nan", "encoder=bogus", "epochs=1.5", "clamp=inf"]


def test_every_bad_config_value_exits_2_in_one_line_before_torch_is_imported(tmp_path):
    """Each of these was accepted before: lr=inf trained, probe_weight_decay=nan exited 0 with a NaN in the
    record, encoder=bogus raised a traceback after the data loaded."""
    code = ("import contextlib, io, json, sys; from spreadcon.runs.cli import main\n"
            "out = []\n"
            f"for item in {BAD_SETS!r}:\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            f"        rc = main(['mnist', 'spread', '--set', item, '--results', {str(tmp_path)!r}])\n"
            "    out.append([item, rc, err.getvalue().strip().splitlines()])\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'runs': out}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    got = json.loads(out.stdout)
    assert got["torch"] is False, "a setting was checked after torch was imported"
    for item, rc, err in got["runs"]:
        key = item.split("=")[0]
        assert rc == 2 and len(err) == 1 and f"config {key}=" in err[0], (item, rc, err)
    assert not list(tmp_path.rglob("*.json"))


def test_a_batch_the_processes_cannot_share_is_a_setting_error(monkeypatch, tmp_path, capsys):
    import spreadcon.data as sdata

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(sdata, "load", lambda *a, **k: pytest.fail("data loaded before the settings were checked"))
    assert main(["mnist", "ce", "--preset", "smoke", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_size=64 must be divisible by the number of processes (3" in err[0]


@pytest.mark.data
def test_a_one_off_run_never_replaces_the_presets_record(data_root, tmp_path, capsys):
    """--set epochs=2 on the smoke preset used to write smoke/<method>_seed0.json over the committed one."""
    committed = tmp_path / "transfer" / "mnist" / "smoke" / "random-init_seed0.json"
    committed.parent.mkdir(parents=True)
    committed.write_text('{"committed": true}\n')
    args = ["mnist", "random-init", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path),
            "--set", "epochs=2", "--set", "epochs=2", "--set", "knn_k=10", *TINY]  # knn_k=10 is smoke's own value
    assert main(args) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert committed.read_text() == '{"committed": true}\n'
    name = "smoke.set.batch_size-32.epochs-2.probe_epochs-20.test_size-128.train_size-128.val_size-64"
    assert path == tmp_path / "transfer" / "mnist" / name / "random-init_seed0.json"
    rec = json.loads(path.read_text())
    assert rec["preset"] == name and rec["provenance"]["config"]["epochs"] == 2
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in a record"))  # strict JSON


def test_record_preset_names_are_distinct_and_safe_folder_names():
    """A name is a folder: only letters, digits, ``.``, ``_`` and ``-`` (a record's names may hold no
    other), and two different configs never share one, however their values print."""
    from spreadcon.presets import resolve
    from spreadcon.runs.names import MAX_NAME, NAME_PATTERN, resolve_run

    many = {k: v for k, v in resolve("paper", "cifar10").to_dict().items() if k not in ("alpha", "image_size")}
    cases = [{"lr": 1e20}, {"lr": 1e21}, {"lr": 0.1 + 0.2}, {"lr": 0.3}, {"clamp": "1e+3"}, {"clamp": "1e3"},
             {"subgroup_cluster": "kmeans-raw"}, {"compile": True}, many, {**many, "knn_k": 7}]
    names = [resolve_run("cpu-long", "mnist", "spread", overrides=o)[1] for o in cases]
    assert len(set(names)) == len(cases), names
    assert all(NAME_PATTERN.fullmatch(n) and len(n) <= MAX_NAME and n.startswith("cpu-long.set.") for n in names)
    assert names[2:4] == ["cpu-long.set.lr-0.30000000000000004", "cpu-long.set.lr-0.3"]


@pytest.mark.data
def test_alphas_that_differ_after_the_sixth_digit_get_two_records(data_root, tmp_path):
    from spreadcon.runs.experiment import run_experiment

    over = {"train_size": 128, "val_size": 64, "test_size": 128, "batch_size": 32, "probe_epochs": 20}
    paths = [run_experiment("mnist", "random-init", preset="smoke", data_root=data_root, results_dir=tmp_path,
                            overrides=over, alpha=a, progress=False) for a in (0.1234561, 0.1234564)]
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)
    assert [json.loads(p.read_text())["provenance"]["config"]["alpha"] for p in paths] == [0.1234561, 0.1234564]
    # the sweep's alphas keep the names their committed records have
    from spreadcon.runs.names import resolve_run

    assert resolve_run("cpu", "mnist", "spread", alpha=0.25)[1] == "cpu"
    assert resolve_run("cpu", "mnist", "spread")[1] == "cpu"


@pytest.mark.data
def test_a_checkpoint_of_another_run_is_a_setting_error_before_training(data_root, tmp_path, capsys):
    ck, args, before = _trained(data_root, tmp_path, capsys)
    for mode in ("--resume", "--eval-only"):
        assert main([*args, "--set", "lr=0.01", mode]) == 2  # another config: not this run's checkpoint
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "belongs to a different run" in err[0], err
    assert _sha(ck / "last.pt") == before
