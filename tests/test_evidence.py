"""spreadcon.book.evidence: the records chapters 4-6 read, and their figure hand-off."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from spreadcon.book import evidence  # noqa: E402
from spreadcon.runs.records import make_record, write_record  # noqa: E402


def _write(tmp_path, seed, extra=None):
    rec = make_record(dataset="mnist", method="spread", preset="smoke", seed=seed, task="transfer",
                      metrics={"fine_test_acc": 0.5, "coarse_test_acc": 0.9, "spread": 0.1},
                      config={"alpha": 0.5}, started_at="2026-01-01T00:00:00", wall_time_s=1.0,
                      git="0" * 40, extra=extra)
    return write_record(rec, tmp_path)


def test_committed_leaves_out_alpha_sweeps(tmp_path):
    _write(tmp_path, 0)
    _write(tmp_path, 1)
    _write(tmp_path, 2, extra={"alpha_override": 0.9})
    seeds = sorted(r["seed"] for r in evidence.committed(tmp_path, dataset="mnist"))
    assert seeds == [0, 1]
    assert evidence.committed(tmp_path, dataset="cifar10") == []


def test_every_headline_method_has_a_name_and_is_a_method_of_the_package():
    from spreadcon.methods import METHODS

    assert set(evidence.NAMES) == set(evidence.HEADLINE_METHODS) < set(METHODS)
    assert len(evidence.HEADLINE_METHODS) == 5
    assert not hasattr(evidence, "METHODS")  # one METHODS in the package: spreadcon.methods's, every method


def test_show_closes_the_figure():
    fig = plt.figure()
    evidence.show(fig, "test_key")
    assert not plt.fignum_exists(fig.number)


def test_tidy_bars_marks_empty_slots_and_moves_the_legend_off_the_bars():
    from spreadcon.book import report

    recs = [{"dataset": "mnist", "method": m, "seed": s, "metrics": {"acc": 0.9}}
            for m in ("supcon", "thanos") for s in (0, 1)]
    table = report.summarize(recs, "acc")
    fig, ax = plt.subplots()
    report.plot_bars(table, ["mnist", "waterbirds", "isic"], ["supcon", "thanos"], ax=ax)
    assert sum(t.get_rotation() == 90 for t in ax.texts) == 2      # what plot_bars draws
    evidence.tidy_bars(ax)
    assert [(t.get_text(), t.get_rotation(), t.get_position()[0]) for t in ax.texts] == [
        ("not run yet", 0.0, 1), ("not run yet", 0.0, 2)]
    assert all(t.get_fontsize() >= 10 for t in ax.texts)
    hatched = [p for p in ax.patches if p.get_hatch() == "//"]
    assert [p.get_x() for p in hatched] == [0.6, 1.6]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["SupCon", "Thanos"]
    fig.canvas.draw()
    # The legend sits right of the axes: it overlaps no bar.
    assert legend.get_window_extent().x0 > ax.get_window_extent().x1
    evidence.tidy_bars(ax, legend=False)
    assert ax.get_legend() is None
    plt.close(fig)


def test_scale_rows_state_the_cpu_preset_against_the_paper():
    from spreadcon.book.evidence import scale_rows

    rows = scale_rows("cpu", ["cifar10"]).splitlines()
    assert rows[2] == "| cifar10, cpu | 3,000 (300) | 5 | cnn 0.26M | L-BFGS, fixed | 15,000 (1,800x fewer) |"
    assert rows[3] == "| cifar10, paper | 45,000 (4,500) | 600 | vit 3.72M | AdamW 100 ep., augmented | 27,000,000 |"
