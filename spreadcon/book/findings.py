"""What this book found: the intro's list, computed from the committed records.

Each function takes result records (as :func:`load` returns them, or any list
of record dicts) and returns one :class:`Finding`, or None when the records it
needs are absent. Every comparison in a finding is decided by
:func:`spreadcon.book.report.judge` (through :func:`~spreadcon.book.report.verdict`,
:func:`~spreadcon.book.report.paired_verdict` or
:func:`~spreadcon.book.report.average_lift`): the book's one verdict rule. The
words follow the verdicts, so a finding changes its wording by itself when new
records change a verdict.

Example:
    >>> recs = [{"task": "transfer", "dataset": "mnist", "preset": "cpu", "method": m, "seed": s,
    ...          "metrics": {"fine_test_acc": a + s / 100}}
    ...         for m, a in (("supcon", 0.90), ("spread", 0.95)) for s in range(3)]
    >>> print(cnce_lift(recs).text)  # doctest: +ELLIPSIS
    **Adding cNCE to SupCon.** At CPU scale SupCon + cNCE is above SupCon beyond seed noise on MNIST ...
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from spreadcon.book import report
from spreadcon.book.markup import escape_md

__all__ = ["Finding", "CHAPTERS", "DATASET_NAMES", "load", "collapse", "cnce_lift", "thanos_vs_supcon",
           "thanos_width", "training_length", "subgroups", "findings", "findings_markdown", "RunTimes", "run_times"]

#: Where each finding is shown: chapter document names (relative to ``book/``) and their titles.
CHAPTERS = {"01_class_collapse": "chapter 1", "04_thanos": "chapter 4", "05_transfer": "chapter 5",
            "06_robustness": "chapter 6"}

#: Dataset names as a page writes them; any other name is shown escaped, as it is.
DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "cifar100u": "CIFAR-100-U",
                 "tinyimagenet": "TinyImageNet", "mnist-cifar": "MNIST-CIFAR", "cifar-patch": "CIFAR-patch",
                 "waterbirds": "Waterbirds", "celeba": "CelebA", "isic": "ISIC"}

#: The presets the findings read: the 5-epoch grid, the 40-epoch training-length study and the
#: preset where SupCon's premise (collapse) is meant to hold.
CPU, LONG, COLLAPSE = "cpu", "cpu-long", "collapse"


class Finding(NamedTuple):
    """One item of the list: a Markdown paragraph and the chapters that show the evidence.

    Attributes:
        key: a short name (``"collapse"``, ``"cnce"``, ...).
        text: Markdown, starting with a bold headline; record strings in it are escaped.
        chapters: document names (keys of :data:`CHAPTERS`) that show it.
    """

    key: str
    text: str
    chapters: tuple[str, ...]

    def markdown(self) -> str:
        """The paragraph followed by links to its chapters: ``... (chapter 5).``"""
        links = ", ".join(f"[{CHAPTERS[c]}]({c})" for c in self.chapters)
        return f"{self.text} ({links})"


def load(results_root: str | Path) -> list[dict[str, Any]]:
    """Every committed record under ``results_root`` at its preset's alpha (the sweeps left out),
    through :func:`spreadcon.book.evidence.committed` (damaged or duplicate files are named and skipped)."""
    from spreadcon.book.evidence import committed

    return list(committed(results_root))


def _name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, escape_md(dataset))


def _select(records: Iterable[Mapping[str, Any]], *, task: str, preset: str) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("task") == task and r.get("preset") == preset
            and r.get("alpha_override") is None]


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _interval(v: report.Verdict, unit: str = " points", digits: int = 1) -> str:
    """``+2.9 ± 2.4 points`` (Δ and the half width of its 95% interval), or ``+2.9 points, one seed``."""
    if math.isnan(v.half_width):
        return f"{v.delta:+.{digits}f}{unit}, one seed: no noise estimate"
    return f"{v.delta:+.{digits}f} ± {v.half_width:.{digits}f}{unit}"


def _side(status: str) -> str:
    """A direction-only verdict's word: above, below or within noise."""
    if status in (report.AGREES, report.SMALLER) or status.startswith("direction agrees"):
        return "above"
    return {report.OPPOSITE: "below", report.NOT_RUN: "not run"}.get(status, "within noise")


