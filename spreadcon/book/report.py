"""Reading result records into the book's tables, figures and verdicts.

Chapters 4-6 show numbers only through this module, and this module reads
numbers only from result records (CONTRACT section 3, written by
:mod:`spreadcon.runs.records`). The one exception is the paper's own claims below:
they are *targets* we compare against, not our results, and each carries the
source it is quoted from.

Three pieces:

* :func:`summarize` -- mean ± sample std over seeds per (dataset, method).
* :func:`verdict` / :func:`paired_verdict` / :func:`average_lift` -- a claimed
  gain "A beats B by Delta points" against our measured gain and its 95%
  Student-t interval, labelled by :data:`VERDICT_RULE` (all through :func:`judge`).
* :func:`markdown_table`, :func:`provenance`, :func:`reproduce_command` and
  :func:`plot_bars` -- presentation. matplotlib is imported inside the plot
  function only.

Example:
    >>> recs = [{"dataset": "d", "method": m, "seed": s, "preset": "cpu",
    ...          "metrics": {"fine_test_acc": a}} for m, s, a in
    ...         [("supcon", 0, .50), ("supcon", 1, .52), ("thanos", 0, .60), ("thanos", 1, .62)]]
    >>> table = summarize(recs, "fine_test_acc")
    >>> round(table["d", "thanos"].mean, 1), table["d", "thanos"].n
    (61.0, 2)
    >>> verdict(table.get(("d", "thanos")), table.get(("d", "supcon")), paper_delta=11.1).status
    'direction agrees, beyond noise'
"""

from __future__ import annotations

import math
import os
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from spreadcon.book.markup import escape_md

__all__ = [
    "PAPER_CIFAR10_FINE_ACC", "PAPER_TRANSFER_LIFT", "PAPER_TRANSFER_DATASETS",
    "PAPER_WORST_GROUP_LIFT", "PAPER_ROBUSTNESS_DATASETS", "PAPER_CELEBA_SOTA_MARGIN",
    "AGREES", "SMALLER", "INCONCLUSIVE", "OPPOSITE", "NOT_RUN", "VERDICT_RULE", "CONFIDENCE",
    "coverage_status",
    "judge", "paired_verdict", "critical_value", "comparison_count",
    "average_lift_both_ways", "summarize_by_epoch", "lift_by_epoch", "summary_of",
    "Summary", "Verdict", "summarize", "verdict", "average_lift", "markdown_table",
    "provenance", "provenance_line", "reproduce_command", "plot_bars", "fmt",
    "claims_markdown", "default_results_dir", "run_live", "method_gap_vs_noise",
]

# ---------------------------------------------------------------------------
# The paper's claims: targets, not results. Percentage points.
# ---------------------------------------------------------------------------

#: Fine-label (coarse -> fine) linear-probe accuracy on CIFAR-10, in percent,
#: from the official thanos-code README's results row (Chen et al., ICML 2022,
#: github.com/HazyResearch/thanos-code). Keys are our method names:
#: ``spread`` is SupCon + cNCE (L_spread), ``autoencoder`` the class-conditional
#: autoencoder alone, ``thanos`` both.
PAPER_CIFAR10_FINE_ACC: dict[str, float] = {
    "supcon": 51.8, "spread": 77.1, "autoencoder": 71.7, "thanos": 79.1,
}

#: Average coarse-to-fine transfer lift of Thanos over SupCon, in points,
#: across the paper's five transfer datasets (Chen et al., 2022, abstract; the
#: per-dataset tables of the paper were not retrieved, so only the abstract's
#: average is used).
PAPER_TRANSFER_LIFT: float = 11.1
PAPER_TRANSFER_DATASETS: tuple[str, ...] = ("mnist", "cifar10", "cifar100", "cifar100u", "tinyimagenet")

#: Average worst-group accuracy lift of Thanos over SupCon, in points, across
#: Waterbirds, ISIC and CelebA (Chen et al., 2022, abstract; the per-dataset
#: table was not retrieved).
PAPER_WORST_GROUP_LIFT: float = 4.7
PAPER_ROBUSTNESS_DATASETS: tuple[str, ...] = ("waterbirds", "isic", "celeba")

#: Thanos's worst-group margin over the previous state of the art on CelebA,
#: in points (Chen et al., 2022, abstract).
PAPER_CELEBA_SOTA_MARGIN: float = 11.5

# ---------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------

#: Two-sided confidence of every verdict's interval.
CONFIDENCE = 0.95

