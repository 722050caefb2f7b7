"""Chapter 5's comparisons: the grids it reads, what Thanos's gain is made of, and its claims.

A :class:`Grid` is one preset's records on some datasets; the chapter lists its
grids in one place, so that another preset's records join every table, figure
and claim by adding one line. Every statement goes through
:func:`spreadcon.book.report.verdict` (the book's one rule); nothing here
assumes a number of seeds.

| function | what it gives |
|---|---|
| :func:`tables` | each grid's fine-accuracy table (mean ± std over whatever seeds exist) |
| :func:`decompose` | the gains (Thanos over SupCon, and its parts), each with its verdict |
| :func:`plot_decomposition` | those gains with their 95% intervals: one panel per dataset, one marker per grid |
| :func:`headline_markdown` | one table: a row per (grid, dataset), a column per method and control |
| :func:`claims` | the paper's claims against each grid, every Thanos row beside its equal-width pair |
| :func:`length_answers` | the training-length study: does each lift over SupCon change from the first to the last epoch |

Example:
    >>> recs = [{"dataset": "d", "method": m, "seed": s, "preset": "p", "metrics": {"fine_test_acc": a + s / 100}}
    ...         for s in (0, 1, 2) for m, a in (("supcon", .50), ("spread", .55), ("spread-pair", .58),
    ...                                           ("thanos", .57))]
    >>> g = Grid("p", ("d",), "a grid")
    >>> rows = decompose({"p": report.summarize(recs, "fine_test_acc")}, [g])
    >>> [(r.contrast.key, round(r.verdict.delta, 1)) for r in rows]
    [('thanos', 7.0), ('cnce', 5.0), ('pair', 8.0), ('ae', -1.0)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

from spreadcon.book import report
from spreadcon.book.evidence import HEADLINE_METHODS, NAMES, committed
from spreadcon.book.markup import escape_md

__all__ = ["Grid", "Contrast", "CONTRASTS", "SHOWN", "SHOWN_NAMES", "Gain", "tables", "decompose",
           "plot_decomposition", "headline_markdown", "claims", "cosines", "length_answers", "LengthAnswer",
           "cosine_trends", "CosineTrend", "width_finding", "share_finding", "headline_finding", "cosine_finding"]


@dataclass(frozen=True)
class Grid:
    """One preset's records on some datasets: a column group of the chapter's comparison.

    Attributes:
        preset: the records' preset (``cpu``, ``cpu-long``, ``collapse``, ``paper``, ...).
        datasets: the datasets it is read on, in display order.
        label: a few words for legends (what the preset is).
    """

    preset: str
    datasets: tuple[str, ...]
    label: str


class Contrast(NamedTuple):
    """A gain ``method − baseline`` the chapter reads, and what it means."""

    key: str
    method: str
    baseline: str
    says: str


#: What Thanos's gain over SupCon is made of, in figure order (top to bottom).
CONTRASTS: tuple[Contrast, ...] = (
    Contrast("thanos", "thanos", "supcon", "Thanos − SupCon (the paper's headline)"),
    Contrast("cnce", "spread", "supcon", "SupCon + cNCE − SupCon (the cNCE term)"),
    Contrast("pair", "spread-pair", "supcon", "SupCon + cNCE pair − SupCon (cNCE and a 2nd network)"),
    Contrast("ae", "thanos", "spread-pair", "Thanos − SupCon + cNCE pair (the autoencoder, at equal width)"),
)

#: The rows of the headline table: the floor, the methods and the width-matched controls.
SHOWN = ("random-init", "ce", "supcon", "supcon-pair", "spread", "spread-pair", "autoencoder", "thanos")
SHOWN_NAMES = {**NAMES, "random-init": "floor (untrained)", "supcon-pair": "SupCon pair",
               "spread-pair": "SupCon + cNCE pair", "autoencoder": "auto\u00adencoder"}  # a soft hyphen: the column may wrap


def tables(results_root: str | Path, grids: Sequence[Grid], metric: str = "fine_test_acc",
           percent: bool = True) -> dict[str, dict[tuple, report.Summary]]:
    """``{preset: {(dataset, method): Summary}}`` of ``metric`` over each grid's committed transfer records."""
    out = {}
    for g in grids:
        recs = [r for r in committed(results_root, task="transfer", preset=g.preset) if r["dataset"] in g.datasets]
        out[g.preset] = report.summarize(recs, metric, percent=percent)
    return out