def _paired_change(first: report.Summary, last: report.Summary) -> report.Verdict:
    """``last − first`` per seed (the seeds that have both), under the paired rule."""
    seeds = [s for s in last.seeds if s in first.seeds]
    diffs = [last.values[last.seeds.index(s)] - first.values[first.seeds.index(s)] for s in seeds]
    return report.paired_verdict(report.summary_of(diffs, seeds) if seeds else None)


def collapse(records: Iterable[Mapping[str, Any]]) -> Finding | None:
    """Does SupCon collapse its classes? Read on the held-out embeddings along the training-length
    study (``cpu-long``: the change in SupCon's within-class cosine from its first evaluated epoch to
    its last, paired by seed), and, where recorded, in the ``collapse`` preset on the training and the
    held-out images beside SupCon + cNCE."""
    records = list(records)
    cos = report.summarize_by_epoch(_select(records, task="transfer", preset=LONG), "within_class_cosine",
                                    percent=False)
    moves = {}
    for d in _ordered(cos):
        by_epoch = cos.get((d, "supcon"), {})
        if len(by_epoch) >= 2:
            e0, e1 = min(by_epoch), max(by_epoch)
            moves[d] = (by_epoch[e0], by_epoch[e1], e0, e1, _paired_change(by_epoch[e0], by_epoch[e1]))
    premise = _select(records, task="transfer", preset=COLLAPSE)
    train = report.summarize(premise, "train_within_class_cosine", percent=False)
    test = report.summarize(premise, "within_class_cosine", percent=False)
    premise_sets = [d for d in _ordered(train) if (d, "supcon") in train and (d, "supcon") in test]
    if not moves and not premise_sets:
        return None
    parts = []
    if moves:
        ways = {d: {"above": "rises", "below": "falls"}.get(_side(v.status), "does not change beyond seed noise")
                for d, (_, _, _, _, v) in moves.items()}
        same = len(set(ways.values())) == 1
        detail = _join([f"{_name(d)}{'' if same else ' ' + ways[d]} ({a.mean:.2f} after epoch {e0}, "
                        f"{b.mean:.2f} after epoch {e1}; change {_interval(v, '', 2)})"
                        for d, (a, b, e0, e1, v) in moves.items()])
        if all(w == "falls" for w in ways.values()):
            head = ("At CPU scale SupCon does not collapse its classes as it trains: they spread. Its "
                    "within-class cosine on held-out images (1 = every image of a class at one point) falls on ")
        elif all(w == "rises" for w in ways.values()):
            head = ("At CPU scale SupCon's classes contract as it trains: its within-class cosine on held-out "
                    "images (1 = every image of a class at one point) rises on ")
        else:
            head = ("At CPU scale training does not move SupCon's classes one way: its within-class cosine on "
                    "held-out images (1 = every image of a class at one point) ")
        parts.append(head + detail + ".")
    if premise_sets:
        cells = []
        for d in premise_sets:
            cell = (f"{train[d, 'supcon'].mean:.2f} on the training images and {test[d, 'supcon'].mean:.2f} "
                    f"held out on {_name(d)}")
            if (d, "spread") in test:
                v = report.verdict(test[d, "supcon"], test[d, "spread"])  # does cNCE lower the cosine?
                how = {"above": "lower beyond seed noise", "below": "higher beyond seed noise"}.get(
                    _side(v.status), "within seed noise of it")
                cell += f" (SupCon + cNCE: {test[d, 'spread'].mean:.2f} held out, {how})"
            cells.append(cell)
        parts.append(f"With a smaller training set trained for longer (the collapse preset: {_setting(premise)}) "
                     "SupCon's within-class cosine reaches " + "; ".join(cells) + ".")
    return Finding("collapse", "**Does SupCon collapse?** " + " ".join(parts), ("01_class_collapse", "05_transfer"))


def _setting(records: Sequence[Mapping[str, Any]], *keys: str) -> str:
    """The recorded configs' values of ``keys`` (each value listed once when runs differ), by default
    ``temperature 0.1, 1,000 training images, 100 epochs``; with one key just its values (``40``)."""
    def values(key: str) -> str:
        seen = sorted({r.get("provenance", {}).get("config", {}).get(key) for r in records} - {None})
        return "/".join(f"{v:,}" if isinstance(v, int) else f"{v:g}" for v in seen) or "?"

    if keys:
        return ", ".join(values(k) for k in keys)
    return f"temperature {values('temperature')}, {values('train_size')} training images, {values('epochs')} epochs"


def _paper_scale() -> str:
    """``a vit trained for 600 epochs``: the ``paper`` preset, as :mod:`spreadcon.presets` defines it."""
    from spreadcon.presets import resolve

    cfg = resolve("paper", "cifar10")
    name = {"vit": "ViT", "cnn": "CNN"}.get(cfg.encoder, escape_md(cfg.encoder))
    return f"a {name} trained for {cfg.epochs} epochs"


def cnce_lift(records: Iterable[Mapping[str, Any]], preset: str = CPU) -> Finding | None:
    """Does SupCon + cNCE beat SupCon on fine-label accuracy, per dataset (direction, then size on
    CIFAR-10 against the official README's row)?"""
    table = report.summarize(_select(records, task="transfer", preset=preset), "fine_test_acc")
    sets = [d for d in _ordered(table) if (d, "spread") in table and (d, "supcon") in table]
    if not sets:
        return None
    by = {d: report.verdict(table[d, "spread"], table[d, "supcon"]) for d in sets}
    groups = {side: [f"{_name(d)} ({_interval(by[d])})" for d in sets if _side(by[d].status) == side]
              for side in ("above", "within noise", "below")}
    said = []
    if groups["above"]:
        said.append(f"above SupCon beyond seed noise on {_join(groups['above'])}")
    if groups["within noise"]:
        said.append(f"within seed noise of it on {_join(groups['within noise'])}")
    if groups["below"]:
        said.append(f"below it beyond seed noise on {_join(groups['below'])}")
    text = f"**Adding cNCE to SupCon.** At CPU scale SupCon + cNCE is {'; '.join(said)}."
    if "cifar10" in sets:
        P = report.PAPER_CIFAR10_FINE_ACC
        claim = P["spread"] - P["supcon"]
        v = report.verdict(table["cifar10", "spread"], table["cifar10", "supcon"], claim)
        size = {report.AGREES: "the direction agrees and the size is at least half the paper's",
                report.SMALLER: "the direction agrees, and the size is smaller"}.get(
            v.status, "the direction does not agree beyond seed noise")
        text += (f" The paper reports {P['spread']} against {P['supcon']} on CIFAR-10 ({claim:+.1f} points, "
                 f"{_paper_scale()}); here {size}.")
    text += _cnce_where_collapse(records)
    return Finding("cnce", text, ("05_transfer", "04_thanos", "01_class_collapse"))


def _cnce_where_collapse(records: Iterable[Mapping[str, Any]]) -> str:
    """The same comparison in the ``collapse`` preset, where SupCon does collapse ('' without its records)."""
    table = report.summarize(_select(records, task="transfer", preset=COLLAPSE), "fine_test_acc")
    sets = [d for d in _ordered(table) if (d, "spread") in table and (d, "supcon") in table]
    if not sets:
        return ""
    parts = []
    for d in sets:
        v = report.verdict(table[d, "spread"], table[d, "supcon"])
        word = {"above": "above SupCon beyond seed noise", "below": "below SupCon beyond seed noise"}.get(
            _side(v.status), "within seed noise of SupCon")
        parts.append(f"{word} on {_name(d)} ({_interval(v)})")
    return f" Where SupCon does collapse (the collapse preset), SupCon + cNCE is {_join(parts)}."