# The statuses say whether our measurement agrees with the claim's *direction*, and only then how its
# size compares: a small CNN trained for minutes cannot reproduce a 600-epoch ViT's number, only agree
# with it or not.
AGREES = "direction agrees, beyond noise"
SMALLER = "direction agrees, smaller than claimed"
INCONCLUSIVE = "inconclusive"
OPPOSITE = "opposite direction"
NOT_RUN = "not run"
MISSING = "not run yet"  # a table cell without records
# The names of the first editions, whose words were "reproduced", "partial" and "contradicted".
REPRODUCED, PARTIAL, CONTRADICTED = AGREES, SMALLER, OPPOSITE
NOT_REPRODUCED = OPPOSITE


def coverage_status(m: int, k: int) -> str:
    """The status of an average over ``m`` of a claim's ``k`` datasets (``m < k``) whose interval
    lies on the claimed side of 0: it agrees in direction where measured, and reproduces nothing.

    Example:
        >>> coverage_status(3, 5)
        'direction agrees (3 of 5 datasets)'
    """
    return f"direction agrees ({m} of {k} datasets)"


VERDICT_RULE = (
    "A claim 'A beats B by Δ_paper points' is set against our gain Δ = mean(A) − mean(B) "
    "(percentage points, means over seeds) and its 95% interval **Δ ± t·se**, where se comes from "
    "the seed-to-seed sample standard deviations s and t = t_{0.975, df} is Student's two-sided 95% "
    "critical value at df degrees of freedom. "
    "*Two arms trained separately*: se = sqrt(s_A²/n_A + s_B²/n_B), and df is Welch–Satterthwaite's, "
    "(s_A²/n_A + s_B²/n_B)² / [(s_A²/n_A)²/(n_A − 1) + (s_B²/n_B)²/(n_B − 1)] (about 4 with 3 seeds "
    "per arm: t ≈ 2.78). "
    "*A change paired by seed*: se = s_d/√n of the per-seed differences and df = n − 1 (2 with 3 "
    "seeds: t ≈ 4.30). "
    "*An average over the m datasets that have both methods*: Δ = (1/m) Σ_d Δ_d, se = sqrt(Σ_d se_d²)/m, "
    "and df is Welch–Satterthwaite's over the sum, (Σ_k v_k)² / Σ_k [v_k²/(n_k − 1)] with "
    "v_k = s_k²/n_k over all 2m arms. "
    "The statuses separate direction from size. "
    f"**{AGREES}**: Δ − t·se > 0 and Δ ≥ Δ_paper / 2 (or the claim gives no size). "
    f"**{SMALLER}**: Δ − t·se > 0 but Δ < Δ_paper / 2. "
    f"**{coverage_status('m', 'k')}**: an average over m < k of the claim's k datasets with "
    "Δ − t·se > 0, of whatever size: the claim is about all k, so m of them do not reproduce it. "
    f"**{INCONCLUSIVE}**: the interval contains 0, or a side has a single seed (no noise estimate). "
    f"**{OPPOSITE}**: Δ + t·se < 0. "
    f"**{NOT_RUN}**: no records for A or B. "
    "Each row is one comparison at 95%; the number of comparisons in a table is printed under it, "
    "without a correction for multiplicity: among N comparisons of methods that do not differ, "
    "about 0.05·N rows would still land beyond noise by chance."
)


@dataclass(frozen=True)
class Summary:
    """One cell of a results table: a metric over seeds, in percent.

    Attributes:
        mean: mean over seeds (percent).
        std: sample standard deviation over seeds (percent); 0.0 for one seed.
        n: number of seeds.
        values: the per-seed values (percent), ordered by seed.
        seeds: the seeds, sorted.
        records: the records behind the cell.
    """

    mean: float
    std: float
    n: int
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    records: tuple[dict, ...] = field(default=(), repr=False, compare=False)

    @property
    def sem(self) -> float:
        """Standard error of the mean; NaN with a single seed (unknown noise)."""
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan

    def __str__(self) -> str:
        if self.n == 1:  # one seed: no spread to report, and "± 0.0" would claim there is none
            return f"{self.mean:.1f} (n=1)"
        return f"{self.mean:.1f} ± {self.std:.1f} (n={self.n})"


def summarize(records: Iterable[Mapping[str, Any]], metric: str,
              by: Sequence[str] = ("dataset", "method"), percent: bool = True) -> dict[tuple, Summary]:
    """Group records by ``by`` and reduce ``metric`` to mean ± std over seeds.

    Args:
        records: result records, e.g. from :func:`spreadcon.runs.records.load_records`.
        metric: a key of ``record["metrics"]`` such as ``"fine_test_acc"``.
            Records without it are ignored.
        by: top-level record keys forming the group key (default
            ``(dataset, method)``).
        percent: multiply by 100 (accuracies are stored as fractions).

    Returns:
        ``{group_key_tuple: Summary}``. With several records for the same seed
        in one group (which a well-formed results folder never has) each one
        counts as a separate sample.
    """
    scale = 100.0 if percent else 1.0
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for rec in records:
        if metric not in rec.get("metrics", {}):
            continue
        groups.setdefault(tuple(rec[k] for k in by), []).append(rec)
    out = {}
    for key, recs in groups.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        vals = tuple(float(r["metrics"][metric]) * scale for r in recs)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[key] = Summary(statistics.fmean(vals), std, len(vals), vals,
                           tuple(int(r["seed"]) for r in recs), tuple(recs))
    return out


