"""Published worst-group results on Waterbirds and CelebA: the numbers chapter 6 sets the paper's
"state of the art" claim beside.

The numbers live in ``book/data/published_worst_group.csv``, one row per (method, dataset):
``worst_group`` and ``average`` test accuracy in percent as each paper reports them (``average``
may be empty where no source confirmed it), ``group_labels`` (where the method uses group labels:
``training``, ``validation`` or ``none``), ``cite`` (a key of ``book/references.bib``) and
``checked`` (how the number was confirmed). The file is read like any other input (STYLE 27):
every field is checked, and a bad or duplicate row raises :class:`ValueError` naming it.

Example:
    >>> rows = load_published()
    >>> best = best_worst_group(rows, "celeba", labels=("training", "validation"))
    >>> best.method, best.worst_group
    ('SSA', 89.8)
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from spreadcon.book.markup import escape_md

__all__ = ["PUBLISHED_CSV", "DATASETS", "LABEL_USE", "Published", "load_published", "best_worst_group",
           "published_markdown"]

#: The committed table of published results.
PUBLISHED_CSV = Path(__file__).resolve().parents[2] / "book" / "data" / "published_worst_group.csv"
DATASETS = ("waterbirds", "celeba")
#: Where a method uses group labels, and how the page says it.
LABEL_USE = {"training": "training and validation", "validation": "validation only", "none": "none"}
_COLUMNS = ["method", "dataset", "worst_group", "average", "group_labels", "cite", "checked"]
_CITE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Published:
    """One published result: a method on a dataset, accuracies in percent (``average`` may be NaN)."""

    method: str
    dataset: str
    worst_group: float
    average: float
    group_labels: str
    cite: str
    checked: str


def _percent(text: str, where: str, *, required: bool) -> float:
    if text.strip() == "" and not required:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise ValueError(f"{where}: {text!r} is not a percentage in [0, 100]")
    return value


def load_published(path: str | Path = PUBLISHED_CSV) -> list[Published]:
    """The rows of ``path``, checked field by field.

    Raises:
        ValueError: a header other than the expected columns, an unknown dataset or label use, a
            worst-group or average accuracy outside [0, 100] (or a missing worst group), a malformed
            cite key, a worst group above the average, or a (method, dataset) pair given twice.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != _COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} (expected {_COLUMNS})")
        rows, seen = [], set()
        for line, raw in enumerate(reader, start=2):
            where = f"{Path(path).name} line {line}"
            if None in raw or any(v is None for v in raw.values()):
                raise ValueError(f"{where}: wrong number of fields")
            method, dataset = raw["method"].strip(), raw["dataset"].strip()
            if not method:
                raise ValueError(f"{where}: empty method")
            if dataset not in DATASETS:
                raise ValueError(f"{where}: unknown dataset {dataset!r} (expected one of {DATASETS})")
            if raw["group_labels"] not in LABEL_USE:
                raise ValueError(f"{where}: group_labels {raw['group_labels']!r} not in {sorted(LABEL_USE)}")
            if not _CITE.match(raw["cite"]):
                raise ValueError(f"{where}: cite key {raw['cite']!r} is malformed")
            worst = _percent(raw["worst_group"], f"{where} worst_group", required=True)
            avg = _percent(raw["average"], f"{where} average", required=False)
            if worst > avg:  # NaN compares False: a missing average passes
                raise ValueError(f"{where}: worst group {worst} above the average {avg}")
            if (method, dataset) in seen:
                raise ValueError(f"{where}: {method} on {dataset} given twice")
            seen.add((method, dataset))
            rows.append(Published(method, dataset, worst, avg, raw["group_labels"], raw["cite"],
                                  raw["checked"].strip()))
    return rows


def best_worst_group(rows: Iterable[Published], dataset: str,
                     labels: Sequence[str] = tuple(LABEL_USE)) -> Published | None:
    """The row with the highest worst-group accuracy on ``dataset`` among methods whose label use
    is in ``labels`` (None when there is none); ties go to the first row."""
    best = None
    for r in rows:
        if r.dataset == dataset and r.group_labels in labels and (best is None or r.worst_group > best.worst_group):
            best = r
    return best


def published_markdown(rows: Sequence[Published]) -> str:
    """One line per method: where it uses group labels, and worst group / average on each dataset
    ("–" where a number was not confirmed)."""
    methods = list(dict.fromkeys(r.method for r in rows))
    cell = {(r.method, r.dataset): r for r in rows}

    def fmt(r: Published | None) -> str:
        if r is None:
            return "–"
        return f"{r.worst_group:.1f} / " + ("–" if math.isnan(r.average) else f"{r.average:.1f}")

    lines = ["| method | group labels used | Waterbirds: worst group / average (%) "
             "| CelebA: worst group / average (%) |", "|---|---|---|---|"]
    for m in methods:
        label = next(r.group_labels for r in rows if r.method == m)
        lines.append(f"| {escape_md(m)} | {LABEL_USE[label]} | {fmt(cell.get((m, 'waterbirds')))} "
                     f"| {fmt(cell.get((m, 'celeba')))} |")
    return "\n".join(lines)
