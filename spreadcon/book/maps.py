"""The geometry of recorded encoders, drawn: a coarse class's embeddings, and its cosine along training.

Book helpers, not training code. Both figures read records only (never numbers typed
here): :func:`embedding_maps` the ``embedding_map`` a transfer record carries (one coarse
class's test embeddings on their top two principal axes, :func:`spreadcon.eval.geometry.class_map`),
and :func:`cosine_along_training` the within-class cosine of the training and the test
embeddings at the epochs a run was evaluated at (``metrics_by_epoch``) and at its selected
epoch (``metrics``).

| function | what it draws |
|---|---|
| :func:`embedding_maps` | one panel per method: the class's points, coloured by fine label, on shared axes |
| :func:`cosine_along_training` | within-class cosine against epoch, training and test images, one line per method |
| :func:`along_training` | the numbers behind :func:`cosine_along_training`: per method, per epoch, mean and seed spread |
| :func:`complete_maps` | one seed's maps for every method, the first seed whose maps show each fine label of the class |
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from spreadcon.book.figures import FONT, PAGE_WIDTH

__all__ = ["embedding_maps", "cosine_along_training", "along_training", "complete_maps"]


def complete_maps(records: Sequence[Mapping[str, Any]], methods: Sequence[str],
                  coarse_of_fine: Sequence[int]) -> tuple[int, dict[str, Mapping[str, Any]]] | None:
    """The maps of ``methods`` from one seed: the smallest seed at which every method's record has an
    ``embedding_map`` of one and the same coarse class showing each of its fine labels, or None where
    no seed does.

    Records written before the map sampled every fine label equally could show only a few of a
    class's fine labels; a panel of two colours would mislead, so such seeds are passed over.

    Args:
        records: transfer records of one dataset and preset.
        methods: the panels, in order.
        coarse_of_fine: the coarse label of each fine label (``hierarchy``'s map of the dataset).

    Returns:
        ``(seed, {method: embedding_map})`` or None.

    Example:
        >>> m = {"coarse": 1, "fine": [1, 2, 2], "xy": [[0, 0]] * 3, "scale": 0.1, "explained": 0.5}
        >>> recs = [{"method": "supcon", "seed": 0, "embedding_map": {**m, "fine": [1, 1, 1]}},
        ...         {"method": "supcon", "seed": 3, "embedding_map": m}]
        >>> complete_maps(recs, ["supcon"], [0, 1, 1])[0]
        3
    """
    by = {(r["method"], r["seed"]): r.get("embedding_map") for r in records}
    for seed in sorted({r["seed"] for r in records}):
        maps = {m: by.get((m, seed)) for m in methods}
        if (all(mp and set(mp["fine"]) == {f for f, c in enumerate(coarse_of_fine) if c == mp["coarse"]}
                for mp in maps.values()) and len({mp["coarse"] for mp in maps.values()}) == 1):
            return seed, maps
    return None


def embedding_maps(maps: Mapping[str, Mapping[str, Any]], *, fine_names: Sequence[str] | None = None,
                   labels: Mapping[str, str] | None = None, coarse_name: str | None = None):
    """One panel per method, side by side: the recorded map of one coarse class, coloured by fine label.

    Args:
        maps: ``{method: record["embedding_map"]}``, in panel order. Every map must show the
            same coarse class (a record set from one dataset does).
        fine_names: names of the fine labels, for the legend (default: the ids).
        labels: ``{method: title}`` (default: the method names).
        coarse_name: the class's name, for the legend's title.

    All panels share their axes, so a collapsed class is a dot beside a spread one. Each
    panel's title gives the RMS distance of the class's unit embeddings from their mean
    (``scale``: 0 for one point).

    Raises:
        ValueError: no maps, or maps of different coarse classes.
    """
    import matplotlib.pyplot as plt

    if not maps:
        raise ValueError("embedding_maps needs at least one map")
    classes = {m["coarse"] for m in maps.values()}
    if len(classes) != 1:
        raise ValueError(f"the maps show different coarse classes {sorted(classes)}; draw one class")
    fines = sorted({f for m in maps.values() for f in m["fine"]})
    colour = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(fines)}
    lim = max(max((abs(v) for p in m["xy"] for v in p), default=0.0) for m in maps.values()) * 1.08 or 1.0
    fig, axes = plt.subplots(1, len(maps), figsize=(PAGE_WIDTH, PAGE_WIDTH / len(maps) + 1.3), sharex=True,
                             sharey=True, squeeze=False)
    for ax, (method, m) in zip(axes[0], maps.items()):
        xy = np.asarray(m["xy"], dtype=float).reshape(-1, 2)
        fine = np.asarray(m["fine"])
        for f in fines:
            sel = fine == f
            ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=colour[f], alpha=0.75, linewidths=0)
        ax.set_title(f"{(labels or {}).get(method, method)}\nRMS radius {m['scale']:.2f}", fontsize=FONT)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    names = [str(fine_names[f]) if fine_names is not None else str(f) for f in fines]
    handles = [plt.Line2D([], [], marker="o", ls="", color=colour[f], markersize=6) for f in fines]
    fig.legend(handles, names, loc="lower center", ncol=min(len(fines), 6), fontsize=FONT, frameon=False,
               title=coarse_name, title_fontsize=FONT)
    fig.tight_layout(rect=(0, 0.16 if len(fines) <= 6 else 0.24, 1, 0.97))
    return fig


def along_training(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, np.ndarray]]:
    """Per method: the epochs, and the mean and seed standard deviation of metric ``key`` there.

    Only the seeds that were evaluated along training (records with ``metrics_by_epoch``) are
    read where any were: a seed trained without snapshots would otherwise leave no common epoch.
    The epochs are those of ``metrics_by_epoch`` that every such seed of the method has, then the
    run's selected epoch (``metrics["best_epoch"]``, its seeds' mean; its value from
    ``metrics``). A single seed has standard deviation 0.

    Returns:
        ``{method: {"epoch": (E,), "mean": (E,), "std": (E,)}}`` in the records' method order.
    """
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    out = {}
    for method, runs in by_method.items():
        runs = [r for r in runs if r.get("metrics_by_epoch")] or runs
        common = set.intersection(*(set(r.get("metrics_by_epoch") or {}) for r in runs))
        epochs = sorted(int(e) for e in common if key in runs[0]["metrics_by_epoch"][e])
        rows = [[r["metrics_by_epoch"][str(e)][key] for r in runs] for e in epochs]
        rows.append([r["metrics"][key] for r in runs])
        x = [float(e) for e in epochs] + [float(np.mean([r["metrics"]["best_epoch"] for r in runs]))]
        vals = np.asarray(rows, dtype=float)
        std = vals.std(1, ddof=1) if vals.shape[1] > 1 else np.zeros(len(vals))
        out[method] = {"epoch": np.asarray(x), "mean": vals.mean(1), "std": std}
    return out


def cosine_along_training(panels: Mapping[str, Sequence[Mapping[str, Any]]], *,
                          labels: Mapping[str, str] | None = None):
    """Within-class cosine of the training (solid) and test (dashed) embeddings against epoch.

    One panel per entry of ``panels`` (``{title: records}``, e.g. one per dataset), one colour
    per method, on a shared cosine axis. Points are seed means, bars one seed standard deviation
    (:func:`along_training`); the last point of each line is the selected epoch (the x axis is
    ticked at the evaluated epochs and at the last epoch of training). 1 is a class collapsed to
    one point. ``labels`` also orders the methods.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(PAGE_WIDTH, 3.4), sharey=True, squeeze=False)
    methods: list[str] = [m for m in (labels or {}) if any(r["method"] == m for recs in panels.values()
                                                          for r in recs)]
    lows = []
    for ax, (title, records) in zip(axes[0], panels.items()):
        train = along_training(records, "train_within_class_cosine")
        test = along_training(records, "within_class_cosine")
        for method in train:
            if method not in methods:
                methods.append(method)
            colour = f"C{methods.index(method)}"
            for series, style in ((train, "o-"), (test, "s--")):
                s = series[method]
                ax.errorbar(s["epoch"], s["mean"], yerr=s["std"], fmt=style, color=colour, capsize=2,
                            mfc="white" if series is test else colour)
                lows.append(float((s["mean"] - s["std"]).min()))
        ax.set_xscale("log")
        # ticks at the evaluated epochs and at the end of training (the selected epoch lies before it)
        ticks = sorted({round(float(e)) for s in train.values() for e in s["epoch"][:-1]}
                       | {int(r["provenance"]["config"]["epochs"]) for r in records if "provenance" in r})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax.set_title(title, fontsize=FONT)
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
    axes[0][0].set_ylabel("within-class cosine", fontsize=FONT)
    axes[0][0].set_ylim(max(-1.0, min(lows, default=0.0) - 0.05), 1.03)
    handles = [plt.Line2D([], [], color=f"C{i}", lw=2) for i in range(len(methods))]
    handles += [plt.Line2D([], [], color="0.3", marker="o", ls="-"),
                plt.Line2D([], [], color="0.3", marker="s", ls="--", mfc="white")]
    names = [(labels or {}).get(m, m) for m in methods] + ["training images", "test images"]
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=FONT - 1, frameon=False,
               handlelength=1.6, columnspacing=1.0)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig
