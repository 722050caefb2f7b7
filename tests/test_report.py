"""Tables and verdicts from records: checked against hand-computed values."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from spreadcon.book import report


def rec(dataset, method, seed, acc, metric="fine_test_acc", preset="cpu", wall=10.0):
    return {"dataset": dataset, "method": method, "seed": seed, "preset": preset, "task": "transfer",
            "metrics": {metric: acc},
            "provenance": {"git_commit": "abcdef0123456789", "torch_version": "2.x", "device": "cpu",
                           "started_at": f"2026-01-0{seed + 1}T00:00:00+00:00", "wall_time_s": wall,
                           "config": {}}}


def test_summarize_mean_and_sample_std_in_percent():
    t = report.summarize([rec("d", "m", 2, 0.30), rec("d", "m", 0, 0.10), rec("d", "m", 1, 0.20),
                          rec("d", "x", 0, 0.5, metric="other")], "fine_test_acc")
    assert set(t) == {("d", "m")}
    s = t["d", "m"]
    assert s.seeds == (0, 1, 2) and s.values == pytest.approx((10.0, 20.0, 30.0))
    assert s.mean == pytest.approx(20.0)
    assert s.std == pytest.approx(10.0)            # sqrt(((-10)^2 + 0 + 10^2) / 2)
    assert s.sem == pytest.approx(10.0 / math.sqrt(3))


def welch(a, b):
    """Welch's se and Welch–Satterthwaite df from the per-seed values (points), written out."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    return math.sqrt(va + vb), (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))


@pytest.mark.parametrize("a, b, paper, status", [
    ([0.60, 0.62], [0.50, 0.52], 11.1, report.AGREES),          # +10, se 1.41, df 2: 10 - 4.30 se > 0, >= 5.55
    ([0.57, 0.59], [0.50, 0.52], 15.0, report.SMALLER),         # +7 - 4.30 se > 0 but < 15 / 2
    ([0.53, 0.55], [0.50, 0.52], 11.1, report.INCONCLUSIVE),    # +3, se 1.41: beyond 2 se, not beyond 4.30 se
    ([0.40, 0.80], [0.50, 0.52], 11.1, report.INCONCLUSIVE),    # +9 but se 14.1: the interval holds 0
    ([0.50, 0.51], [0.50, 0.52], 4.7, report.INCONCLUSIVE),     # -0.5 within noise
    ([0.50, 0.52], [0.50, 0.52], 4.7, report.INCONCLUSIVE),     # exactly 0
    ([0.40, 0.41], [0.50, 0.52], 4.7, report.OPPOSITE),         # -10.5 beyond noise at df 1.47
])
def test_verdict_rule(a, b, paper, status):
    recs = [rec("d", "A", i, v) for i, v in enumerate(a)] + [rec("d", "B", i, v) for i, v in enumerate(b)]
    t = report.summarize(recs, "fine_test_acc")
    v = report.verdict(t["d", "A"], t["d", "B"], paper)
    se, df = welch([100 * x for x in a], [100 * x for x in b])
    assert v.status == status
    assert v.delta == pytest.approx(100 * (sum(a) / len(a) - sum(b) / len(b)))
    assert v.se == pytest.approx(se) and v.df == pytest.approx(df)
    assert v.t == pytest.approx(stats.t.ppf(0.975, df)) and v.half_width == pytest.approx(v.t * se)


def test_one_seed_on_a_side_has_no_interval():
    v = report.verdict(report.summary_of([70.0], [0]), report.summary_of([50.0, 51.0], [0, 1]), 11.1)
    assert v.status == report.INCONCLUSIVE and math.isnan(v.se) and math.isnan(v.t)
    assert v.describe() == "+19.5 pts (one seed: no noise estimate; paper +11.1)"