def _summary(vals: Sequence[float], seeds: Sequence[int], recs: Sequence[Mapping[str, Any]] = ()) -> Summary:
    vals = tuple(vals)
    return Summary(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals), vals,
                   tuple(seeds), tuple(recs))


def summary_of(values: Sequence[float], seeds: Sequence[int]) -> Summary:
    """A :class:`Summary` of per-seed values that are already numbers (for example paired differences).

    Example:
        >>> s = summary_of([1.0, 3.0], [0, 1]); (s.mean, s.n, round(s.sem, 3))
        (2.0, 2, 1.0)
    """
    return _summary(values, seeds)


def summarize_by_epoch(records: Iterable[Mapping[str, Any]], metric: str, *, percent: bool = True
                       ) -> dict[tuple, dict[int, Summary]]:
    """``{(dataset, method): {epoch: Summary}}`` of ``metric`` from the records' ``metrics_by_epoch``.

    Records without ``metrics_by_epoch`` are skipped; each epoch's cell holds
    the seeds that evaluated that epoch.

    Example:
        >>> recs = [{"dataset": "d", "method": "m", "seed": s, "metrics_by_epoch": {"1": {"a": v}, "5": {"a": v + .1}}}
        ...         for s, v in ((0, 0.5), (1, 0.7))]
        >>> {e: round(c.mean, 1) for e, c in summarize_by_epoch(recs, "a")["d", "m"].items()}
        {1: 60.0, 5: 70.0}
    """
    scale = 100.0 if percent else 1.0
    cells: dict[tuple, dict[int, list]] = {}
    for rec in records:
        for epoch, metrics in (rec.get("metrics_by_epoch") or {}).items():
            if metric in metrics:
                cells.setdefault((rec["dataset"], rec["method"]), {}).setdefault(int(epoch), []).append(
                    (int(rec["seed"]), float(metrics[metric]) * scale, rec))
    return {key: {e: _summary([v for _, v, _ in sorted(rows, key=lambda t: t[0])],
                              sorted(s for s, _, _ in rows), [r for _, _, r in rows])
                  for e, rows in sorted(by_e.items())}
            for key, by_e in cells.items()}


def lift_by_epoch(records: Iterable[Mapping[str, Any]], dataset: str, method: str, baseline: str,
                  metric: str = "fine_test_acc") -> dict[int, Summary]:
    """``method`` minus ``baseline`` at each evaluated epoch, paired by seed (points), over the seeds
    that have both.

    Example:
        >>> recs = [{"dataset": "d", "method": m, "seed": 0, "metrics_by_epoch": {"2": {"acc": v}}}
        ...         for m, v in (("a", 0.8), ("b", 0.75))]
        >>> round(lift_by_epoch(recs, "d", "a", "b", "acc")[2].mean, 6)
        5.0
    """
    per: dict[tuple[str, int], dict[int, float]] = {}
    for rec in records:
        if rec["dataset"] == dataset and rec["method"] in (method, baseline):
            for epoch, metrics in (rec.get("metrics_by_epoch") or {}).items():
                if metric in metrics:
                    per.setdefault((rec["method"], int(rec["seed"])), {})[int(epoch)] = 100.0 * float(metrics[metric])
    seeds = sorted({s for m, s in per if m == method} & {s for m, s in per if m == baseline})
    epochs = sorted({e for s in seeds for e in per[method, s]} & {e for s in seeds for e in per[baseline, s]})
    out = {}
    for e in epochs:
        both = [s for s in seeds if e in per[method, s] and e in per[baseline, s]]
        out[e] = _summary([per[method, s][e] - per[baseline, s][e] for s in both], both)
    return out


