"""Presets, the method table and result records: lookups, overrides, errors, record validation."""

from __future__ import annotations

import json

import pytest

from spreadcon.runs import records
from spreadcon.methods import METHODS, get_method
from spreadcon.presets import DATASET_ADJUSTMENTS, PRESETS, Config, parse_value, resolve


def test_paper_preset_carries_the_official_hyperparameters():
    cfg = resolve("paper", "cifar10")
    assert (cfg.encoder, cfg.lr, cfg.batch_size, cfg.views) == ("vit", 3e-4, 128, 2)
    assert (cfg.temperature, cfg.alpha, cfg.epochs, cfg.cosine_period_epochs) == (0.5, 0.5, 600, 100)
    assert (cfg.probe, cfg.probe_epochs, cfg.probe_lr, cfg.amp) == ("adamw", 100, 1e-3, "auto")
    assert cfg.train_size == 0  # all data


@pytest.mark.parametrize("dataset", [None, "mnist", "cifar10", "cifar100u", "tinyimagenet", "celeba"])
def test_official_is_paper_with_only_the_reference_quirks(dataset):
    official, paper = resolve("official", dataset).to_dict(), resolve("paper", dataset).to_dict()
    assert {k for k in paper if paper[k] != official[k]} == {"reference_quirks"}
    assert (official["reference_quirks"], paper["reference_quirks"]) == (True, False)


def test_colab_keeps_the_paper_protocol_and_cuts_only_the_training_length():
    from spreadcon.runs.cost import DATASET_SIZES

    allowed = {"epochs", "cosine_period_epochs", "checkpoint_every", "image_size"}
    for dataset in DATASET_SIZES:
        colab, paper = resolve("colab", dataset).to_dict(), resolve("paper", dataset).to_dict()
        assert {k for k in paper if paper[k] != colab[k]} <= allowed, dataset
        assert colab["train_size"] == 0 and colab["probe"] == "adamw" and colab["probe_epochs"] == 100
        assert colab["epochs"] < paper["epochs"]


def test_colab_costs_about_30_t4_minutes_per_run():
    """The band is 25-35 minutes for supcon and spread at the assumed T4 throughput, on every dataset."""
    from spreadcon.runs.cost import ASSUMED, DATASET_SIZES, gpu_hours, run_cost

    t4 = ASSUMED["t4"]
    minutes = {d: 60 * gpu_hours(run_cost(d, "spread", "colab").total_flops, t4) for d in DATASET_SIZES}
    assert all(25 <= m <= 35 for m in minutes.values()), minutes
    assert 60 * gpu_hours(run_cost("cifar10", "supcon", "colab").total_flops, t4) == pytest.approx(minutes["cifar10"])
    assert minutes["cifar10"] == pytest.approx(31.0, abs=0.5)  # the figure the docstring and README quote


def test_dataset_adjustments_apply_then_overrides_win():
    base = resolve("cpu")
    adjusted = resolve("cpu", "tinyimagenet")
    assert adjusted.image_size == DATASET_ADJUSTMENTS[("cpu", "tinyimagenet")]["image_size"] != base.image_size
    assert resolve("cpu", "tinyimagenet", {"image_size": 0}).image_size == 0


def test_string_overrides_are_parsed_to_the_field_type():
    cfg = resolve("smoke", "mnist", {"epochs": "3", "lr": "0.01", "compile": "true", "encoder": "linear"})
    assert (cfg.epochs, cfg.lr, cfg.compile, cfg.encoder) == (3, 0.01, True, "linear")
    assert parse_value("select_on_val", "0") is False


def test_unknown_override_key_lists_the_valid_keys():
    with pytest.raises(ValueError, match="unknown config key") as err:
        resolve("cpu", "mnist", {"learning_rate": 1.0})
    assert "lr" in str(err.value) and "batch_size" in str(err.value)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="smoke, cpu, paper"):
        resolve("huge", "mnist")


@pytest.mark.parametrize("key,value", [("alpha", 1.5), ("temperature", 0.0), ("views", 1), ("amp", "fp8"),
                                       ("epochs", "two")])
def test_out_of_range_values_are_rejected(key, value):
    with pytest.raises(ValueError, match=key):
        resolve("cpu", "mnist", {key: value})