def test_three_seeds_a_side_use_t_at_four_degrees_of_freedom_not_two():
    """Equal spreads, 3 seeds a side: Welch's df is exactly 4, so the interval is ± 2.776 se; a gain of 3 with
    se 1.22 clears 2 se (2.45, the first edition's rule: 'reproduced') but not t_4 se (3.40)."""
    a, b = [60.0, 63.0, 61.5], [57.0, 60.0, 58.5]
    v = report.verdict(report.summary_of(a, [0, 1, 2]), report.summary_of(b, [0, 1, 2]), 5.0)
    assert v.df == pytest.approx(4.0) and v.t == pytest.approx(2.7764451, abs=1e-6)
    assert v.se == pytest.approx(math.sqrt(1.5 ** 2 / 3 * 2))
    assert v.delta - 2 * v.se > 0 and v.status == report.INCONCLUSIVE
    assert v.describe() == "+3.0 ± 2.78·1.2 pts (df 4; paper +5.0)"
    # unequal spreads: the df falls toward the noisier side's n - 1, and t grows with it
    a2 = [60.0, 66.0, 63.0]
    v2 = report.verdict(report.summary_of(a2, [0, 1, 2]), report.summary_of(b, [0, 1, 2]), 5.0)
    assert v2.df == pytest.approx(welch(a2, b)[1]) and 2 < v2.df < 4
    assert v2.t == pytest.approx(stats.t.ppf(0.975, welch(a2, b)[1]))


def test_two_se_was_88_percent_and_the_paired_rule_82():
    """What the first edition's Δ ± 2·se meant: P(|T_4| < 2) and P(|T_2| < 2), in closed form."""
    assert 2 * stats.t.cdf(2, 4) - 1 == pytest.approx(0.8839, abs=1e-4)
    assert 2 * stats.t.cdf(2, 2) - 1 == pytest.approx(math.sqrt(2 / 3))
    assert report.critical_value(4) == pytest.approx(stats.t.ppf(0.975, 4))
    assert math.isnan(report.critical_value(0)) and math.isnan(report.critical_value(math.nan))


def test_paired_verdict_uses_n_minus_one_degrees_of_freedom():
    d = report.summary_of([1.0, 3.0, 5.0], [0, 1, 2])   # mean 3, s 2, se 2 / sqrt 3 = 1.155
    v = report.paired_verdict(d)
    assert v.df == 2 and v.t == pytest.approx(4.3026527, abs=1e-6) and v.n == (3,)
    assert v.delta - 2 * v.se > 0 and v.status == report.INCONCLUSIVE   # 3 < 4.30 * 1.155
    assert report.paired_verdict(report.summary_of([4.0, 5.0, 6.0], [0, 1, 2])).status == report.AGREES
    assert report.paired_verdict(report.summary_of([-4.0, -5.0, -6.0], [0, 1, 2])).status == report.OPPOSITE
    assert report.paired_verdict(None).status == report.NOT_RUN


def test_direction_only_claims_and_bad_claims():
    small = report.verdict(report.summary_of([51.0, 51.1, 51.2], [0, 1, 2]),
                           report.summary_of([50.0, 50.1, 50.2], [0, 1, 2]))
    assert small.status == report.AGREES and small.paper_delta is None   # +1 beyond noise, no size claimed
    assert small.describe() == "+1.0 ± 2.78·0.1 pts (df 4)"
    t = report.summarize([rec("d", "A", 0, 0.5)], "fine_test_acc")
    assert report.verdict(t["d", "A"], None, 1.0).status == report.NOT_RUN
    assert report.verdict(t["d", "A"], None, 1.0).describe() == "–"
    with pytest.raises(ValueError, match="paper_delta"):
        report.verdict(t["d", "A"], t["d", "A"], 0.0)


def test_average_lift_over_covered_datasets_only():
    recs = [rec("d1", "A", s, 0.6 + 0.01 * s) for s in (0, 1)] + [rec("d1", "B", s, 0.5 + 0.01 * s) for s in (0, 1)]
    recs += [rec("d2", "A", s, 0.7 + 0.02 * s) for s in (0, 1)] + [rec("d2", "B", s, 0.5) for s in (0, 1)]
    recs += [rec("d3", "A", 0, 0.9)]  # no baseline: not covered
    t = report.summarize(recs, "fine_test_acc")
    v, covered = report.average_lift(t, "A", "B", ["d1", "d2", "d3"], 11.1)
    assert covered == ["d1", "d2"]
    assert v.delta == pytest.approx((10.0 + 21.0) / 2)
    parts = [0.5 / 2, 0.5 / 2, 2.0 / 2, 0.0]                  # s²/n of the four cells (points²)
    assert v.se == pytest.approx(math.sqrt(sum(parts)) / 2)
    assert v.df == pytest.approx(sum(parts) ** 2 / sum(p ** 2 / 1 for p in parts))   # Satterthwaite, n - 1 = 1 each
    assert v.t == pytest.approx(stats.t.ppf(0.975, v.df))
    # 2 of the claim's 3 datasets: beyond noise and above half the claim, yet not "agrees" outright
    assert v.coverage == (2, 3) and v.status == report.coverage_status(2, 3) == "direction agrees (2 of 3 datasets)"
    assert v.describe().endswith("; 2 of 3 datasets)")
    full, covered = report.average_lift(t, "A", "B", ["d1", "d2"], 11.1)
    assert full.coverage == (2, 2) and full.status == report.AGREES
    none, covered = report.average_lift(t, "A", "B", ["d3"], 11.1)
    assert none.status == report.NOT_RUN and covered == []


