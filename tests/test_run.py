"""The experiment driver and its CLI (CONTRACT sections 3 and 4) on the real data, smoke-sized."""

from __future__ import annotations

import json

import pytest

from spreadcon.runs import records
from spreadcon.runs.cli import main
from spreadcon.runs.experiment import run_experiment

TINY = ["--set", "train_size=128", "--set", "val_size=64", "--set", "test_size=128", "--set", "batch_size=32",
        "--set", "probe_epochs=20", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.mark.data
def test_cli_smoke_run_writes_a_valid_record_and_prints_its_path_last(data_root, tmp_path, capsys):
    code = main(["mnist", "spread", "--preset", "smoke", "--seed", "2", "--data-root", str(data_root),
                 "--results", str(tmp_path), "--alpha", "0.25", *TINY])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    preset = "smoke.set.batch_size-32.probe_epochs-20.test_size-128.train_size-128.val_size-64"  # TINY's changes
    path = tmp_path / "transfer" / "mnist" / preset / "spread_seed2_alpha0.25.json"
    assert out[-1] == str(path)
    rec = json.loads(path.read_text())
    records.validate_record(rec)
    assert (rec["dataset"], rec["method"], rec["preset"], rec["seed"], rec["task"]) == ("mnist", "spread", preset, 2,
                                                                                        "transfer")
    assert rec["provenance"]["config"]["alpha"] == 0.25 and rec["provenance"]["config"]["train_size"] == 128
    assert rec["provenance"]["device"] == "cpu" and rec["provenance"]["wall_time_s"] > 0
    m = rec["metrics"]
    # 1 epoch on 128 images is weak, but an encoder + probe on MNIST's 10 digits beats chance (0.1) clearly
    assert m["fine_test_acc"] > 0.2 and m["coarse_test_acc"] > 0.55
    assert 0.0 <= m["spread"] <= 1.0 and -1.0 <= m["within_class_cosine"] <= 1.0


@pytest.mark.data
@pytest.mark.slow
def test_thanos_concatenates_two_backbones_and_robustness_runs(data_root, tmp_path):
    path = run_experiment("mnist", "thanos", preset="smoke", data_root=data_root, results_dir=tmp_path,
                          overrides={"train_size": 128, "val_size": 64, "test_size": 128, "batch_size": 32,
                                     "probe_epochs": 20}, progress=False)
    rec = json.loads(path.read_text())
    assert {"spread_coarse_val_acc", "autoencoder_coarse_val_acc"} <= set(rec["metrics"])
    path = run_experiment("mnist-cifar", "ce", preset="smoke", data_root=data_root, results_dir=tmp_path,
                          overrides={"train_size": 256, "val_size": 64, "test_size": 256, "batch_size": 32,
                                     "dro_epochs": 10}, progress=False)
    rec = json.loads(path.read_text())
    assert rec["task"] == "robustness" and path.parent.parent == tmp_path / "robustness" / "mnist-cifar"
    # test_size=256 is smoke's own value: only what differs names the preset
    assert path.parent.name == rec["preset"] == "smoke.set.batch_size-32.dro_epochs-10.train_size-256.val_size-64"
    m = rec["metrics"]
    assert 0.0 <= m["worst_group_acc"] <= m["avg_acc"] <= 1.0
    assert m["oracle_worst_group_acc"] <= m["oracle_avg_acc"] and "erm_worst_group_acc" in m


@pytest.mark.data
def test_checkpoints_and_resume_through_the_cli(data_root, tmp_path, capsys):
    args = ["mnist", "ce", "--preset", "smoke", "--data-root", str(data_root), "--results", str(tmp_path / "r"),
            "--checkpoint-dir", str(tmp_path / "ck"), *TINY]
    assert main(args) == 0
    first = json.loads(open(capsys.readouterr().out.strip().splitlines()[-1]).read())
    assert (tmp_path / "ck" / "last.pt").exists()
    assert main([*args, "--resume"]) == 0  # the run is complete: resuming retrains nothing, same metrics
    second = json.loads(open(capsys.readouterr().out.strip().splitlines()[-1]).read())
    assert second["metrics"]["fine_test_acc"] == first["metrics"]["fine_test_acc"]


@pytest.mark.parametrize("argv,match", [
    (["imagenet", "spread"], "valid datasets: mnist"),
    (["mnist", "byol"], "valid methods: ce"),
    (["mnist", "spread", "--preset", "huge"], "valid presets: smoke, cpu, paper"),
    (["mnist", "spread", "--set", "learning_rate=1"], "valid keys"),
    (["mnist", "spread", "--set", "lr"], "KEY=VALUE"),
    (["mnist", "spread", "--resume"], "--checkpoint-dir"),
])
def test_bad_names_exit_non_zero_and_list_the_valid_ones(argv, match, capsys, tmp_path):
    assert main([*argv, "--results", str(tmp_path)]) == 2
    assert match in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))


def test_module_entry_point_dispatches_run(capsys):
    from spreadcon.__main__ import main as cli

    assert cli(["run", "mnist", "nope"]) == 2
    assert "valid methods" in capsys.readouterr().err
