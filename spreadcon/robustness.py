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

__all__ = ["VALIDATION_RULE", "THRESHOLDS", "VARIANTS", "proxy_validation", "validation_markdown"]

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
            out.append(f"| {d} | no ERM records yet | | | |")
        for row in res["rows"]:
            out.append(f"| {d} | {row['check']} | {row['value'] * 100:.1f} ± {row['std'] * 100:.1f} (n={row['n']}) "
                       f"| ≥ {row['threshold'] * 100:.0f} | {'passes' if row['passed'] else '**fails**'} |")
    return "\n".join(out)