def test_claims_table_states_how_many_comparisons_it_makes():
    a, b = report.summary_of([60.0, 62.0, 61.0], [0, 1, 2]), report.summary_of([50.0, 52.0, 51.0], [0, 1, 2])
    rows = [("x", report.verdict(a, b, 11.1), "e"), ("y", report.verdict(b, a, 1.0), "e"),
            ("z", report.verdict(a, None, 1.0), "e")]
    assert report.comparison_count(rows) == 2
    md = report.claims_markdown(rows).splitlines()
    assert md[0] == "| the paper claims | we measured (Δ ± t·se) | verdict | evidence |"
    assert md[2] == "| x | +10.0 ± 2.78·0.8 pts (df 4; paper +11.1) | **direction agrees, beyond noise** | e |"
    assert md[3].split(" | ")[2] == "**opposite direction**"
    assert md[-1] == "2 comparisons with records in this table, each a 95% interval, not corrected for multiplicity."
    assert report.claims_markdown(rows[2:]).splitlines()[-1] == "No comparison in this table has records yet."


def test_table_provenance_and_command():
    recs = [rec("d", "A", 0, 0.5, wall=30.0), rec("d", "A", 1, 0.7, wall=90.0)]
    t = report.summarize(recs, "fine_test_acc")
    md = report.markdown_table(t, ["A", "B"], ["d"], extra_cols={"paper": {"A": "79.1"}})
    assert md.splitlines()[2] == "| A | 60.0 ± 14.1 (n=2) | 79.1 |"
    assert md.splitlines()[3] == "| B | not run yet |  |"
    p = report.provenance(recs)
    assert p["wall_time_s_total"] == 120.0 and p["git_commits"] == ["abcdef0123"]
    assert "2 records; preset cpu" in report.provenance_line(recs)
    assert report.provenance_line([]) == "no records yet"
    assert report.reproduce_command("paper", ["celeba"], ["supcon", "thanos"], [0, 1]) == (
        "python -m spreadcon reproduce --preset paper --datasets celeba --methods supcon thanos --seeds 0 1")


def test_single_seed_cell_claims_no_spread():
    from spreadcon.book.report import Summary

    assert str(Summary(mean=92.5, std=0.0, n=1, values=(92.5,), seeds=(0,))) == "92.5 (n=1)"
    assert str(Summary(mean=60.0, std=14.1, n=2, values=(50.0, 70.0), seeds=(0, 1))) == "60.0 ± 14.1 (n=2)"


def test_method_gap_vs_noise_compares_the_method_gap_with_seed_noise():
    def recs(d, m, accs):
        return [{"dataset": d, "method": m, "seed": i, "preset": "cpu", "metrics": {"fine_test_acc": a}}
                for i, a in enumerate(accs)]
    table = report.summarize(recs("a", "x", [.50, .52, .48]) + recs("a", "y", [.60, .61, .62])
                             + recs("b", "x", [.50, .55, .45]) + recs("b", "y", [.52, .57, .47])
                             + recs("c", "x", [.5]) + recs("c", "y", [.6]), "fine_test_acc")
    a = report.method_gap_vs_noise(table, "a", ["x", "y", "z"])
    assert a["separated"] is True and a["best"] == "y" and a["worst"] == "x" and a["n_methods"] == 2
    assert a["gap"] == pytest.approx(11.0) and a["noise"] == pytest.approx(2.0)
    b = report.method_gap_vs_noise(table, "b", ["x", "y"])
    assert b["separated"] is False and b["gap"] == pytest.approx(2.0) and b["noise"] == pytest.approx(5.0)
    assert report.method_gap_vs_noise(table, "c", ["x", "y"])["separated"] is None  # one seed: noise unknown
    assert report.method_gap_vs_noise(table, "a", ["x"])["separated"] is None


def _by_epoch_rec(method, seed, values):
    return {"dataset": "d", "method": method, "seed": seed, "task": "transfer", "preset": "p", "metrics": {},
            "metrics_by_epoch": {str(e): {"fine_test_acc": v} for e, v in values.items()}}


