"""Chapter 5's comparisons (:mod:`spreadcon.book.transfer`) against slow, obviously correct references.

The references recompute each gain and its 95% interval straight from the per-seed values
(Welch's t for two arms, a paired t for a change over training) with scipy, for any number
of seeds, so the chapter's statements cannot drift from the verdict rule.
"""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from spreadcon.book import report, transfer


def _recs(preset, dataset, values):
    """Records ``{method: [per-seed accuracy in %]}`` -> record dicts (fractions), seeds 0..n-1."""
    return [{"dataset": dataset, "method": m, "seed": s, "preset": preset, "metrics": {"fine_test_acc": v / 100}}
            for m, vals in values.items() for s, v in enumerate(vals)]


def _welch(a, b):
    """Δ and the half width of its 95% Welch interval, from scratch."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return statistics.fmean(a) - statistics.fmean(b), stats.t.ppf(0.975, df) * math.sqrt(va + vb)


VALUES = {  # five seeds on one dataset, three on the other: nothing may assume 3
    "d5": {"supcon": [50, 51, 49, 52, 50], "spread": [55, 54, 56, 55, 57], "spread-pair": [57, 58, 57, 59, 58],
           "thanos": [57, 57.5, 58, 56, 59]},
    "d3": {"supcon": [10, 11, 12], "spread": [10.5, 11, 12.5], "spread-pair": [11, 12, 12],
           "thanos": [13, 14, 15]},
}


@pytest.fixture
def tabs():
    recs = [r for d, v in VALUES.items() for r in _recs("p", d, v)]
    return {"p": report.summarize(recs, "fine_test_acc")}


def test_every_gain_is_welchs_interval_for_any_seed_count(tabs):
    grid = transfer.Grid("p", ("d5", "d3"), "p")
    gains = transfer.decompose(tabs, [grid])
    assert len(gains) == 2 * len(transfer.CONTRASTS)
    for g in gains:
        a, b = VALUES[g.dataset][g.contrast.method], VALUES[g.dataset][g.contrast.baseline]
        delta, hw = _welch(a, b)
        assert g.verdict.delta == pytest.approx(delta) and g.verdict.half_width == pytest.approx(hw)
        assert g.verdict.n == (len(a), len(b))
        beyond = delta - hw > 0
        assert (g.verdict.status in (report.AGREES, report.SMALLER)) == beyond


def test_missing_cells_are_not_run_and_drop_out_of_the_findings(tabs):
    grid = transfer.Grid("p", ("d5", "absent"), "p")
    gains = transfer.decompose(tabs, [grid])
    assert all(g.verdict.status == report.NOT_RUN for g in gains if g.dataset == "absent")
    text = transfer.width_finding(gains)
    assert "absent" not in text and "in 1 comparisons" not in text and "of 1 comparisons" in text


def test_claims_put_every_thanos_row_beside_the_equal_width_pair(tabs):
    rows = transfer.claims(tabs, [transfer.Grid("p", ("d5", "d3"), "p")])
    for claim, v, evidence, pair in rows:
        assert (pair is not None) == ("Thanos" in claim)
    average = rows[0]
    assert average[1].coverage == (0, 5)  # d5/d3 are none of the paper's datasets: nothing covered
    assert average[1].status == report.NOT_RUN


def test_the_average_states_its_coverage():
    recs = _recs("p", "mnist", VALUES["d5"]) + _recs("p", "cifar10", VALUES["d3"])
    tab = {"p": report.summarize(recs, "fine_test_acc")}
    rows = transfer.claims(tab, [transfer.Grid("p", ("mnist", "cifar10"), "p")])
    v = rows[0][1]
    assert v.coverage == (2, 5) and v.status in (report.coverage_status(2, 5), report.INCONCLUSIVE)
    assert "reproduc" not in v.status
    # the equal-width column is the same average against spread-pair, over the covered datasets
    ref = statistics.fmean(statistics.fmean(VALUES[d]["thanos"]) - statistics.fmean(VALUES[d]["spread-pair"])
                           for d in ("d5", "d3"))
    assert rows[0][3].delta == pytest.approx(ref)


def test_length_answers_are_paired_by_seed():
    lift0, lift1 = {0: 1.0, 1: 2.0, 2: 1.5, 3: 0.5}, {0: 6.0, 1: 5.0, 2: 7.0, 3: 6.5}
    recs = []
    for s in lift0:
        recs.append({"dataset": "d", "method": "supcon", "seed": s,
                     "metrics_by_epoch": {"1": {"fine_test_acc": .5}, "40": {"fine_test_acc": .6}}})
        recs.append({"dataset": "d", "method": "spread", "seed": s,
                     "metrics_by_epoch": {"1": {"fine_test_acc": .5 + lift0[s] / 100},
                                          "40": {"fine_test_acc": .6 + lift1[s] / 100}}})
    (a,) = transfer.length_answers(recs, ["d"], ["spread"])
    diffs = [lift1[s] - lift0[s] for s in sorted(lift0)]
    hw = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    assert a.change.delta == pytest.approx(statistics.fmean(diffs)) and a.change.half_width == pytest.approx(hw)
    assert a.epochs == (1, 40) and a.word == "grows"


def test_the_figure_draws_one_marker_per_grid_and_contrast(tabs):
    import matplotlib
    matplotlib.use("Agg")
    grids = [transfer.Grid("p", ("d5", "d3"), "five"), transfer.Grid("q", ("d5",), "other")]
    tabs = {**tabs, "q": tabs["p"]}
    fig = transfer.plot_decomposition(transfer.decompose(tabs, grids))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["d5", "d3"]
    assert len(axes[0].containers) == 2 * len(transfer.CONTRASTS) and len(axes[1].containers) == len(transfer.CONTRASTS)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["five", "other"]


def test_headline_rows_can_be_named_by_their_grids_label():
    """by_label: one row per grid named by its label (two maps of one dataset), cells and seeds as before."""
    t = {"cpu": {("tinyimagenet", "supcon"): report.summary_of([20.0, 22.0], [0, 1])},
         "cpu.set.hierarchy-official": {("tinyimagenet", "supcon"): report.summary_of([30.0], [0])}}
    grids = [transfer.Grid("cpu", ("tinyimagenet",), "WordNet map"),
             transfer.Grid("cpu.set.hierarchy-official", ("tinyimagenet",), "official map")]
    lines = transfer.headline_markdown(t, grids, ["supcon", "thanos"], by_label=True).splitlines()
    assert lines[0].startswith("| grid |")
    assert lines[2] == "| WordNet map | 21.0 ± 1.4 | – | 2 |" and lines[3] == "| official map | 30.0 | – | 1 |"
