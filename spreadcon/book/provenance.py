"""The provenance appendix's tables: which records a chapter reads, and what fills its empty cells.

The chapters state findings; where their numbers come from (source hashes,
commits, hash schemes) and the commands that would fill a cell marked
*not run yet* are gathered here, for ``book/appendix_provenance.md``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from spreadcon.book.markup import escape_md
from spreadcon.book.report import reproduce_command


def _short(values: Iterable[Any], n: int = 8) -> str:
    """``"1a2b3c4d (3), 5e6f7a8b (1)"``: each distinct value, cut to ``n`` characters, with its count."""
    counts: dict[str, int] = {}
    for v in values:
        key = "unknown" if v is None else str(v)[:n]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{escape_md(k)} ({c})" for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def records_markdown(records: Iterable[Mapping[str, Any]]) -> str:
    """One row per (dataset, preset): methods, number of records, source hashes, commits, hash schemes.

    Every string from a record is escaped. A record without a source hash or
    (written before hashes were recorded) counts as ``unknown``; one with a hash
    but no scheme was written before schemes were numbered, under scheme 1.

    Example:
        >>> rec = lambda m, h: {"dataset": "mnist", "preset": "cpu", "method": m,
        ...                     "provenance": {"source_hash": h, "git_commit": "c" * 40, "hash_scheme": 2}}
        >>> print(records_markdown([rec("ce", "a" * 64), rec("thanos", "b" * 64), rec("ce", "a" * 64)]))
        | dataset | preset | methods | records | source hashes (records) | commits (records) | hash scheme (records) |
        |---|---|---|---|---|---|---|
        | mnist | cpu | ce, thanos | 3 | aaaaaaaa (2), bbbbbbbb (1) | cccccccc (3) | 2 (3) |
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((str(r["dataset"]), str(r["preset"])), []).append(r)
    if not groups:
        return "No records yet."
    lines = ["| dataset | preset | methods | records | source hashes (records) | commits (records) "
             "| hash scheme (records) |", "|---|---|---|---|---|---|---|"]
    for (dataset, preset), recs in sorted(groups.items()):
        prov = [r.get("provenance", {}) for r in recs]
        methods = ", ".join(escape_md(m) for m in sorted({str(r["method"]) for r in recs}))
        lines.append(f"| {escape_md(dataset)} | {escape_md(preset)} | {methods} | {len(recs)} | "
                     f"{_short(p.get('source_hash') for p in prov)} | {_short(p.get('git_commit') for p in prov)} | "
                     f"{_short(p.get('hash_scheme', 1 if p.get('source_hash') else None) for p in prov)} |")
    return "\n".join(lines)


def missing_commands(records: Iterable[Mapping[str, Any]], preset: str, datasets: Sequence[str],
                     methods: Sequence[str], *, seeds: Sequence[int] = (0, 1, 2)) -> list[str]:
    """The ``reproduce`` commands that fill every (dataset, method) of ``preset`` without a record.

    One command per dataset, naming only its missing methods, in the order given.

    Example:
        >>> recs = [{"dataset": "mnist", "preset": "cpu", "method": "ce"}]
        >>> missing_commands(recs, "cpu", ["mnist", "cifar10"], ["ce", "thanos"], seeds=[0])
        ['python -m spreadcon reproduce --preset cpu --datasets mnist --methods thanos --seeds 0', \
'python -m spreadcon reproduce --preset cpu --datasets cifar10 --methods ce thanos --seeds 0']
    """
    have = {(r["dataset"], r["method"]) for r in records if r["preset"] == preset}
    out = []
    for d in datasets:
        todo = [m for m in methods if (d, m) not in have]
        if todo:
            out.append(reproduce_command(preset, [d], todo, seeds))
    return out