class Gain(NamedTuple):
    """One contrast on one dataset of one grid, judged by the verdict rule."""

    grid: Grid
    dataset: str
    contrast: Contrast
    verdict: report.Verdict


def decompose(tabs: Mapping[str, Mapping[tuple, report.Summary]], grids: Sequence[Grid],
              contrasts: Sequence[Contrast] = CONTRASTS) -> list[Gain]:
    """Every contrast on every dataset of every grid (``NOT_RUN`` where a side has no records)."""
    return [Gain(g, d, c, report.verdict(tabs[g.preset].get((d, c.method)), tabs[g.preset].get((d, c.baseline))))
            for g in grids for d in g.datasets for c in contrasts]


def plot_decomposition(gains: Sequence[Gain], *, width: float = 6.5):
    """Each gain with its 95% interval (Δ ± t·se): a panel per dataset, a row per contrast, a marker per grid.

    Each panel's x axis is zoomed to its own intervals (TinyImageNet's gains are a few points, CIFAR-10's
    several); a vertical line marks 0. A gain with one seed on a side is drawn without an interval.
    """
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(x.dataset for x in gains))
    grids = list(dict.fromkeys(x.grid for x in gains))
    contrasts = list(dict.fromkeys(x.contrast for x in gains))
    fig, axes = plt.subplots(1, len(datasets), figsize=(width, 1.0 + 0.62 * len(contrasts) * max(1, len(grids)) ** 0.5),
                             sharey=True, squeeze=False)
    markers, colours = "osD^v", ["0.15", "C0", "C3", "C2", "C1"]
    step = 0.6 / max(1, len(grids))
    for ax, d in zip(axes[0], datasets):
        for j, g in enumerate(grids):
            for i, c in enumerate(contrasts):
                v = next((x.verdict for x in gains if x.dataset == d and x.grid == g and x.contrast == c), None)
                if v is None or v.status == report.NOT_RUN:
                    continue
                y = i + (j - (len(grids) - 1) / 2) * step
                hw = 0.0 if math.isnan(v.half_width) else v.half_width
                ax.errorbar(v.delta, y, xerr=hw, fmt=markers[j % 5], color=colours[j % 5], ms=5, capsize=2, lw=1.2,
                            label=g.label)
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_title(d, fontsize=10)
        ax.set_xlabel("gain (points)", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.margins(x=0.12)
    axes[0][0].set_yticks(range(len(contrasts)), [_wrap(c.says) for c in contrasts], fontsize=9)
    axes[0][0].invert_yaxis()
    handles, labels = {}, []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(3, len(handles)), frameon=False,
               fontsize=9, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08 + 0.04 * (len(handles) > 3), 1, 1))
    return fig