@dataclass(frozen=True)
class Verdict:
    """A measured gain set against a claimed one (percentage points), by :data:`VERDICT_RULE`.

    Attributes:
        status: :data:`AGREES`, :data:`SMALLER`, :func:`coverage_status` (an average over part of
            the claim's datasets), :data:`INCONCLUSIVE`, :data:`OPPOSITE` or :data:`NOT_RUN`.
        delta: measured gain mean(A) - mean(B), or NaN when not run.
        se: its standard error (NaN with a single seed on a side).
        paper_delta: the claimed gain, or None for a claim about the direction only.
        n: seeds behind the measurement, as (n_A, n_B), (n,) when paired, or per-dataset counts.
        df: the degrees of freedom of the interval (NaN when the noise is unknown).
        t: the critical value t_{0.975, df}; the interval is ``delta ± t * se``.
        coverage: ``(m, k)`` for an average over m of the claim's k datasets, else None.
    """

    status: str
    delta: float
    se: float
    paper_delta: float | None
    n: tuple[int, ...] = ()
    df: float = math.nan
    t: float = math.nan
    coverage: tuple[int, int] | None = None

    @property
    def half_width(self) -> float:
        """``t * se``, the half width of the 95% interval."""
        return self.t * self.se

    def describe(self) -> str:
        """``+2.0 ± 2.78·0.7 pts (df 3.9; paper +2.0)``: Δ ± t·se, or ``–`` when not run.

        Example:
            >>> Verdict(AGREES, 2.0, 0.7, 2.0, (3, 3), 3.9, 2.8).describe()
            '+2.0 ± 2.80·0.7 pts (df 3.9; paper +2.0)'
        """
        if self.status == NOT_RUN:
            return "–"
        notes = ["one seed: no noise estimate"] if math.isnan(self.t) else [f"df {self.df:.3g}"]
        if self.paper_delta is not None:
            notes.append(f"paper {self.paper_delta:+.1f}")
        if self.coverage:
            notes.append(f"{self.coverage[0]} of {self.coverage[1]} datasets")
        spread = "" if math.isnan(self.t) else f" ± {self.t:.2f}·{self.se:.1f}"
        return f"{self.delta:+.1f}{spread} pts ({'; '.join(notes)})"


def critical_value(df: float, confidence: float = CONFIDENCE) -> float:
    """Student's two-sided critical value ``t_{(1 + confidence) / 2, df}``; NaN unless ``df > 0``.

    Example:
        >>> round(critical_value(4), 3), round(critical_value(2), 3), round(critical_value(1e9), 2)
        (2.776, 4.303, 1.96)
    """
    if not df > 0:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def _se_and_df(cells: Sequence[Summary], m: int = 1) -> tuple[float, float]:
    """``sqrt(Σ_k s_k²/n_k) / m`` and its Welch–Satterthwaite degrees of freedom over ``cells``.

    ``df = (Σ v_k)² / Σ v_k²/(n_k − 1)`` with ``v_k = s_k²/n_k``; one cell gives ``n − 1``, two give
    Welch's df. Both are NaN when a cell has one seed. When every ``s_k`` is 0 the formula is 0/0;
    the df is then the pooled ``Σ (n_k − 1)`` (any Δ ≠ 0 clears an interval of width 0 anyway).
    """
    if any(c.n < 2 for c in cells):
        return math.nan, math.nan
    v = [c.std ** 2 / c.n for c in cells]
    dfs = [c.n - 1 for c in cells]
    total = sum(v)
    df = total ** 2 / sum(x ** 2 / d for x, d in zip(v, dfs)) if total > 0 else float(sum(dfs))
    return math.sqrt(total) / m, df


def _classify(delta: float, half_width: float, paper_delta: float | None,
              coverage: tuple[int, int] | None = None) -> str:
    """:data:`VERDICT_RULE`'s statuses from Δ and the half width ``t·se`` of its interval.

    Example:
        >>> _classify(10.0, 2.8, 11.1), _classify(3.0, 2.8, 11.1), _classify(3.0, 4.3, 11.1)
        ('direction agrees, beyond noise', 'direction agrees, smaller than claimed', 'inconclusive')
        >>> _classify(-3.0, 2.8, 4.7), _classify(5.0, float("nan"), 4.7), _classify(3.0, 2.8, 11.1, (2, 5))
        ('opposite direction', 'inconclusive', 'direction agrees (2 of 5 datasets)')
    """
    if math.isnan(delta):
        return NOT_RUN
    if math.isnan(half_width):
        return INCONCLUSIVE
    if delta - half_width > 0:
        if coverage is not None and coverage[0] < coverage[1]:
            return coverage_status(*coverage)
        return AGREES if paper_delta is None or delta >= paper_delta / 2 else SMALLER
    if delta + half_width < 0:
        return OPPOSITE
    return INCONCLUSIVE


def judge(delta: float, se: float, df: float, paper_delta: float | None = None, *,
          n: tuple[int, ...] = (), coverage: tuple[int, int] | None = None) -> Verdict:
    """:data:`VERDICT_RULE`, the one rule every claim row goes through: ``Δ ± t_{0.975, df}·se``.

    :func:`verdict`, :func:`paired_verdict` and :func:`average_lift` compute Δ, se and df and
    call this; so may a chapter with a change that is none of those.

    Args:
        delta: the measured gain (NaN: not run).
        se: its standard error (NaN: a side has one seed).
        df: the degrees of freedom of ``se``.
        paper_delta: the claimed gain (> 0), or None for a claim about the direction only.
        n: the seeds behind it, for the record.
        coverage: ``(m, k)`` for an average over m of the claim's k datasets.

    Raises:
        ValueError: ``paper_delta <= 0`` (the rule is for claimed gains).
    """
    if paper_delta is not None and not paper_delta > 0:
        raise ValueError(f"paper_delta={paper_delta!r} must be a positive claimed gain, or None")
    t = math.nan if math.isnan(se) else critical_value(df)
    return Verdict(_classify(delta, t * se, paper_delta, coverage), delta, se, paper_delta, tuple(n), df, t,
                   coverage)


