"""The recorded-geometry figures: the numbers they draw are the records' numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from spreadcon.book.maps import along_training, cosine_along_training, embedding_maps


def _record(method, seed, final, by_epoch, best=80.0):
    return {"method": method, "seed": seed,
            "metrics": {"within_class_cosine": final, "train_within_class_cosine": final + 0.005, "best_epoch": best},
            "metrics_by_epoch": {str(e): {"within_class_cosine": v, "train_within_class_cosine": v + 0.005}
                                 for e, v in by_epoch.items()}}


def test_along_training_is_the_seed_mean_and_spread_at_the_common_epochs_then_the_selected_one():
    recs = [_record("supcon", 0, 0.95, {5: 0.98, 20: 0.97, 50: 0.96}, best=80.0),
            _record("supcon", 1, 0.93, {5: 0.96, 20: 0.95}, best=90.0),       # no epoch-50 snapshot
            _record("spread", 0, 0.50, {5: 0.70, 20: 0.60, 50: 0.55})]
    got = along_training(recs, "within_class_cosine")
    assert list(got) == ["supcon", "spread"]
    s = got["supcon"]
    assert s["epoch"].tolist() == [5.0, 20.0, 85.0]
    assert s["mean"] == pytest.approx([0.97, 0.96, 0.94])
    assert s["std"] == pytest.approx([np.std([0.98, 0.96], ddof=1), np.std([0.97, 0.95], ddof=1),
                                      np.std([0.95, 0.93], ddof=1)])
    assert got["spread"]["std"].tolist() == [0.0] * 4 and got["spread"]["mean"][-1] == 0.5
    fig = cosine_along_training({"MNIST": recs}, labels={"supcon": "SupCon"})
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]
    same = lambda ln, y: len(ln.get_ydata()) == len(y) and np.allclose(ln.get_ydata(), y)  # noqa: E731
    assert not any(same(ln, [0.98, 0.97, 0.95]) for ln in lines)  # seed means are drawn, not seed 0
    assert any(same(ln, [0.97, 0.96, 0.94]) for ln in lines)      # test-image line of SupCon
    assert any(same(ln, [0.975, 0.965, 0.945]) for ln in lines)   # its training-image line


def _map(coarse, fine, xy, scale=0.1):
    return {"coarse": coarse, "fine": fine, "xy": xy, "explained": 0.5, "scale": scale}


def test_along_training_reads_only_the_seeds_evaluated_along_training():
    """Seeds trained without snapshots (no metrics_by_epoch) join no line: the others' epochs stay."""
    recs = [_record("supcon", 0, 0.95, {5: 0.98, 20: 0.97}, best=80.0),
            _record("supcon", 1, 0.93, {5: 0.96, 20: 0.95}, best=90.0),
            {**_record("supcon", 3, 0.10, {}), "metrics_by_epoch": {}},
            {k: v for k, v in _record("supcon", 4, 0.10, {}).items() if k != "metrics_by_epoch"}]
    s = along_training(recs, "within_class_cosine")["supcon"]
    assert s["epoch"].tolist() == [5.0, 20.0, 85.0] and s["mean"] == pytest.approx([0.97, 0.96, 0.94])
    only_final = along_training(recs[2:], "within_class_cosine")["supcon"]  # no seed has snapshots
    assert only_final["epoch"].tolist() == [80.0] and only_final["mean"] == pytest.approx([0.10])


def test_embedding_maps_share_axes_and_draw_every_point_by_fine_label():
    maps = {"supcon": _map(0, [0, 1, 1], [[0.0, 0.0], [0.01, 0.0], [0.0, 0.01]], 0.01),
            "spread": _map(0, [0, 1, 2], [[0.5, 0.0], [-0.5, 0.2], [0.0, -0.4]], 0.4)}
    fig = embedding_maps(maps, fine_names=["zero", "one", "two"], labels={"spread": "SupCon + cNCE"})
    a, b = fig.axes[:2]
    assert a.get_xlim() == b.get_xlim() and a.get_xlim()[1] >= 0.5
    assert "SupCon + cNCE" in b.get_title() and "0.40" in b.get_title()
    drawn = sum(len(c.get_offsets()) for c in b.collections)
    assert drawn == 3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["zero", "one", "two"]


def test_embedding_maps_refuse_maps_of_different_classes():
    with pytest.raises(ValueError, match="different coarse classes"):
        embedding_maps({"a": _map(0, [0], [[0.0, 0.0]]), "b": _map(1, [0], [[0.0, 0.0]])})
    with pytest.raises(ValueError, match="at least one"):
        embedding_maps({})