def _ordered(table: Mapping[tuple, Any]) -> list[str]:
    """The datasets of a summary table: the paper's transfer datasets first, in its order."""
    names = {k[0] for k in table}
    first = [d for d in report.PAPER_TRANSFER_DATASETS if d in names]
    return first + sorted(names - set(first))


def thanos_vs_supcon(records: Iterable[Mapping[str, Any]], preset: str = CPU) -> Finding | None:
    """The paper's headline transfer claim (Thanos over SupCon, 11.1 points on average over five
    datasets) against the average over the datasets recorded at ``preset``."""
    table = report.summarize(_select(records, task="transfer", preset=preset), "fine_test_acc")
    v, covered = report.average_lift(table, "thanos", "supcon", report.PAPER_TRANSFER_DATASETS,
                                     report.PAPER_TRANSFER_LIFT)
    if not covered:
        return None
    k = len(report.PAPER_TRANSFER_DATASETS)
    each = {d: report.verdict(table[d, "thanos"], table[d, "supcon"]) for d in covered}
    above = [_name(d) for d in covered if _side(each[d].status) == "above"]
    side = _side(v.status)
    verdict = {"above": "above SupCon beyond seed noise", "below": "below SupCon beyond seed noise"}.get(
        side, "within seed noise of SupCon")
    text = (f"**Thanos against SupCon.** The paper reports that Thanos lifts fine-label accuracy over SupCon by "
            f"{report.PAPER_TRANSFER_LIFT} points on average over {k} datasets. At CPU scale, averaged over the "
            f"{len(covered)} of those {k} recorded here ({_join([_name(d) for d in covered])}), Thanos is "
            f"{verdict} ({_interval(v)}); dataset by dataset it is above SupCon beyond seed noise on "
            f"{len(above)} of {len(covered)} ({_join(above) if above else 'none'}).")
    if side == "above":
        text += (" That is agreement in direction on part of the paper's datasets, at a scale far from the "
                 "paper's; it does not reproduce the paper's number.")
    return Finding("thanos", text, ("05_transfer",))


def thanos_width(records: Iterable[Mapping[str, Any]],
                 presets: Sequence[str] = (CPU, LONG, COLLAPSE)) -> Finding | None:  # fmt: skip
    """Thanos (two networks, concatenated) against ``spread-pair`` (two SupCon + cNCE networks of
    different seeds, concatenated): the comparison at equal width, per (dataset, preset); the
    ``collapse`` preset's cells are named by the preset (it changes more than the epochs)."""
    records = list(records)
    cells = []
    for preset in presets:
        recs = _select(records, task="transfer", preset=preset)
        table = report.summarize(recs, "fine_test_acc")
        for d in _ordered(table):
            if (d, "thanos") in table and (d, "spread-pair") in table:
                epochs = _setting([r for r in recs if r["dataset"] == d and r["method"] == "thanos"], "epochs")
                how = "the collapse preset" if preset == COLLAPSE else f"{epochs} epochs"
                cells.append((d, how, report.verdict(table[d, "thanos"], table[d, "spread-pair"])))
    if not cells:
        return None
    groups = {side: [f"{_name(d)} at {how} ({_interval(v)})" for d, how, v in cells if _side(v.status) == side]
              for side in ("above", "within noise", "below")}
    said = [f"{word} on {_join(groups[side])}" for side, word in
            (("above", "above them beyond seed noise"), ("within noise", "within seed noise of them"),
             ("below", "below them beyond seed noise")) if groups[side]]
    text = ("**Thanos at equal width.** Thanos concatenates two networks. Against two SupCon + cNCE networks "
            f"concatenated (the same width, no autoencoder) it is {'; '.join(said)}.")
    n_above = len(groups["above"])
    if not n_above:
        text += (" At CPU scale nothing here credits the autoencoder with Thanos's lift: a second SupCon + cNCE "
                 "network does as well.")
    else:
        text += (f" So the autoencoder adds something beyond a second network in {n_above} of these {len(cells)} "
                 "comparisons; in the others a second SupCon + cNCE network does as well.")
    return Finding("width", text, ("04_thanos", "05_transfer"))