def test_lift_by_epoch_pairs_seeds_and_skips_unpaired_ones():
    recs = [_by_epoch_rec("thanos", 0, {1: 0.60, 10: 0.80}), _by_epoch_rec("supcon", 0, {1: 0.58, 10: 0.70}),
            _by_epoch_rec("thanos", 1, {1: 0.62, 10: 0.84}), _by_epoch_rec("supcon", 1, {1: 0.60, 10: 0.70}),
            _by_epoch_rec("thanos", 2, {1: 0.99})]  # seed 2 has no baseline: left out
    lift = report.lift_by_epoch(recs, "d", "thanos", "supcon")
    assert sorted(lift) == [1, 10]
    assert lift[1].mean == pytest.approx(2.0) and lift[1].std == pytest.approx(0.0) and lift[1].seeds == (0, 1)
    assert lift[10].mean == pytest.approx(12.0) and lift[10].std == pytest.approx(2 ** 0.5 * 2)
    by = report.summarize_by_epoch(recs, "fine_test_acc")
    assert by["d", "thanos"][1].n == 3 and by["d", "thanos"][10].n == 2
    assert by["d", "supcon"][10].mean == pytest.approx(70.0)


def test_average_lift_both_ways_drops_the_uninformative_dataset():
    def cell(vals):
        return report.Summary(sum(vals) / len(vals), __import__("statistics").stdev(vals), len(vals), tuple(vals),
                              tuple(range(len(vals))))

    table = {("a", "thanos"): cell([80, 81]), ("a", "supcon"): cell([70, 71]),
             ("b", "thanos"): cell([50, 60]), ("b", "supcon"): cell([52, 58])}  # b: within noise
    both = report.average_lift_both_ways(table, "thanos", "supcon", ["a", "b"], 11.1, ["thanos", "supcon"])
    assert both["uninformative"][0] == ["b"]
    assert both["informative"][1] == ["a"] and both["informative"][0].delta == pytest.approx(10.0)
    assert both["all"][1] == ["a", "b"] and both["all"][0].delta == pytest.approx(5.0)
    # the informative average covers 1 of the claim's 2 datasets, and says so
    informative = both["informative"][0]
    assert informative.coverage == (1, 2) and informative.status == "direction agrees (1 of 2 datasets)"


def test_book_functions_take_more_than_six_inputs_by_keyword():
    """STYLE 21: plot_bars took 7 and run_live 9 positional parameters, where swapping two raises nothing."""
    import importlib
    import inspect
    import pkgutil

    import spreadcon.book

    crowded = []
    for info in pkgutil.iter_modules(spreadcon.book.__path__):
        module = importlib.import_module(f"spreadcon.book.{info.name}")
        for name, f in inspect.getmembers(module, inspect.isfunction):
            if f.__module__ == module.__name__:
                kinds = [p.kind for p in inspect.signature(f).parameters.values()]
                if sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                       for k in kinds) > 6:
                    crowded.append(f"{module.__name__}.{name}")
    assert crowded == []
    with pytest.raises(TypeError):
        report.run_live("mnist", ["ce"], "smoke", [0], "/nonexistent", (0.5,))  # alphas only by name


def test_the_method_gap_check_is_not_named_like_the_geometric_separation():
    """theory.model.separation is within- against between-class cosine of an embedding; the report's check
    compares the methods' accuracy gap with seed noise, and says so in its name."""
    from spreadcon.theory import model

    assert not hasattr(report, "separation") and "method_gap_vs_noise" in report.__all__
    assert model.separation(0.0, -0.5).gap == 0.5


def test_live_runs_in_worker_processes_write_the_serial_records(data_root, tmp_path, one_thread):
    """Chapter 6 shares its live runs among processes: the records (one per run, in grid order) carry the
    metrics that the same runs give one after another in this process."""
    grid = ("mnist", ["random-init"], "smoke", [0, 1])
    serial = report.run_live(*grid, tmp_path / "serial", data_root=data_root, workers=1)
    shared = report.run_live(*grid, tmp_path / "workers", data_root=data_root, workers=2)
    assert [(r["method"], r["seed"]) for r in shared] == [("random-init", 0), ("random-init", 1)]
    assert [r["metrics"] for r in shared] == [r["metrics"] for r in serial]
    assert serial[0]["metrics"] != serial[1]["metrics"]  # two seeds: the comparison can tell runs apart
    assert all(r["path"].startswith(str(tmp_path / "workers")) for r in shared)
