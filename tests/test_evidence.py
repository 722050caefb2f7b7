"""spreadcon.evidence: the records chapters 4-6 read, and their figure hand-off."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from spreadcon import evidence  # noqa: E402
from spreadcon.records import make_record, write_record  # noqa: E402


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


def test_every_method_has_a_name():
    assert set(evidence.NAMES) == set(evidence.METHODS)


def test_show_closes_the_figure():
    fig = plt.figure()
    evidence.show(fig, "test_key")
    assert not plt.fignum_exists(fig.number)