def training_length(records: Iterable[Mapping[str, Any]], method: str = "spread") -> Finding | None:
    """Does ``method``'s lift over SupCon grow with training? The training-length study
    (``cpu-long``): the lift after the last evaluated epoch minus after the first, paired by seed."""
    long = _select(records, task="transfer", preset=LONG)
    sets = sorted({r["dataset"] for r in long})
    rows = []
    for d in [x for x in report.PAPER_TRANSFER_DATASETS if x in sets] + [x for x in sets
                                                                           if x not in report.PAPER_TRANSFER_DATASETS]:
        lift = report.lift_by_epoch(long, d, method, "supcon")
        if len(lift) >= 2:
            e0, e1 = min(lift), max(lift)
            v = _paired_change(lift[e0], lift[e1])
            word = {"above": "grows", "below": "shrinks"}.get(_side(v.status), "does not change beyond seed noise")
            rows.append(f"{word} on {_name(d)} ({lift[e0].mean:+.1f} points after epoch {e0}, "
                        f"{lift[e1].mean:+.1f} after epoch {e1})")
    if not rows:
        return None
    who = "SupCon + cNCE" if method == "spread" else escape_md(method)
    text = (f"**Training longer.** Along training, {who}'s lift over SupCon in fine-label accuracy "
            f"{'; '.join(rows)}. These are directions at CPU scale (a small CNN); the paper's gap comes from "
            f"{_paper_scale()}.")
    return Finding("length", text, ("05_transfer",))


def subgroups(records: Iterable[Mapping[str, Any]], preset: str = CPU) -> Finding | None:
    """Does clustering Thanos's embeddings find the hidden groups better than clustering a CE model's
    (GEORGE's features)? AMI ×100 on the robustness datasets recorded at ``preset``, and the minority
    recall of Thanos's clusters."""
    recs = _select(records, task="robustness", preset=preset)
    ami = report.summarize(recs, "inferred_group_ami")
    sets = sorted(d for d, m in ami if m == "thanos" and (d, "ce") in ami)
    if not sets:
        return None
    each = {d: report.verdict(ami[d, "thanos"], ami[d, "ce"]) for d in sets}
    words = {"above": "better than", "below": "worse than", "within noise": "no better than"}
    sides = {d: _side(v.status) for d, v in each.items()}
    scores = {d: f"AMI ×100 {_interval(each[d], '')}" for d in sets}
    if len(set(sides.values())) == 1:
        where = "both" if len(sets) == 2 else f"all {len(sets)}" if len(sets) > 2 else "the one"
        verdict = (f"{words[sides[sets[0]]]} clustering a cross-entropy model's on {where} "
                   f"({'; '.join(f'{_name(d)}: {scores[d]}' for d in sets)})")
    else:
        verdict = "; ".join(f"{words[sides[d]]} clustering a cross-entropy model's on {_name(d)} ({scores[d]})"
                            for d in sets)
    recall = [r["metrics"]["minority_recall"] for r in recs
              if r["method"] == "thanos" and r["dataset"] in sets and r["metrics"].get("minority_recall") is not None]
    text = (f"**Finding the hidden groups.** On the offline robustness proxies, clustering Thanos's embeddings "
            f"recovers the hidden groups {verdict}.")
    if recall:
        hits = sum(x > 0 for x in recall)
        text += (f" In none of its {len(recall)} runs does a cluster isolate a minority group." if not hits else
                 f" A cluster isolates part of a minority group in {hits} of its {len(recall)} runs.")
    text += " The paper's real robustness datasets are not run on this machine."
    return Finding("subgroups", text, ("06_robustness",))




