"""Tables and verdicts from records: checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

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


@pytest.mark.parametrize("a, b, paper, status", [
    ([0.60, 0.62], [0.50, 0.52], 11.1, report.REPRODUCED),      # +10, se 1.0, >= 5.55
    ([0.53, 0.55], [0.50, 0.52], 11.1, report.PARTIAL),         # +3 - 2 se > 0 but < 11.1 / 2
    ([0.40, 0.80], [0.50, 0.52], 11.1, report.INCONCLUSIVE),    # +9 but se 14.1: the interval holds 0
    ([0.70], [0.50], 11.1, report.INCONCLUSIVE),                # one seed: noise unknown
    ([0.50, 0.51], [0.50, 0.52], 4.7, report.INCONCLUSIVE),     # -0.5 within noise
    ([0.50, 0.52], [0.50, 0.52], 4.7, report.INCONCLUSIVE),     # exactly 0
    ([0.40, 0.41], [0.50, 0.52], 4.7, report.CONTRADICTED),     # -10.5 beyond noise
])
def test_verdict_rule(a, b, paper, status):
    recs = [rec("d", "A", i, v) for i, v in enumerate(a)] + [rec("d", "B", i, v) for i, v in enumerate(b)]
    t = report.summarize(recs, "fine_test_acc")
    v = report.verdict(t["d", "A"], t["d", "B"], paper)
    assert v.status == status
    assert v.delta == pytest.approx(100 * (sum(a) / len(a) - sum(b) / len(b)))


def test_verdict_not_run_and_bad_claim():
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
    se1 = math.sqrt(2 * (math.sqrt(0.5) / math.sqrt(2)) ** 2)   # both sides std 0.707, n 2
    se2 = math.sqrt((math.sqrt(2.0) / math.sqrt(2)) ** 2)       # A std 1.414, B std 0
    assert v.se == pytest.approx(math.sqrt(se1 ** 2 + se2 ** 2) / 2)
    assert v.status == report.REPRODUCED
    none, covered = report.average_lift(t, "A", "B", ["d3"], 11.1)
    assert none.status == report.NOT_RUN and covered == []


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