@pytest.mark.parametrize("key,value,says", [
    ("lr", "inf", "finite number > 0"), ("temperature", "inf", "finite number > 0"),
    ("ce_weight", "nan", "finite number >= 0"), ("recon_weight", -1.0, "finite number >= 0"),
    ("contrastive_weight", "-0.5", "finite number >= 0"), ("eval_batch_size", "0", "integer >= 1"),
    ("knn_k", "-1", "integer >= 1"), ("probe_epochs", "0", "integer >= 1"),
    ("probe_weight_decay", "nan", "finite number >= 0"), ("encoder", "bogus", "one of vit, resnet18, cnn, linear"),
    ("decoder", "unet", "one of resnet, cnn"), ("epochs", 1.5, "integer >= 1"), ("compile", 1, "true or false"),
    ("clamp", "nan", "auto, none or a finite number"), ("warmup_epochs", "9", "from 0 to epochs"),
    ("train_size", "1", "0 (all) or an integer >= 2"), ("image_size", "4", "integer >= 8"),
])
def test_every_key_is_checked_for_type_finiteness_range_and_choice(key, value, says):
    """The values that were accepted before the rule table (lr=inf ran; probe_weight_decay=nan wrote NaN
    into a record; encoder=bogus failed only after the data loaded)."""
    with pytest.raises(ValueError) as err:
        resolve("cpu", "mnist", {key: value})
    assert str(err.value).startswith(f"config {key}=") and says in str(err.value)


def test_the_rule_table_covers_every_key_and_passes_every_preset():
    from dataclasses import fields

    from spreadcon.models import DECODERS, ENCODERS
    from spreadcon.presets import DECODER_NAMES, ENCODER_NAMES, RULES
    from spreadcon.runs.cost import DATASET_SIZES

    assert list(RULES) == [f.name for f in fields(Config)]  # one rule per key, in the Config's order
    assert ENCODER_NAMES == tuple(ENCODERS) and DECODER_NAMES == tuple(DECODERS)
    for preset in PRESETS:
        for dataset in (None, *DATASET_SIZES):
            resolve(preset, dataset)  # raises if a preset broke its own rules
    # a float key takes an int and stores a float, so a record's config has one type per key
    assert resolve("cpu", "mnist", {"lr": 1}).to_dict()["lr"] == 1.0
    assert isinstance(resolve("cpu", "mnist", {"lr": 1}).lr, float)


def test_every_config_field_has_a_comment_in_the_source():
    import inspect

    import spreadcon.presets as p

    src = inspect.getsource(p.Config)
    for name in Config.__dataclass_fields__:
        line = next(ln for ln in src.splitlines() if ln.strip().startswith(f"{name}:"))
        assert "#" in line, f"Config.{name} has no unit/reason comment"


def test_method_table_and_unknown_method():
    assert {"ce", "supcon", "spread", "autoencoder", "thanos", "simclr", "thanos-joint"} <= set(METHODS)
    assert get_method("thanos").backbones == ("spread", "autoencoder")
    assert get_method("thanos-joint").terms == ("ce", "spread", "recon")
    assert get_method("autoencoder").needs_decoder and not get_method("spread").needs_decoder
    with pytest.raises(ValueError, match="valid methods: ce, supcon"):
        get_method("byol")


# ------------------------------------------------------------------ records


def _record(**kw):
    base = dict(dataset="mnist", method="spread", preset="smoke", seed=1, task="transfer",
                metrics={"fine_test_acc": 0.25, "coarse_test_acc": 0.75}, config=PRESETS["smoke"].to_dict(),
                started_at="2024-01-01T00:00:00+00:00", wall_time_s=3.0, git="abc")
    base.update(kw)
    return records.make_record(**base)


def test_record_round_trip_and_path_layout(tmp_path):
    path = records.write_record(_record(), tmp_path)
    assert path == tmp_path / "transfer" / "mnist" / "smoke" / "spread_seed1.json"
    rec = json.loads(path.read_text())
    assert rec["provenance"]["config"]["epochs"] == PRESETS["smoke"].epochs
    loaded = records.load_records(tmp_path, dataset="mnist")
    assert len(loaded) == 1 and loaded[0]["metrics"]["fine_test_acc"] == 0.25
    assert records.load_records(tmp_path, dataset="cifar10") == []
    alpha = records.write_record(_record(extra={"alpha_override": 0.25}), tmp_path)
    assert alpha.name == "spread_seed1_alpha0.25.json"
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


@pytest.mark.parametrize("change,match", [
    (dict(metrics={"fine_test_acc": 1.5, "coarse_test_acc": 0.5}), "fine_test_acc"),
    (dict(metrics={"fine_test_acc": 0.5}), "coarse_test_acc"),
    (dict(task="robustness"), "worst_group_acc"),
    (dict(task="other"), "task"),
])
def test_invalid_records_are_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        _record(**change)


def test_load_records_skips_invalid_files(tmp_path):
    records.write_record(_record(), tmp_path)
    (tmp_path / "junk.json").write_text('{"dataset": "mnist"}')
    (tmp_path / "broken.json").write_text("{")
    assert len(records.load_records(tmp_path)) == 1


def test_git_commit_marks_a_dirty_tree(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a").write_text("1")
    env = ["-c", "user.email=a@b", "-c", "user.name=n"]
    subprocess.run(["git", *env, "-C", str(tmp_path), "add", "a"], check=True)
    subprocess.run(["git", *env, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    clean = records.git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "a").write_text("2")
    assert records.git_commit(tmp_path) == clean + "-dirty"