def verdict(a: Summary | None, b: Summary | None, paper_delta: float | None = None) -> Verdict:
    """Label the claim "A beats B by ``paper_delta`` points" by :data:`VERDICT_RULE` (two arms
    trained separately: Welch's se and df).

    Args:
        a: our summary for the method claimed better (e.g. Thanos), or None.
        b: our summary for the baseline (e.g. SupCon), or None.
        paper_delta: the claimed gain in points (> 0), or None when only the direction is claimed.

    Returns:
        A :class:`Verdict`; ``NOT_RUN`` when either side is missing.

    Raises:
        ValueError: ``paper_delta <= 0``.

    Example:
        >>> a, b = summary_of([60.0, 62.0, 61.0], [0, 1, 2]), summary_of([50.0, 52.0, 51.0], [0, 1, 2])
        >>> v = verdict(a, b, 11.1); v.status, v.df, round(v.t, 3)
        ('direction agrees, beyond noise', 4.0, 2.776)
    """
    if a is None or b is None:
        return judge(math.nan, math.nan, math.nan, paper_delta)
    se, df = _se_and_df([a, b])
    return judge(a.mean - b.mean, se, df, paper_delta, n=(a.n, b.n))


def paired_verdict(diffs: Summary | None, paper_delta: float | None = None) -> Verdict:
    """:data:`VERDICT_RULE` for a change paired by seed: ``diffs`` holds the per-seed differences
    (e.g. from :func:`summary_of`), se = s/√n and df = n − 1.

    Example:
        >>> v = paired_verdict(summary_of([1.0, 2.0, 3.0], [0, 1, 2])); v.df, round(v.half_width, 3), v.status
        (2, 2.484, 'inconclusive')
    """
    if diffs is None:
        return judge(math.nan, math.nan, math.nan, paper_delta)
    se, df = _se_and_df([diffs])
    return judge(diffs.mean, se, df if math.isnan(df) else int(df), paper_delta, n=(diffs.n,))


def average_lift(table: Mapping[tuple, Summary], method: str, baseline: str,
                 datasets: Sequence[str], paper_delta: float | None, *,
                 claimed: Sequence[str] | None = None) -> tuple[Verdict, list[str]]:
    """The gain of ``method`` over ``baseline`` averaged over ``datasets``.

    The average is over the m datasets that have both methods recorded:
    ``Δ = (1/m) Σ_d (mean_d(A) − mean_d(B))`` with ``se = sqrt(Σ_d se_d²) / m``
    and Welch–Satterthwaite's df over all 2m cells (:data:`VERDICT_RULE`). The
    verdict is :data:`NOT_RUN` when no dataset has both, and carries
    ``coverage = (m, k)``, k the number of datasets the claim is about.

    Args:
        table: from :func:`summarize` with ``by=("dataset", "method")``.
        method, baseline: method names, e.g. ``"thanos"``, ``"supcon"``.
        datasets: the datasets to average over.
        paper_delta: the claimed average gain in points, or None for the direction only.
        claimed: the datasets the claim is about (default ``datasets``): an average over fewer is
            at most :func:`coverage_status`.

    Returns:
        ``(verdict, covered)``: the verdict and the datasets it averages over.
    """
    k = len(claimed if claimed is not None else datasets)
    covered = [d for d in datasets if (d, method) in table and (d, baseline) in table]
    if not covered:
        return judge(math.nan, math.nan, math.nan, paper_delta, coverage=(0, k)), []
    cells = [table[d, x] for d in covered for x in (method, baseline)]
    delta = statistics.fmean(table[d, method].mean - table[d, baseline].mean for d in covered)
    se, df = _se_and_df(cells, len(covered))
    return judge(delta, se, df, paper_delta, n=tuple(min(table[d, method].n, table[d, baseline].n) for d in covered),
                 coverage=(len(covered), k)), covered