def _wrap(text: str, width: int = 26) -> str:
    """``text`` broken into lines of at most about ``width`` characters (for tick labels)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def headline_markdown(tabs: Mapping[str, Mapping[tuple, report.Summary]], grids: Sequence[Grid],
                      methods: Sequence[str] = SHOWN, *, by_label: bool = False) -> str:
    """One Markdown table: a row per (grid, dataset), a column per method (mean ± std over seeds) and
    the row's seed counts (one number when every cell has the same, else the range). ``by_label``
    names each row by its grid's label instead of ``dataset (preset)`` (with the dataset where the
    grid has several).

    Example:
        >>> t = {"p": {("d", "supcon"): report.summary_of([50.0, 52.0], [0, 1])}}
        >>> print(headline_markdown(t, [Grid("p", ("d",), "")], ["supcon", "thanos"]).splitlines()[2])
        | d (p) | 51.0 ± 1.4 | – | 2 |
    """
    head = ["grid" if by_label else "dataset (preset)", *(SHOWN_NAMES.get(m, m) for m in methods), "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in grids:
        for d in g.datasets:
            cells = [tabs[g.preset].get((d, m)) for m in methods]
            ns = sorted({c.n for c in cells if c is not None})
            seeds = "–" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
            name = (f"{escape_md(g.label)}" + (f" ({escape_md(d)})" if len(g.datasets) > 1 else "")
                    if by_label else f"{escape_md(d)} ({escape_md(g.preset)})")
            lines.append(f"| {name} | "
                         + " | ".join(_cell(c) for c in cells) + f" | {seeds} |")
    return "\n".join(lines)


def _cell(s: report.Summary | None) -> str:
    """``45.1 ± 0.3``, ``45.1`` for one seed, or ``–`` without records."""
    if s is None:
        return "–"
    return f"{s.mean:.1f}" if s.n == 1 else f"{s.mean:.1f} ± {s.std:.1f}"


def claims(tabs: Mapping[str, Mapping[tuple, report.Summary]], grids: Sequence[Grid]) -> list[tuple]:
    """The paper's claims against each grid: rows ``(claim, verdict, evidence, equal_width)``.

    ``equal_width`` is the same comparison against the width-matched SupCon + cNCE pair
    (Thanos − ``spread-pair``: does the autoencoder add beyond a second network?) on every row
    about Thanos, else None. The average over the paper's datasets carries its coverage
    (m of the paper's 5: at most "direction agrees (m of 5 datasets)"); it is repeated without
    the datasets on which the headline methods do not separate beyond seed noise.
    """
    P, K = report.PAPER_CIFAR10_FINE_ACC, len(report.PAPER_TRANSFER_DATASETS)
    rows = []
    for g in grids:
        tab = tabs[g.preset]
        informative = report.average_lift_both_ways(tab, "thanos", "supcon", report.PAPER_TRANSFER_DATASETS,
                                                    report.PAPER_TRANSFER_LIFT, HEADLINE_METHODS)
        dropped = informative["uninformative"][0]
        sets = [("", list(report.PAPER_TRANSFER_DATASETS))]
        if dropped:
            sets.append((f" (without {', '.join(dropped)}: all methods within seed noise there)",
                         [d for d in report.PAPER_TRANSFER_DATASETS if d not in dropped]))
        for note, ds in sets:
            v, covered = report.average_lift(tab, "thanos", "supcon", ds, report.PAPER_TRANSFER_LIFT,
                                             claimed=report.PAPER_TRANSFER_DATASETS)
            pair, _ = report.average_lift(tab, "thanos", "spread-pair", covered, None, claimed=covered)
            ev = (f"`{g.preset}`, mean over {len(covered)} of the paper's {K} datasets ({', '.join(covered)})"
                  if covered else "no records")
            rows.append((f"Thanos beats SupCon by {report.PAPER_TRANSFER_LIFT} points on average over {K} "
                         f"datasets{note}", v, ev, pair))
        cell = lambda m: tab.get(("cifar10", m))  # noqa: E731
        ev = f"`{g.preset}`, CIFAR-10" if cell("supcon") else "no records"
        for m in ("spread", "autoencoder", "thanos"):
            rows.append((f"CIFAR-10: {NAMES[m]} beats SupCon ({P[m]} vs {P['supcon']})",
                         report.verdict(cell(m), cell("supcon"), P[m] - P["supcon"]), ev,
                         report.verdict(cell("thanos"), cell("spread-pair")) if m == "thanos" else None))
        rows.append((f"CIFAR-10: Thanos beats SupCon + cNCE ({P['thanos']} vs {P['spread']})",
                     report.verdict(cell("thanos"), cell("spread"), P["thanos"] - P["spread"]), ev,
                     report.verdict(cell("thanos"), cell("spread-pair"))))
    return rows


def cosines(results_root: str | Path, grids: Sequence[Grid], method: str = "supcon") -> list[tuple]:
    """``(grid, dataset, split, Summary)`` of ``method``'s within-class cosine (unitless) where recorded.

    ``split`` is ``"test"`` (every record) or ``"train"`` (records that also measured the training
    embeddings, where the theorems about minimisers speak).
    """
    out = []
    for split, metric in (("train", "train_within_class_cosine"), ("test", "within_class_cosine")):
        tabs = tables(results_root, grids, metric, percent=False)
        out += [(g, d, split, tabs[g.preset][d, method]) for g in grids for d in g.datasets
                if (d, method) in tabs[g.preset]]
    return out


class LengthAnswer(NamedTuple):
    """How one method's lift over SupCon changes over a training-length study, on one dataset."""

    dataset: str
    method: str
    first: report.Summary
    last: report.Summary
    epochs: tuple[int, int]
    change: report.Verdict  # last − first, paired by seed
    word: str               # "grows", "shrinks" or "does not change beyond seed noise"


def length_answers(records: Sequence[dict], datasets: Sequence[str], methods: Sequence[str]) -> list[LengthAnswer]:
    """For each dataset and method: its lift over SupCon after the first and the last evaluated epoch
    (``metrics_by_epoch``), and the change between them paired by seed (:func:`report.paired_verdict`)."""
    out = []
    for d in datasets:
        for m in methods:
            lift = report.lift_by_epoch(records, d, m, "supcon")
            if len(lift) < 2:
                continue
            e0, e1 = min(lift), max(lift)
            seeds = [s for s in lift[e1].seeds if s in lift[e0].seeds]
            diffs = [lift[e1].values[lift[e1].seeds.index(s)] - lift[e0].values[lift[e0].seeds.index(s)]
                     for s in seeds]
            if not diffs:
                continue
            v = report.paired_verdict(report.summary_of(diffs, seeds))
            word = {report.AGREES: "grows", report.OPPOSITE: "shrinks"}.get(v.status,
                                                                              "does not change beyond seed noise")
            out.append(LengthAnswer(d, m, lift[e0], lift[e1], (e0, e1), v, word))
    return out


# --------------------------------------------------------------------------- the chapter's findings, in words

def _pm(v: report.Verdict) -> str:
    """``+2.9 ± 2.8`` (Δ ± t·se, points), or ``+2.9 (one seed)``."""
    return f"{v.delta:+.1f}" + (" (one seed)" if math.isnan(v.half_width) else f" ± {v.half_width:.1f}")


def _where(g: Gain) -> str:
    return f"{escape_md(g.dataset)} ({escape_md(g.grid.preset)})"


def width_finding(gains: Sequence[Gain]) -> str:
    """What the equal-width pair says about the autoencoder, over every (grid, dataset) with records.

    Example:
        >>> v = report.judge(-0.5, 0.25, 4.0)
        >>> print(width_finding([Gain(Grid("cpu", ("cifar10",), ""), "cifar10", CONTRASTS[3], v)]))
        Against the equal-width SupCon + cNCE pair, Thanos is -0.5 ± 0.7 points on cifar10 (cpu): inconclusive in 1 of 1 comparisons, beyond noise above the pair in 0, below it in 0.
    """
    ae = [g for g in gains if g.contrast.key == "ae" and g.verdict.status != report.NOT_RUN]
    if not ae:
        return "No grid has records of both Thanos and the SupCon + cNCE pair yet."
    above = sum(g.verdict.status in (report.AGREES, report.SMALLER) for g in ae)
    below = sum(g.verdict.status == report.OPPOSITE for g in ae)
    return ("Against the equal-width SupCon + cNCE pair, Thanos is "
            + "; ".join(f"{_pm(g.verdict)} points on {_where(g)}" for g in ae)
            + f": inconclusive in {len(ae) - above - below} of {len(ae)} comparisons, beyond noise above the pair "
              f"in {above}, below it in {below}.")


def share_finding(tabs: Mapping[str, Mapping[tuple, report.Summary]], grids: Sequence[Grid]) -> str:
    """How many of Thanos's points over SupCon a second SupCon + cNCE network gets without the autoencoder.

    Example:
        >>> s = lambda x: report.summary_of([x, x + 1], [0, 1])
        >>> tabs = {"p": {("d", "supcon"): s(50), ("d", "thanos"): s(55), ("d", "spread-pair"): s(56)}}
        >>> share_finding(tabs, [Grid("p", ("d",), "")])
        'd (p): Thanos +5.0 points over SupCon, the pair +6.0'
    """
    parts = []
    for g in grids:
        for d in g.datasets:
            t, sc, pair = (tabs[g.preset].get((d, m)) for m in ("thanos", "supcon", "spread-pair"))
            if t and sc and pair:
                parts.append(f"{escape_md(d)} ({escape_md(g.preset)}): Thanos {t.mean - sc.mean:+.1f} points over "
                             f"SupCon, the pair {pair.mean - sc.mean:+.1f}")
    return "; ".join(parts) if parts else "no grid has all three yet"


def headline_finding(gains: Sequence[Gain]) -> str:
    """The decisive figure's finding: Thanos over SupCon, and Thanos over the equal-width pair."""
    top = [g for g in gains if g.contrast.key == "thanos" and g.verdict.status != report.NOT_RUN]
    beyond = [g for g in top if g.verdict.status in (report.AGREES, report.SMALLER)]
    return (f"Thanos is above SupCon beyond seed noise in {len(beyond)} of {len(top)} (preset, dataset) cells "
            f"with records ({', '.join(_where(g) for g in beyond) or 'none'}). " + width_finding(gains))


def cosine_finding(cos: Sequence[tuple], long_records: Sequence[dict], long_datasets: Sequence[str]) -> str:
    """SupCon's within-class cosine (1 = a collapsed class) where recorded, and its change over training.

    ``cos`` is :func:`cosines`' output; the change is the paired-by-seed difference of SupCon's test
    cosine between the first and the last epoch of ``long_records`` (``metrics_by_epoch``).
    """
    parts = [f"{escape_md(d)} {split} {s.mean:.2f}" + ("" if s.n > 1 else " (one seed)") + f" ({escape_md(g.preset)})"
             for g, d, split, s in cos]
    text = ("SupCon's mean within-class cosine (1 would be a collapsed class): " + "; ".join(parts) + "."
            if parts else "No record measured SupCon's within-class cosine yet.")
    for d, t in cosine_trends(long_records, long_datasets).items():
        text += (f" Over training on {escape_md(d)} it {t.word}: {t.first:.2f} after epoch {t.epochs[0]}, "
                 f"{t.last:.2f} after epoch {t.epochs[1]} (change {t.verdict.delta:+.2f} ± "
                 f"{t.verdict.half_width:.2f}, {t.verdict.n[0]} seeds).")
    return text


class CosineTrend(NamedTuple):
    """SupCon's mean within-class test cosine after the first and the last evaluated epoch, and the change."""

    first: float
    last: float
    epochs: tuple[int, int]
    verdict: report.Verdict  # last − first, paired by seed
    word: str                # "rises", "falls" or "does not change beyond seed noise"


def cosine_trends(records: Sequence[dict], datasets: Sequence[str], method: str = "supcon") -> dict[str, CosineTrend]:
    """Per dataset: how ``method``'s within-class cosine changes from its first to its last evaluated epoch
    (``metrics_by_epoch``), paired by seed (:func:`report.paired_verdict`). Datasets without such records
    are left out.

    Example:
        >>> recs = [{"dataset": "d", "method": "supcon", "seed": s, "metrics_by_epoch":
        ...          {"1": {"within_class_cosine": .9 + s / 100}, "40": {"within_class_cosine": .7 + s / 50}}}
        ...         for s in (0, 1, 2)]
        >>> t = cosine_trends(recs, ["d"])["d"]; (round(t.first, 2), round(t.last, 2), t.epochs, t.word)
        (0.91, 0.72, (1, 40), 'falls')
    """
    out = {}
    for d in datasets:
        per = {}
        for r in records:
            if r["dataset"] == d and r["method"] == method:
                by = {int(e): m["within_class_cosine"] for e, m in (r.get("metrics_by_epoch") or {}).items()
                      if "within_class_cosine" in m}
                if len(by) > 1:
                    per[int(r["seed"])] = (by[min(by)], by[max(by)], (min(by), max(by)))
        if not per:
            continue
        seeds = sorted(per)
        v = report.paired_verdict(report.summary_of([per[s][1] - per[s][0] for s in seeds], seeds))
        word = {report.AGREES: "rises", report.OPPOSITE: "falls"}.get(v.status, "does not change beyond seed noise")
        first = sum(per[s][0] for s in seeds) / len(seeds)
        out[d] = CosineTrend(first, first + v.delta, per[seeds[0]][2], v, word)
    return out
