"""What the experiment chapters (4-6) share: method names, metric labels,
the committed records they read and how they hand a figure to the page.

Example:
    >>> NAMES["spread"], SPREAD_METRIC
    ('SupCon + cNCE', 'spread')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spreadcon.book.markup import escape_md

#: The five methods chapters 5 and 6 compare in their headline tables and figures, in table order
#: (every method the package can train is in :data:`spreadcon.methods.METHODS`).
HEADLINE_METHODS = ["ce", "supcon", "spread", "autoencoder", "thanos"]
#: Their names on a page.
NAMES = {"ce": "CE", "supcon": "SupCon", "spread": "SupCon + cNCE", "autoencoder": "autoencoder", "thanos": "Thanos"}
#: Record metric: 1 - ||class mean of unit embeddings||^2 on the test set (0 = collapsed).
SPREAD_METRIC = "spread"
#: Its axis label.
SPREAD_LABEL = "within-class spread 1 − ‖μ‖² (unitless)"
#: Record metric: adjusted mutual information of the inferred subgroups with the true ones.
SUBGROUP_METRIC = "inferred_group_ami"


def committed(results_root: str | Path, **match: Any) -> list[dict[str, Any]]:
    """The records under ``results_root`` that match ``match`` and ran at the preset's alpha.

    A record written with a per-run alpha (``alpha_override``, the sweeps) is
    left out, so a method's row in a table is always its preset setting. A
    damaged or duplicate record file is left out too, and named in one line
    (:func:`spreadcon.runs.records.load_records`).

    Args:
        results_root: a folder of result records (``results/``).
        **match: record fields to match, e.g. ``dataset="mnist", preset="cpu"``.

    Returns:
        :class:`spreadcon.runs.records.Records`: the records, and in ``.problems`` the files left out.
    """
    from spreadcon.runs.records import Records, load_records

    loaded = load_records(results_root, **match)
    return Records([r for r in loaded if r.get("alpha_override") is None], loaded.problems)


def show(fig, key: str) -> None:
    """Glue ``fig`` under ``key`` for a captioned ``{glue:figure}``, and close it.

    Closing keeps the inline backend from drawing the figure a second time
    where the cell ran.
    """
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(key, fig, display=False)
    plt.close(fig)


#: What :func:`spreadcon.book.report.plot_bars` writes in a group without any bar.
NOT_RUN = "not run yet"


def tidy_bars(ax, *, legend: bool = True) -> None:
    """Make an axis drawn by :func:`spreadcon.book.report.plot_bars` read well on a page.

    * A group without records gets a hatched box across its slot with a
      horizontal "not run yet" at reading size, instead of a thin rotated grey
      label.
    * The legend moves outside the axes, to the right, so it covers no bar,
      and method keys become their names (:data:`NAMES`). ``legend=False``
      drops it (e.g. on the second of two stacked axes).
    * The value axis is zoomed to the data (:func:`zoom_to_data`), so that a
      few points between methods are visible instead of lost on a 0-100 axis.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> from spreadcon.book import report
        >>> table = report.summarize([{"dataset": "mnist", "method": "thanos", "seed": 0,
        ...                            "metrics": {"acc": 0.5}}], "acc")
        >>> ax = report.plot_bars(table, ["mnist", "cifar10"], ["thanos"])
        >>> tidy_bars(ax)
        >>> [t.get_text() for t in ax.texts], [t.get_text() for t in ax.get_legend().get_texts()]
        (['not run yet'], ['Thanos'])
    """
    from matplotlib.patches import Rectangle

    for text in list(ax.texts):
        if text.get_text() != NOT_RUN:
            continue
        x = text.get_position()[0]
        text.remove()
        transform = ax.get_xaxis_transform()   # x in data units, y in axes fraction
        ax.add_patch(Rectangle((x - 0.4, 0.0), 0.8, 1.0, transform=transform, facecolor="none",
                               edgecolor="0.75", hatch="//", lw=0.8))
        ax.text(x, 0.5, NOT_RUN, transform=transform, ha="center", va="center", fontsize=10, color="0.25",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 2})
    zoom_to_data(ax)
    old = ax.get_legend()
    if old is not None:
        old.remove()
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles, [NAMES.get(label, label) for label in labels], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)


def zoom_to_data(ax, *, margin: float = 0.15, low: float = 0.0, high: float = 100.0) -> tuple[float, float]:
    """Set the y axis to the bars' tops, their error bars and the horizontal lines drawn (a floor,
    the paper's ticks), with ``margin`` of that range on each side, clipped to [low, high].

    Returns the limits set (the axis is left alone when nothing is drawn).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> _, ax = plt.subplots()
        >>> _ = ax.bar([0, 1], [40.0, 45.0], yerr=[1.0, 1.0])
        >>> [round(v, 2) for v in zoom_to_data(ax)]
        [37.95, 47.05]
    """
    values = [p.get_height() for p in ax.patches if getattr(p, "get_height", None) and p.get_height() > 0
              and p.get_transform() == ax.transData]
    for line in ax.get_lines():
        y = [float(v) for v in line.get_ydata() if v == v]
        if y and line.get_transform() in (ax.transData, ax.get_yaxis_transform()):
            values += y
    for coll in ax.collections:  # error bars
        for seg in getattr(coll, "get_segments", lambda: [])():
            values += [float(v) for v in seg[:, 1]]
    if not values:
        return ax.get_ylim()
    lo, hi = min(values), max(values)
    pad = margin * max(hi - lo, 1.0)
    limits = (max(low, lo - pad), min(high, hi + pad))
    ax.set_ylim(*limits)
    return limits


#: Fine classes per dataset, for "images per class" in the scale tables.
N_FINE = {"mnist": 10, "cifar10": 10, "cifar100": 100, "cifar100u": 100, "tinyimagenet": 200,
          "waterbirds": 4, "celeba": 4, "isic": 4, "mnist-cifar": 4, "cifar-patch": 4}


def scale_rows(preset: str, datasets: list[str], reference: str = "paper") -> str:
    """A Markdown table: per dataset, what a run of ``preset`` trains on beside ``reference``.

    Columns: training images, images per fine class (per group on the
    robustness datasets), epochs, encoder and its parameter count, probe
    ("fixed": on fixed embeddings; "augmented": trained on augmented images),
    images seen in training (images x epochs), and how many times fewer that
    is than the reference's. Sizes of a full split come from :data:`spreadcon.runs.cost.DATASET_SIZES`.

    Example:
        >>> print(scale_rows("cpu", ["mnist"]).splitlines()[2])  # doctest: +ELLIPSIS
        | mnist, cpu | 4,000 (400) | 5 | cnn 0.26M | L-BFGS, fixed | 20,000 (1,620x fewer) |
    """
    import torch

    from spreadcon.models import build_encoder
    from spreadcon.presets import resolve
    from spreadcon.runs.cost import DATASET_SIZES

    def params(cfg, dataset):
        c, h, w = DATASET_SIZES[dataset].image_shape
        side = cfg.image_size or h
        with torch.device("meta"):  # shapes only: no memory and no initialisation (seconds for a ViT)
            enc = build_encoder(cfg.encoder, (c, side, side))
        return sum(p.numel() for p in enc.parameters()) / 1e6

    def probe(cfg):
        return "L-BFGS, fixed" if cfg.probe == "lbfgs" else f"AdamW {cfg.probe_epochs} ep., augmented"

    rows = ["| dataset, preset | images (per class) | epochs | encoder | probe | seen (fewer) |",
            "|---|---|---|---|---|---|"]
    for d in datasets:
        cells = {}
        for p in (preset, reference):
            cfg = resolve(p, d)
            n = min(cfg.train_size, DATASET_SIZES[d].train) if cfg.train_size else DATASET_SIZES[d].train
            cells[p] = (n, cfg, n * cfg.epochs)
        for p, (n, cfg, seen) in cells.items():
            ratio = "" if p == reference else f" ({cells[reference][2] / seen:,.0f}x fewer)"
            rows.append(f"| {escape_md(d)}, {escape_md(p)} | {n:,} ({n // N_FINE.get(d, 1):,}) | {cfg.epochs} | "
                        f"{escape_md(cfg.encoder)} "
                        f"{params(cfg, d):.2f}M | {probe(cfg)} | {seen:,}{ratio} |")
    return "\n".join(rows)