#: The list, in the order the intro shows it.
ORDER = (collapse, cnce_lift, thanos_vs_supcon, thanos_width, training_length, subgroups)


def findings(records: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Every finding whose records exist, in :data:`ORDER`."""
    records = list(records)
    return [f for f in (fn(records) for fn in ORDER) if f is not None]


def findings_markdown(records: Iterable[Mapping[str, Any]]) -> str:
    """The intro's numbered list, one paragraph per finding with links to its chapters."""
    items = findings(records)
    if not items:
        return "No committed records yet: every finding of this book comes from them."
    return "\n".join(f"{i}. {f.markdown()}" for i, f in enumerate(items, 1))


class RunTimes(NamedTuple):
    """The README's newest measurement of how long each page takes to execute.

    Attributes:
        machine: what it was measured on, as the README says (``the 2-core CPU this book is built on``).
        quiet: whether the machine was quiet (else it was busy: an upper bound).
        condition: the column's note (``fresh clone, load ~6``).
        times: ``{page: time}`` as the table writes them (``"63 s"``), in table order.
    """

    machine: str
    quiet: bool
    condition: str
    times: dict[str, str]

    def sentence(self) -> str:
        """One sentence of plain text (for ``{glue:text}``, which shows text as it is, parsing no
        Markdown): the machine, quiet or busy, and each page's time."""
        state = "on a quiet machine" if self.quiet else "while other jobs kept the machine busy, so an upper bound"
        listed = "; ".join(f"{page} {t}" for page, t in self.times.items())
        return f"Measured on {self.machine} ({self.condition}), {state}: {listed}."


def run_times(readme: str) -> RunTimes:
    """The newest (last) column of the README's "How long it takes" table.

    The section's first sentence names the machine (``Measured on ...``); the last column's header
    says ``quiet`` or ``busy``, with its conditions in parentheses.

    Raises:
        ValueError: the section, the table, the machine or the word quiet/busy is missing, so the
            page cannot state a time without saying where and how it was measured.

    Example:
        >>> text = ("### How long it takes\\n\\nMeasured on a 2-core CPU, with an empty cache.\\n\\n"
        ...         "| page | busy (fresh clone) |\\n|---|---|\\n| 1. Class collapse | 63 s |\\n")
        >>> run_times(text).sentence()
        'Measured on a 2-core CPU (fresh clone), while other jobs kept the machine busy, so an upper bound: 1. Class collapse 63 s.'
    """
    section = re.search(r"^#+ How long it takes\s*$(.*?)(?=^#+ |\Z)", readme, re.M | re.S)
    if not section:
        raise ValueError("README: no 'How long it takes' section")
    body = section.group(1)
    machine = re.search(r"Measured on (.+?)(?: \(|[.,;]\s)", " ".join(body.split()))
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.strip().startswith("|")]
    if not machine or len(rows) < 3 or rows[0][0].lower() != "page":
        raise ValueError("README: the timing section needs 'Measured on ...' and a table whose first column is 'page'")
    header = rows[0][-1]
    state = re.match(r"\s*(quiet|busy)\b\s*(?:\((.*)\))?", header, re.I)
    if not state:
        raise ValueError(f"README: the newest timing column {header!r} does not say quiet or busy")
    times = {r[0].replace("`", ""): r[-1].replace("`", "") for r in rows[2:] if len(r) == len(rows[0])}  # as text
    return RunTimes(machine.group(1), state.group(1).lower() == "quiet", (state.group(2) or "").strip(), times)