def average_lift_both_ways(table: Mapping[tuple, Summary], method: str, baseline: str,
                           datasets: Sequence[str], paper_delta: float | None,
                           methods: Sequence[str]) -> dict[str, tuple[Verdict, list[str]]]:
    """:func:`average_lift` over every dataset and over the informative ones only.

    A dataset is left out of the second average when :func:`method_gap_vs_noise`
    finds that ``methods`` are not separated there beyond seed noise
    (``separated is False``). Both averages count their coverage against all of
    ``datasets`` (the claim is about them all).

    Returns:
        ``{"all": (verdict, covered), "informative": (verdict, covered),
        "uninformative": ([datasets left out], [])}``.
    """
    dropped = [d for d in datasets if method_gap_vs_noise(table, d, methods)["separated"] is False]
    kept = [d for d in datasets if d not in dropped]
    return {"all": average_lift(table, method, baseline, datasets, paper_delta),
            "informative": average_lift(table, method, baseline, kept, paper_delta, claimed=datasets),
            "uninformative": (dropped, [])}


def method_gap_vs_noise(table: Mapping[tuple, Summary], dataset: str, methods: Sequence[str]) -> dict[str, Any]:
    """Does ``dataset`` tell ``methods`` apart at all, beyond seed noise?

    The gap between the best and the worst method's mean in the table against the
    seed-to-seed noise: a property of a results table, unlike
    :func:`spreadcon.theory.model.separation`, the geometric separation of
    classes in an embedding (within- against between-class cosine).

    ``gap`` is the best method's mean minus the worst's, ``noise`` the largest
    seed standard deviation among them (cells with at least 2 seeds), and
    ``separated`` is ``gap > 2 * noise``. A dataset where every method sits
    within noise of the others carries no evidence for or against any claim
    about them, whatever the verdicts say.

    Returns:
        ``{"gap", "noise", "separated", "best", "worst", "n_methods"}``; ``separated``
        is None with fewer than 2 methods or no cell with 2 seeds.
    """
    cells = {m: table[dataset, m] for m in methods if (dataset, m) in table}
    if len(cells) < 2:
        return {"gap": math.nan, "noise": math.nan, "separated": None, "best": None, "worst": None,
                "n_methods": len(cells)}
    best = max(cells, key=lambda m: cells[m].mean)
    worst = min(cells, key=lambda m: cells[m].mean)
    stds = [c.std for c in cells.values() if c.n > 1]
    noise = max(stds) if stds else math.nan
    gap = cells[best].mean - cells[worst].mean
    return {"gap": gap, "noise": noise, "separated": None if not stds else gap > 2 * noise,
            "best": best, "worst": worst, "n_methods": len(cells)}


# ---------------------------------------------------------------------------
# Presentation
# ---------------------------------------------------------------------------

def fmt(summary: Summary | None, missing: str = MISSING) -> str:
    """``"61.0 ± 1.4 (n=2)"`` or ``missing``."""
    return missing if summary is None else str(summary)


