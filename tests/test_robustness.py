"""The proxy validation rule (spreadcon.robustness) and per-group metrics in records."""

from __future__ import annotations

import pytest

from spreadcon import records
from spreadcon.robustness import THRESHOLDS, proxy_validation, validation_markdown


def _rec(seed, **metrics):
    return {"dataset": "p", "method": "ce", "seed": seed, "metrics": metrics}


def test_validation_passes_only_when_every_criterion_of_one_variant_holds():
    good = dict(coarse_head_test_acc=0.70, oracle_worst_group_acc=0.70, erm_worst_group_acc=0.45,
                oracle_retrain_worst_group_acc=0.60, head_worst_group_acc=0.50)
    v = proxy_validation([_rec(0, **good), _rec(1, **good)], "p")
    assert v["passed"] is True and v["passed_by"] == ["last layer"] and v["seeds"] == [0, 1]
    gap = [r for r in v["rows"] if r["check"].startswith("true-group DRO minus ERM") and "last" in r["check"]][0]
    assert gap["value"] == pytest.approx(0.25) and gap["passed"]
    # the gap is paired by seed: 0.19 on average fails even though each side alone looks fine
    close = [_rec(0, **{**good, "erm_worst_group_acc": 0.50}), _rec(1, **{**good, "erm_worst_group_acc": 0.52})]
    v = proxy_validation(close, "p")
    assert v["passed"] is False and v["passed_by"] == []
    # a class head below 65% fails every variant
    v = proxy_validation([_rec(0, **{**good, "coarse_head_test_acc": 0.64})], "p")
    assert v["passed"] is False
    # the whole-network variant can pass on its own
    net = {**good, "oracle_worst_group_acc": 0.5, "oracle_retrain_worst_group_acc": 0.8}
    assert proxy_validation([_rec(0, **net)], "p")["passed_by"] == ["whole network"]
    assert THRESHOLDS == {"head": 0.65, "oracle": 0.65, "gap": 0.20}


def test_validation_without_records_and_its_table():
    assert proxy_validation([], "p") == {"rows": [], "passed": None, "passed_by": [], "seeds": []}
    table = validation_markdown({"p": proxy_validation([_rec(0, coarse_head_test_acc=0.5)], "p")})
    assert "| p | class head, balanced test | 50.0 ± 0.0 (n=1) | ≥ 65 | **fails** |" in table


def test_records_keep_per_group_breakdowns_and_refuse_bad_ones():
    kw = dict(dataset="mnist-cifar", method="ce", preset="smoke", seed=0, task="robustness", config={},
              started_at="2026-01-01T00:00:00+00:00", wall_time_s=1.0, git="abc")
    rec = records.make_record(metrics={"worst_group_acc": 0.5, "avg_acc": 0.6,
                                       "per_group_acc": {0: 0.5, 1: 0.75}}, **kw)
    assert rec["metrics"]["per_group_acc"] == {"0": 0.5, "1": 0.75}
    with pytest.raises(ValueError, match="per-group"):
        records.make_record(metrics={"worst_group_acc": 0.5, "avg_acc": 0.6, "per_group_acc": {0: 1.5}}, **kw)
    with pytest.raises(ValueError, match="per-group"):
        records.make_record(metrics={"worst_group_acc": 0.5, "avg_acc": 0.6, "spread": {0: 0.5}}, **kw)
