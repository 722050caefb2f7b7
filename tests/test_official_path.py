"""The GPU path, exercised on the CPU before any GPU is lent.

The ``official`` preset is what a GPU runs: the paper's ViT, the ResNet-18
decoder, the official loss quirks, the AdamW probe on augmented images,
bf16 autocast and ``torch.compile``; on a robustness set, GEORGE's subgroup
inference and both Group DRO variants (last layer, and the whole network
retrained). Nothing else in the tests runs that code. Here it runs end to end
on a tiny subset of the real data, so a change that breaks the GPU path fails
CI on a 2-core machine, not on the day a GPU is lent.
"""

from __future__ import annotations

import json
import math

import pytest

from spreadcon.runs.experiment import run_experiment

pytestmark = [pytest.mark.slow, pytest.mark.data]

# A few batches of everything: the preset's code path, not its scale.
TINY = dict(train_size=48, val_size=32, test_size=48, epochs=1, batch_size=16, probe_epochs=1,
            eval_batch_size=48, knn_k=5, dro_epochs=2, max_clusters=2, amp="bf16", checkpoint_every=1)


def _record(path) -> dict:
    assert path is not None
    return json.loads(open(path).read())


def _check_official_config(rec: dict) -> None:
    cfg = rec["provenance"]["config"]
    assert (cfg["encoder"], cfg["decoder"], cfg["probe"]) == ("vit", "resnet", "adamw")
    assert cfg["reference_quirks"] is True
    assert rec["provenance"]["precision"] == "bf16"  # autocast really ran in bf16


def _accuracy(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_official_transfer_with_thanos_quirks_compiled_in_bf16(data_root, tmp_path):
    """Thanos with the official loss: two ViT backbones (one with the ResNet-18 decoder), compiled, bf16."""
    path = run_experiment("cifar10", "thanos-quirks", preset="official", seed=0, data_root=data_root,
                          results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "ck", progress=False,
                          overrides={**TINY, "compile": True})
    rec = _record(path)
    _check_official_config(rec)
    assert rec["provenance"]["config"]["compile"] is True
    assert rec["task"] == "transfer" and rec["method"] == "thanos-quirks"
    assert _accuracy(rec["metrics"]["fine_test_acc"]) and _accuracy(rec["metrics"]["coarse_test_acc"])


def test_official_robustness_through_george_and_both_group_dro_variants(data_root, tmp_path):
    """A robustness proxy: GEORGE's step 1 (UMAP + GMM), last-layer Group DRO, and the network retrained."""
    path = run_experiment("cifar-patch", "spread-quirks", preset="official", seed=0, data_root=data_root,
                          results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "ck", progress=False,
                          overrides={**TINY, "compile": False, "dro_retrain": True, "subgroup_cluster": "umap-gmm"})
    rec = _record(path)
    _check_official_config(rec)
    m = rec["metrics"]
    assert rec["task"] == "robustness"
    for key in ("worst_group_acc", "avg_acc", "retrain_worst_group_acc", "erm_worst_group_acc",
                "oracle_worst_group_acc"):
        assert _accuracy(m[key]), key
    assert m["worst_group_acc"] <= m["avg_acc"] + 1e-9
    assert -1.0 <= m["inferred_group_ami"] <= 1.0