def markdown_table(table: Mapping[tuple, Summary], rows: Sequence[str], cols: Sequence[str],
                   row_title: str = "method", missing: str = MISSING,
                   extra_cols: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """A Markdown table with one cell per ``(col, row)`` key of ``table``.

    Keys of ``table`` are ``(col, row)``, i.e. ``(dataset, method)`` as
    produced by :func:`summarize`. ``extra_cols`` appends columns given as
    ``{column title: {row: text}}`` (e.g. the paper's target per method).
    Every label and text cell is shown as text (:func:`~spreadcon.book.markup.escape_md`):
    dataset and method names come from records.

    Example:
        >>> t = summarize([{"dataset": "d", "method": "<b>m</b>", "seed": 0, "metrics": {"a": 0.5}}], "a")
        >>> print(markdown_table(t, ["<b>m</b>"], ["d"]))
        | method | d |
        |---|---|
        | \\<b\\>m\\</b\\> | 50.0 (n=1) |
    """
    extra_cols = dict(extra_cols or {})
    head = [row_title, *cols, *extra_cols]
    lines = ["| " + " | ".join(map(escape_md, head)) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [fmt(table.get((c, r)), missing) for c in cols]
        cells += [extra.get(r, "") for extra in extra_cols.values()]
        lines.append(f"| {escape_md(r)} | " + " | ".join(map(escape_md, cells)) + " |")
    return "\n".join(lines)


def provenance(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Where the numbers come from: presets, devices, commits, torch, wall time.

    Returns:
        ``{"n_records", "presets", "devices", "git_commits" (first 10 chars),
        "torch_versions", "wall_time_s_total", "wall_time_s_mean", "first",
        "last"}`` (``first``/``last`` are the earliest/latest ``started_at``).
    """
    recs = list(records)
    prov = [r["provenance"] for r in recs]
    walls = [float(p["wall_time_s"]) for p in prov]
    started = sorted(p["started_at"] for p in prov)
    return {
        "n_records": len(recs),
        "presets": sorted({r["preset"] for r in recs}),
        "devices": sorted({p["device"] for p in prov}),
        "git_commits": sorted({str(p["git_commit"])[:10] for p in prov}),
        "torch_versions": sorted({p["torch_version"] for p in prov}),
        "wall_time_s_total": sum(walls),
        "wall_time_s_mean": statistics.fmean(walls) if walls else math.nan,
        "first": started[0] if started else None,
        "last": started[-1] if started else None,
    }


def provenance_line(records: Iterable[Mapping[str, Any]], *, commits: bool = True) -> str:
    """One sentence of :func:`provenance` for a caption, an admonition or a table cell.

    ``commits=False`` leaves out the git commits: a chapter's caption states a
    finding, and the commits of its records are listed in the provenance appendix.

    The records' strings (presets, devices, torch versions, commits, dates) are
    escaped (:func:`~spreadcon.book.markup.escape_md`), so the sentence is safe
    inside Markdown; ordinary values (``cpu``, ``2.14.1+cu130``, commit hashes)
    read the same either way.
    """
    p = provenance(records)
    if not p["n_records"]:
        return "no records yet"

    def words(key: str) -> str:
        return ", ".join(escape_md(v) for v in p[key])

    git = f"; git {words('git_commits')}" if commits else ""
    return (f"{p['n_records']} records; preset {words('presets')}; device "
            f"{words('devices')}; torch {words('torch_versions')}{git}; wall time {p['wall_time_s_total'] / 60:.1f} min in all "
            f"({p['wall_time_s_mean']:.0f} s per run); run {escape_md(str(p['first'])[:10])} to "
            f"{escape_md(str(p['last'])[:10])}")


def reproduce_command(preset: str, datasets: Sequence[str], methods: Sequence[str],
                      seeds: Sequence[int], data_root: str | None = None) -> str:
    """The exact ``python -m spreadcon reproduce`` command for a grid."""
    parts = ["python", "-m", "spreadcon", "reproduce", "--preset", preset,
             "--datasets", *datasets, "--methods", *methods, "--seeds", *map(str, seeds)]
    if data_root:
        parts += ["--data-root", data_root]
    return " ".join(shlex.quote(p) for p in parts)


def plot_bars(table: Mapping[tuple, Summary], groups: Sequence[str], series: Sequence[str], *,
              ax=None, ylabel: str = "accuracy (%)", targets: Mapping[tuple, float] | None = None,
              title: str | None = None):
    """Grouped bars: one group per dataset, one bar per method, seed std as error bars.

    Args:
        table: ``{(group, series): Summary}`` from :func:`summarize`.
        groups: x-axis groups (datasets), in order.
        series: bars inside each group (methods), in order.
        ax: a matplotlib axis, or None for a new figure.
        ylabel: y-axis label, with its unit.
        targets: optional ``{(group, series): value}`` drawn as black ticks
            (the paper's numbers).
        title: optional axis title.

    Returns:
        The axis. Missing cells are left empty and marked "not run" on the axis.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.3 * len(groups) * max(1, len(series)) / 3, 3.2))
    width = 0.8 / max(1, len(series))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, s in enumerate(series):
        xs, ys, es = [], [], []
        for i, g in enumerate(groups):
            cell = table.get((g, s))
            if cell is not None:
                xs.append(i + (j - (len(series) - 1) / 2) * width)
                ys.append(cell.mean)
                es.append(cell.std)
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=s, color=colors[j % len(colors)])
        for i, g in enumerate(groups):
            x = i + (j - (len(series) - 1) / 2) * width
            if targets and (g, s) in targets:
                ax.plot([x - width / 2, x + width / 2], [targets[g, s]] * 2, color="black", lw=2)
    for i, g in enumerate(groups):
        if not any((g, s) in table for s in series):
            ax.text(i, 0.5, "not run yet", ha="center", va="bottom", rotation=90,
                    transform=ax.get_xaxis_transform(), color="gray")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title)
    if targets:
        ax.plot([], [], color="black", lw=2, label="paper")
    ax.legend(fontsize="small", ncols=min(len(series) + bool(targets), 5), loc="lower right")
    return ax


