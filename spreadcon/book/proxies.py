"""Chapter 6's pieces that are not plots: the proxy validation and the subgroup explanation table.

A proxy stands in for Waterbirds only if it behaves like it. Before any method
comparison, the plain cross-entropy (``ce``, GEORGE's ERM) records of a proxy
must show, as means over seeds (:data:`VALIDATION_RULE`):

* the core feature is learnable: the ``ce`` encoder's own class head scores
  at least 65% on the balanced test set (``coarse_head_test_acc``);
* the true groups help: Group DRO with the true groups reaches at least 65%
  worst-group accuracy;
* the shortcut hurts ERM: that is at least 20 points above ERM's worst group.

Both Group DRO variants are checked: the last layer on frozen ``ce``
embeddings (``oracle_worst_group_acc`` against the ERM head's
``erm_worst_group_acc``), and the whole network retrained
(``oracle_retrain_worst_group_acc`` against the ``ce`` network's own head,
``head_worst_group_acc``). A proxy *passes* when every criterion of one
variant holds.

Example:
    >>> recs = [{"dataset": "p", "method": "ce", "seed": s, "metrics": {
    ...     "coarse_head_test_acc": 0.7, "oracle_worst_group_acc": 0.7, "erm_worst_group_acc": 0.4,
    ...     "oracle_retrain_worst_group_acc": 0.6, "head_worst_group_acc": 0.5}} for s in (0, 1)]
    >>> v = proxy_validation(recs, "p"); v["passed"], v["passed_by"]
    (True, ['last layer'])
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Mapping

from spreadcon.book.markup import escape_md

__all__ = ["VALIDATION_RULE", "THRESHOLDS", "VARIANTS", "proxy_validation", "validation_markdown",
           "STRATEGIES", "DRO_VARIANTS", "FIRST_EDITION_COMMIT", "SECOND_EDITION_COMMIT", "strategy_table", "per_group_table",
           "paired_difference", "beyond_noise", "explanation_rows", "explanation_markdown", "group_counts",
           "records_at_commit"]

#: (class head, true-group worst group, true-group DRO minus ERM), fractions
THRESHOLDS = {"head": 0.65, "oracle": 0.65, "gap": 0.20}

#: Group DRO variant -> (its true-group metric, the ERM metric it is compared with)
VARIANTS = {
    "last layer": ("oracle_worst_group_acc", "erm_worst_group_acc"),
    "whole network": ("oracle_retrain_worst_group_acc", "head_worst_group_acc"),
}

VALIDATION_RULE = (
    "A proxy is **valid** when its plain cross-entropy (ERM) runs show, as means over seeds: "
    f"the encoder's own class head scores at least {THRESHOLDS['head']:.0%} on the balanced test set "
    "(the core feature is learned); Group DRO with the *true* groups reaches at least "
    f"{THRESHOLDS['oracle']:.0%} worst-group accuracy; and that is at least {THRESHOLDS['gap'] * 100:.0f} "
    "points above ERM's worst group (the shortcut hurts, and knowing the groups fixes it). Both ways of "
    "training for the worst group are checked (the last layer, and the whole network); one of them "
    "meeting every criterion suffices."
)


def _mean_std(vals: list[float]) -> tuple[float, float]:
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def proxy_validation(records: Iterable[Mapping[str, Any]], dataset: str, method: str = "ce") -> dict[str, Any]:
    """Check :data:`VALIDATION_RULE` on the ``method`` records of ``dataset``.

    Returns:
        ``{"rows": [{"check", "value", "std", "n", "threshold", "passed"}], "passed": bool | None,
        "passed_by": [variant names], "seeds": [...]}``. Values are fractions; the gap is paired by
        seed. ``passed`` is None when there are no records, and a check whose metric no record has is
        left out (its variant cannot pass).
    """
    recs = sorted((r for r in records if r["dataset"] == dataset and r["method"] == method),
                  key=lambda r: r["seed"])
    if not recs:
        return {"rows": [], "passed": None, "passed_by": [], "seeds": []}

    def vals(key):
        return [float(r["metrics"][key]) for r in recs if key in r["metrics"]]

    rows, ok_by = [], {}
    head = vals("coarse_head_test_acc")
    if head:
        m, s = _mean_std(head)
        rows.append({"check": "class head, balanced test", "value": m, "std": s, "n": len(head),
                     "threshold": THRESHOLDS["head"], "passed": m >= THRESHOLDS["head"]})
    head_ok = bool(head) and rows[0]["passed"]
    for name, (oracle_key, erm_key) in VARIANTS.items():
        oracle = vals(oracle_key)
        pairs = [float(r["metrics"][oracle_key]) - float(r["metrics"][erm_key]) for r in recs
                 if oracle_key in r["metrics"] and erm_key in r["metrics"]]
        if not oracle or not pairs:
            ok_by[name] = False
            continue
        m, s = _mean_std(oracle)
        g, gs = _mean_std(pairs)
        rows.append({"check": f"true-group DRO worst group ({name})", "value": m, "std": s, "n": len(oracle),
                     "threshold": THRESHOLDS["oracle"], "passed": m >= THRESHOLDS["oracle"]})
        rows.append({"check": f"true-group DRO minus ERM, worst group ({name})", "value": g, "std": gs,
                     "n": len(pairs), "threshold": THRESHOLDS["gap"], "passed": g >= THRESHOLDS["gap"]})
        ok_by[name] = head_ok and rows[-1]["passed"] and rows[-2]["passed"]
    passed_by = [n for n, ok in ok_by.items() if ok]
    return {"rows": rows, "passed": bool(passed_by), "passed_by": passed_by,
            "seeds": [int(r["seed"]) for r in recs]}


def validation_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`proxy_validation` results, ``{dataset: result}``, one row per check.

    Example:
        >>> print(validation_markdown({"p": {"rows": [{"check": "class head", "value": 0.7, "std": 0.01,
        ...       "n": 3, "threshold": 0.65, "passed": True}], "passed": True, "passed_by": [], "seeds": []}}))
        | proxy | check | measured (%) | needed (%) | |
        |---|---|---|---|---|
        | p | class head | 70.0 ± 1.0 (n=3) | ≥ 65 | passes |
    """
    out = ["| proxy | check | measured (%) | needed (%) | |", "|---|---|---|---|---|"]
    for d, res in results.items():
        if not res["rows"]:
            out.append(f"| {escape_md(d)} | no ERM records yet | | | |")
        for row in res["rows"]:
            out.append(f"| {escape_md(d)} | {escape_md(row['check'])} | {row['value'] * 100:.1f} ± "
                       f"{row['std'] * 100:.1f} (n={row['n']}) "
                       f"| ≥ {row['threshold'] * 100:.0f} | {'passes' if row['passed'] else '**fails**'} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# The second edition's tables: ways to train for the worst group, per-group
# accuracies, the subgroup-explanation measurement, the first edition's records.
# ---------------------------------------------------------------------------

#: Ways to get a worst-group classifier, in table order: (label, worst-group metric, per-group metric).
#: The class head is the trained network's own (single-backbone methods only); the whole-network
#: true-group row exists for ``ce`` only (GEORGE's oracle).
STRATEGIES: list[tuple[str, str, str]] = [
    ("class head (the network's own)", "head_worst_group_acc", "head_per_group_acc"),
    ("ERM, last layer", "erm_worst_group_acc", "erm_per_group_acc"),
    ("inferred-group DRO, last layer", "worst_group_acc", "per_group_acc"),
    ("inferred-group DRO, whole network", "retrain_worst_group_acc", "retrain_per_group_acc"),
    ("true-group DRO, last layer", "oracle_worst_group_acc", "oracle_per_group_acc"),
    ("true-group DRO, whole network", "oracle_retrain_worst_group_acc", "oracle_retrain_per_group_acc"),
]

#: The two ways of training on inferred groups: variant name -> worst-group metric.
DRO_VARIANTS = {"last layer": "worst_group_acc", "whole network": "retrain_worst_group_acc"}

#: The commit whose ``results/`` last held the first edition's ``mnist-cifar`` records.
FIRST_EDITION_COMMIT = "e333ab46b521cb5d18a96cfb9aa3b301f3c32b06"

#: The commit whose ``results/`` last held the second edition's ``mnist-cifar`` records (contrast 0.5,
#: 3,000 training images x 15 epochs: validation missed the DRO gap by about a point).
SECOND_EDITION_COMMIT = "c2fa50fda53fefd603086a2a6287bc118a70860b"


def strategy_table(records: Iterable[Mapping[str, Any]], dataset: str,
                   strategies: list[tuple[str, str, str]] = STRATEGIES) -> dict[tuple[str, str], Any]:
    """``{(method, strategy label): Summary}`` of each strategy's worst-group accuracy (percent) on ``dataset``.

    Laid out for :func:`spreadcon.book.report.markdown_table` with methods as columns
    and strategies as rows. A record without a strategy's metric (an old record,
    or a method that has no such row) adds nothing to that cell.

    Example:
        >>> recs = [{"dataset": "p", "method": "ce", "seed": s, "metrics": {"worst_group_acc": v}}
        ...         for s, v in ((0, 0.4), (1, 0.6))]
        >>> t = strategy_table(recs, "p"); list(t), round(t["ce", "inferred-group DRO, last layer"].mean, 1)
        ([('ce', 'inferred-group DRO, last layer')], 50.0)
    """
    from spreadcon.book.report import summarize

    recs = [r for r in records if r["dataset"] == dataset]
    out = {}
    for label, metric, _ in strategies:
        for (method,), cell in summarize(recs, metric, by=("method",)).items():
            out[method, label] = cell
    return out


def per_group_table(records: Iterable[Mapping[str, Any]], dataset: str,
                    metric: str = "per_group_acc") -> dict[tuple[str, int], Any]:
    """``{(method, group id): Summary}`` (percent) over seeds of a per-group accuracy dict of the records.

    ``metric`` is one of the records' ``*per_group_acc`` keys (``{"0": acc, ...}``);
    records without it are skipped.

    Example:
        >>> recs = [{"dataset": "p", "method": "ce", "seed": s, "metrics": {"per_group_acc": {"0": a, "1": 0.5}}}
        ...         for s, a in ((0, 0.8), (1, 0.9))]
        >>> t = per_group_table(recs, "p"); round(t["ce", 0].mean, 1), t["ce", 1].n
        (85.0, 2)
    """
    from spreadcon.book.report import summarize

    flat = []
    for r in records:
        if r["dataset"] != dataset or metric not in r.get("metrics", {}):
            continue
        for g, acc in r["metrics"][metric].items():
            flat.append({"method": r["method"], "group": int(g), "seed": r["seed"], "metrics": {"acc": acc}})
    return summarize(flat, "acc", by=("method", "group"))


def paired_difference(records: Iterable[Mapping[str, Any]], dataset: str, method: str,
                      minuend: str, subtrahend: str, scale: float = 100.0):
    """``scale × (metrics[minuend] − metrics[subtrahend])`` of ``method`` on ``dataset``, paired by seed.

    Returns a :class:`spreadcon.book.report.Summary`, or None without a record that has both.

    Example:
        >>> recs = [{"dataset": "p", "method": "m", "seed": s, "metrics": {"a": a, "b": 0.1}}
        ...         for s, a in ((0, 0.3), (1, 0.5))]
        >>> round(paired_difference(recs, "p", "m", "a", "b").mean, 6)
        30.0
    """
    from spreadcon.book.report import summary_of

    rows = sorted((int(r["seed"]), scale * (float(r["metrics"][minuend]) - float(r["metrics"][subtrahend])))
                  for r in records if r["dataset"] == dataset and r["method"] == method
                  and minuend in r.get("metrics", {}) and subtrahend in r.get("metrics", {}))
    return summary_of([v for _, v in rows], [s for s, _ in rows]) if rows else None


def beyond_noise(a, b) -> tuple[float, float, str]:
    """Compare two :class:`~spreadcon.book.report.Summary` cells: ``(a − b, t·se, direction)``.

    ``t·se`` is the half width of the difference's 95% interval (NaN with one seed on a side).

    ``direction`` is ``"higher"`` / ``"lower"`` when the difference's 95% interval
    (:data:`~spreadcon.book.report.VERDICT_RULE`: Welch's t) excludes 0, ``"within
    noise"`` when it does not or a side has one seed, ``"not run"`` when a side is missing.

    Example:
        >>> from spreadcon.book.report import summary_of
        >>> beyond_noise(summary_of([5.0, 6.0], [0, 1]), summary_of([1.0, 2.0], [0, 1]))[2]
        'higher'
    """
    from spreadcon.book.report import AGREES, NOT_RUN, OPPOSITE, verdict

    v = verdict(a, b)
    direction = {NOT_RUN: "not run", AGREES: "higher", OPPOSITE: "lower"}.get(v.status, "within noise")
    return v.delta, v.half_width, direction


def explanation_rows(records: Iterable[Mapping[str, Any]], dataset: str, methods: list[str],
                     baseline: str = "ce") -> list[dict[str, Any]]:
    """Issue 17's explanation measurement: do a method's clusters follow the fine label instead of the groups?

    Per method with records: the AMI of its inferred clusters with the true
    groups (``inferred_group_ami``) and with the fine label
    (``inferred_fine_ami``: the digit on ``mnist-cifar``, the CIFAR class on
    ``cifar-patch``), both ×100; their paired difference ``fine − group``; and
    how each compares with ``baseline`` (:func:`beyond_noise`).

    Returns:
        ``[{"method", "group_ami", "fine_ami", "fine_minus_group", "n_groups", "group_vs_base",
        "fine_vs_base", "tilt_vs_base"}]``; ``*_vs_base`` are :func:`beyond_noise` triples (the
        baseline's own row compares with itself and says ``within noise`` or ``not run``).

    Example:
        >>> recs = [{"dataset": "p", "method": m, "seed": s, "metrics": {"inferred_group_ami": g + s / 100,
        ...          "inferred_fine_ami": f + s / 100}} for m, g, f in (("ce", .2, .1), ("spread", .05, .4))
        ...         for s in (0, 1, 2)]
        >>> rows = explanation_rows(recs, "p", ["ce", "spread"])
        >>> rows[1]["group_vs_base"][2], rows[1]["fine_vs_base"][2], round(rows[1]["fine_minus_group"].mean, 1)
        ('lower', 'higher', 35.0)
    """
    from spreadcon.book.report import summarize

    recs = [r for r in records if r["dataset"] == dataset]
    group = summarize(recs, "inferred_group_ami", by=("method",))
    fine = summarize(recs, "inferred_fine_ami", by=("method",))
    ngroups = summarize(recs, "inferred_n_groups", by=("method",), percent=False)
    tilt = {m: paired_difference(recs, dataset, m, "inferred_fine_ami", "inferred_group_ami") for m in methods}
    out = []
    for m in methods:
        if (m,) not in group and (m,) not in fine:
            continue
        out.append({"method": m, "group_ami": group.get((m,)), "fine_ami": fine.get((m,)),
                    "fine_minus_group": tilt[m], "n_groups": ngroups.get((m,)),
                    "group_vs_base": beyond_noise(group.get((m,)), group.get((baseline,))),
                    "fine_vs_base": beyond_noise(fine.get((m,)), fine.get((baseline,))),
                    "tilt_vs_base": beyond_noise(tilt[m], tilt.get(baseline))})
    return out


def explanation_markdown(rows: list[dict[str, Any]], names: Mapping[str, str] | None = None,
                         baseline: str = "ce") -> str:
    """A Markdown table of :func:`explanation_rows` (AMI ×100; differences against ``baseline``).

    Example:
        >>> from spreadcon.book.report import summary_of
        >>> s = summary_of([10.0, 12.0], [0, 1])
        >>> row = {"method": "ce", "group_ami": s, "fine_ami": s, "fine_minus_group": summary_of([0.0, 0.0], [0, 1]),
        ...        "n_groups": None, "group_vs_base": (0.0, 0.0, "within noise"),
        ...        "fine_vs_base": (0.0, 0.0, "within noise"), "tilt_vs_base": (0.0, 0.0, "within noise")}
        >>> print(explanation_markdown([row]).splitlines()[2])
        | ce | 11.0 ± 1.4 (n=2) | 11.0 ± 1.4 (n=2) | 0.0 ± 0.0 (n=2) | – | (baseline) |
    """
    from spreadcon.book.report import fmt

    names = dict(names or {})
    out = ["| method | AMI with the true groups (×100) | AMI with the fine label (×100) | fine − groups, "
           f"paired (×100) | clusters found | fine − groups, against {escape_md(names.get(baseline, baseline))} |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        d, se, direction = r["tilt_vs_base"]
        spread = "" if se != se else f" ± {se:.1f}"  # t·se; NaN: a side has one seed, no noise estimate
        against = ("(baseline)" if r["method"] == baseline else "–" if direction == "not run" else
                   f"{d:+.1f}{spread} ({direction})")
        ng = "–" if r["n_groups"] is None else f"{r['n_groups'].mean:.1f}"
        out.append(f"| {escape_md(names.get(r['method'], r['method']))} | {fmt(r['group_ami'])} | {fmt(r['fine_ami'])} "
                   f"| {fmt(r['fine_minus_group'])} | {ng} | {against} |")
    return "\n".join(out)


def group_counts(labels, names: list[str]) -> list[tuple[str, int, float]]:
    """``[(group name, count, fraction)]`` of integer group ids ``labels`` (a tensor or a sequence).

    Example:
        >>> group_counts([0, 0, 0, 1], ["a", "b", "c"])
        [('a', 3, 0.75), ('b', 1, 0.25), ('c', 0, 0.0)]
    """
    ids = [int(g) for g in labels]
    total = len(ids) or 1
    return [(n, ids.count(i), ids.count(i) / total) for i, n in enumerate(names)]


def records_at_commit(commit: str, *, task: str = "robustness", dataset: str | None = None,
                      preset: str | None = None, repo: str | None = None) -> list[dict[str, Any]]:
    """The good result records that ``results/`` held at git ``commit`` (e.g. :data:`FIRST_EDITION_COMMIT`).

    Read with ``git show``, so nothing is checked out, and judged as
    :func:`spreadcon.runs.records.load_records` judges files: a damaged or
    duplicate one is left out and named in one line on stderr. Returns ``[]``
    when git, the repository or the commit is not there (a shallow clone, an
    installed package), so a chapter can show the comparison only where
    history exists.
    """
    import subprocess
    from pathlib import Path

    from spreadcon.book.report import default_results_dir
    from spreadcon.runs.records import Records, check_record, name_problems

    cwd = repo or str(Path(default_results_dir()).parent)
    under = "/".join(p for p in ("results", task, dataset, preset) if p)
    try:
        names = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", commit, under + "/"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=30).stdout.split("\0")
        good, problems = [], []
        for name in (n for n in names if n.endswith(".json")):
            text = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=cwd, capture_output=True,
                                  text=True, check=True, timeout=30).stdout
            record, problem = check_record(Path(name), "results", text=text)
            if problem is None:
                good.append(record)
            else:
                problems.append(problem)
    except (OSError, subprocess.SubprocessError):
        return []
    name_problems(f"{p} (at commit {commit[:10]})" for p in problems)
    return Records(good, problems)
