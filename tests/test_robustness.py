"""The proxy validation rule (spreadcon.book.proxies) and per-group metrics in records."""

from __future__ import annotations

import math

import pytest

from spreadcon.runs import records
from spreadcon.book.proxies import THRESHOLDS, proxy_validation, validation_markdown


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


def _full(method, seed, **metrics):
    return {"dataset": "p", "method": method, "seed": seed, "metrics": metrics}


def test_strategy_table_rows_are_the_records_worst_groups_and_skip_missing_keys():
    from spreadcon.book.proxies import STRATEGIES, strategy_table

    recs = [_full("ce", 0, worst_group_acc=0.40, retrain_worst_group_acc=0.70, oracle_retrain_worst_group_acc=0.80),
            _full("ce", 1, worst_group_acc=0.50, retrain_worst_group_acc=0.60, oracle_retrain_worst_group_acc=0.90),
            _full("thanos", 0, worst_group_acc=0.30),  # an old record: no retrain key
            {**_full("ce", 0, worst_group_acc=0.99), "dataset": "other"}]
    t = strategy_table(recs, "p")
    labels = [s[0] for s in STRATEGIES]
    assert t["ce", labels[2]].mean == pytest.approx(45.0) and t["ce", labels[2]].n == 2
    assert t["ce", labels[3]].values == pytest.approx((70.0, 60.0))
    assert t["ce", labels[5]].mean == pytest.approx(85.0)
    assert ("thanos", labels[3]) not in t and t["thanos", labels[2]].n == 1
    assert ("ce", labels[0]) not in t  # no head metric in these records


def test_per_group_table_means_each_group_over_seeds():
    from spreadcon.book.proxies import per_group_table

    recs = [_full("ce", 0, per_group_acc={"0": 0.9, "1": 0.2, "2": 0.3, "3": 0.8}),
            _full("ce", 1, per_group_acc={"0": 0.7, "1": 0.4, "2": 0.5, "3": 1.0}),
            _full("spread", 0, retrain_per_group_acc={"0": 0.5})]
    t = per_group_table(recs, "p")
    assert sorted(t) == [("ce", 0), ("ce", 1), ("ce", 2), ("ce", 3)]
    assert t["ce", 1].mean == pytest.approx(30.0) and t["ce", 3].std == pytest.approx(14.142, abs=1e-3)
    assert per_group_table(recs, "p", "retrain_per_group_acc")["spread", 0].mean == pytest.approx(50.0)


def test_explanation_rows_pair_fine_against_group_ami_and_compare_with_ce():
    from spreadcon.book.proxies import explanation_markdown, explanation_rows

    recs = []
    for s, jitter in enumerate((0.0, 0.01, -0.01)):
        recs.append(_full("ce", s, inferred_group_ami=0.20 + jitter, inferred_fine_ami=0.10 + jitter,
                          inferred_n_groups=4))
        recs.append(_full("spread", s, inferred_group_ami=0.05 + jitter, inferred_fine_ami=0.40 - jitter,
                          inferred_n_groups=6))
        recs.append(_full("supcon", s, inferred_group_ami=0.20 - jitter, inferred_fine_ami=0.10 + jitter))
    rows = {r["method"]: r for r in explanation_rows(recs, "p", ["ce", "spread", "supcon", "thanos"])}
    assert set(rows) == {"ce", "spread", "supcon"}  # thanos has no records
    sp = rows["spread"]
    assert sp["group_ami"].mean == pytest.approx(5.0) and sp["fine_ami"].mean == pytest.approx(40.0)
    assert sp["fine_minus_group"].mean == pytest.approx(35.0)
    assert sp["group_vs_base"][2] == "lower" and sp["fine_vs_base"][2] == "higher"
    assert sp["tilt_vs_base"][0] == pytest.approx(35.0 - (-10.0)) and sp["tilt_vs_base"][2] == "higher"
    assert rows["supcon"]["group_vs_base"][2] == "within noise"
    # the second element is the half width t·se of the 95% interval: both sides s = 1, n = 3 -> se = sqrt(2/3), df 4
    assert sp["group_vs_base"][1] == pytest.approx(2.7764451 * math.sqrt(2 / 3), abs=1e-6)
    md = explanation_markdown(list(rows.values()), {"spread": "SupCon + cNCE"})
    assert "| SupCon + cNCE | 5.0 ± 1.0 (n=3) | 40.0 ± 1.0 (n=3) | 35.0 ± 2.0 (n=3) | 6.0 |" in md


def test_group_counts_and_records_at_a_missing_commit():
    import torch

    from spreadcon.book.proxies import group_counts, records_at_commit

    assert group_counts(torch.tensor([3, 0, 3, 3]), ["a", "b", "c", "d"]) == [
        ("a", 1, 0.25), ("b", 0, 0.0), ("c", 0, 0.0), ("d", 3, 0.75)]
    assert records_at_commit("0" * 40, repo="/") == []  # no repository there: no records, no exception