def claims_markdown(rows: Sequence[tuple]) -> str:
    """The "what the paper claims / what we measured" table.

    Args:
        rows: ``(claim, verdict, evidence)`` or ``(claim, verdict, evidence, equal_width)``: the
            paper's claim in words, our :class:`Verdict` for it, where the measurement comes from
            (datasets, preset, seeds), and optionally the same comparison against the width-matched
            control (a :class:`Verdict`, or None where the claim has none). ``claim`` and
            ``evidence`` are Markdown the chapter writes (bold, code spans); a record's string
            inside them must be passed through :func:`~spreadcon.book.markup.escape_md` by the caller.

    Example:
        >>> v = judge(3.0, 1.0, 4)
        >>> print(claims_markdown([("A beats B", v, "d", judge(-0.5, 1.0, 4))]).splitlines()[2])
        | A beats B | +3.0 ± 2.78·1.0 pts (df 4) | **direction agrees, beyond noise** | -0.5 ± 2.8 (**inconclusive**) | d |
    """
    wide = any(len(r) > 3 and r[3] is not None for r in rows)
    head = ["the paper claims", "we measured (Δ ± t·se)", "verdict"]
    head += ["at equal width: Thanos − SupCon + cNCE pair"] if wide else []
    lines = ["| " + " | ".join([*head, "evidence"]) + " |", "|" + "---|" * (len(head) + 1)]
    for claim, v, evidence, *rest in rows:
        cells = [claim, v.describe(), f"**{v.status}**"]
        if wide:
            w = rest[0] if rest else None
            cells.append("–" if w is None or w.status == NOT_RUN else _short(w))
        lines.append("| " + " | ".join([*cells, evidence]) + " |")
    k = comparison_count(rows)
    lines += ["", f"{k} comparison{'' if k == 1 else 's'} with records in this table, each a 95% interval, "
                  "not corrected for multiplicity." if k else "No comparison in this table has records yet."]
    return "\n".join(lines)


def _short(v: Verdict) -> str:
    """``-0.5 ± 2.1 (**inconclusive**)``: a verdict in a narrow cell (Δ ± t·se)."""
    spread = "" if math.isnan(v.half_width) else f" ± {v.half_width:.1f}"
    return f"{v.delta:+.1f}{spread} (**{v.status}**)"


def comparison_count(rows: Sequence[tuple]) -> int:
    """How many comparisons a table of claims makes: its verdicts with records, the equal-width
    ones of :func:`claims_markdown`'s fourth column included.

    Example:
        >>> comparison_count([("a", judge(1.0, 0.1, 4), ""), ("b", verdict(None, None), "")])
        1
        >>> comparison_count([("a", judge(1.0, 0.1, 4), "", judge(0.5, 0.1, 4))])
        2
    """
    return sum(v is not None and v.status != NOT_RUN for r in rows for v in (r[1], *r[3:4]))


def default_results_dir() -> Path:
    """The committed ``results/`` folder, seen from the repository root or from ``book/``.

    ``$SPREADCON_RESULTS`` wins when set (the Colab install cell points it at
    the records of the checkout it installs from). Else it falls back to
    ``results`` next to the installed package's parent (an editable install),
    else ``./results`` (which may not exist: then there are simply no records).
    """
    env = os.environ.get("SPREADCON_RESULTS")
    if env:
        return Path(env).expanduser().resolve()
    for cand in (Path("results"), Path("..") / "results", Path(__file__).resolve().parents[2] / "results"):
        if cand.is_dir():
            return cand.resolve()
    return Path("results")


def _live_run(method: str, seed: int, alpha: float | None, *, dataset: str, preset: str,
              results_dir: str | Path, data_root: str | Path | None, overrides: Mapping[str, Any] | None,
              progress: bool) -> Path | None:
    """One run of :func:`run_live` (a job that a worker process can run): the path of its record."""
    from spreadcon.runs.experiment import run_experiment

    return run_experiment(dataset, method, preset=preset, seed=seed, data_root=data_root, results_dir=results_dir,
                          overrides=dict(overrides or {}), alpha=alpha, progress=progress)


def run_live(dataset: str, methods: Sequence[str], preset: str, seeds: Sequence[int],
             results_dir: str | Path, *, alphas: Sequence[float | None] = (None,),
             data_root: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
             progress: bool = False, workers: int | None = 1) -> list[dict]:
    """Run a small grid now (each run through :func:`spreadcon.runs.experiment.run_experiment`) and load its records.

    The chapters use this for their build-time experiments, always with a
    temporary ``results_dir``, so these records never mix with the committed
    ones.

    ``workers``: processes that share the runs (:func:`spreadcon.util.parallel.run_jobs`;
    ``None``: one per core), each run on one torch thread; with 1 they run
    here, in order, on this process's threads. Runs share nothing but
    ``results_dir`` (each trains in a checkpoint folder of its own, a
    composite method its own backbones), so their order does not matter.

    Returns:
        The records written, each with ``"path"`` and, for the alpha sweep,
        the top-level ``"alpha_override"`` that ``run_experiment`` stores.
    """
    from spreadcon.runs.records import check_record, name_problems
    from spreadcon.util.parallel import run_jobs

    jobs = [(method, seed, alpha) for method in methods for alpha in alphas for seed in seeds]
    shared = dict(dataset=dataset, preset=preset, results_dir=results_dir, data_root=data_root, overrides=overrides,
                  progress=progress)
    out = []
    for path in run_jobs(_live_run, jobs, shared=shared, workers=workers):
        rec, problem = check_record(path, results_dir)  # strict, as every record is read
        if problem is not None:
            name_problems([problem])
            continue
        rec["path"] = str(path)
        out.append(rec)
    return out
