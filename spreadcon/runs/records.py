"""Result records (CONTRACT section 3): one JSON file per finished experiment.

Layout under the results directory (``results/`` in the repository)::

    <task>/<dataset>/<preset>/<method>_seed<N>.json
    <task>/<dataset>/<preset>/<method>_seed<N>_alpha<A>.json   # when --alpha was given

``task`` is ``transfer`` or ``robustness``; ``A`` is written with ``repr``-free
``%g`` formatting, e.g. ``alpha0.25``. Every record holds ``dataset``,
``method``, ``preset``, ``seed``, ``task``, ``metrics`` and ``provenance``
(``git_commit``, ``torch_version``, ``device``, ``started_at``,
``wall_time_s``, ``config``) and, in every record written since it was
added, ``source_hash`` (:func:`source_hash`). Files are written atomically
(temp file + ``os.replace``) as strict JSON (no ``NaN`` or ``Infinity``), so a
reader never sees half a record.

**What counts.** A file under a task folder counts as a record only when it
is strict JSON, passes :func:`validate_record` (types included: ``true`` is
not an accuracy, ``metrics`` is an object) and sits at :func:`canonical_path`
of its own contents. Anything else is **damaged** (unparseable, wrong schema)
or a **duplicate** (a valid record under another name, such as
``spread_seed0 (1).json``). :func:`load_records` returns the good records and
names each file that does not count, in one line, once per process; it never
raises into a table. ``python -m spreadcon reproduce`` names them too, moves a
damaged record aside to ``<name>.damaged`` and reruns its cell, and never
counts a duplicate.

Tables that put records side by side say under them whether the rows come from
different source code (:func:`source_hash_note`); records written before the
hash existed count as "hash unknown".

Example:
    >>> rec = make_record(dataset="mnist", method="spread", preset="smoke", seed=0,
    ...     task="transfer", metrics={"fine_test_acc": 0.5, "coarse_test_acc": 0.9},
    ...     config={}, started_at="2024-01-01T00:00:00+00:00", wall_time_s=1.0)
    >>> validate_record(rec)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Iterable, NamedTuple

import torch

from spreadcon.util.atomic import atomic_write

__all__ = [
    "REQUIRED_KEYS", "PROVENANCE_KEYS", "METRIC_KEYS", "record_path", "make_record",
    "validate_record", "write_record", "load_records", "git_commit", "device_name",
    "source_hash", "source_hashes", "source_hash_note", "NAME_PATTERN", "parse_record", "dumps_record",
    "canonical_path", "RecordProblem", "Records", "DAMAGED", "DUPLICATE", "check_record", "record_files",
    "scan_records", "name_problems",
]

REQUIRED_KEYS = ("dataset", "method", "preset", "seed", "task", "metrics", "provenance")
PROVENANCE_KEYS = ("git_commit", "torch_version", "device", "started_at", "wall_time_s", "config")
METRIC_KEYS = {
    "transfer": ("fine_test_acc", "coarse_test_acc"),
    "robustness": ("worst_group_acc", "avg_acc"),
}


def git_commit(repo: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the source tree, plus ``-dirty`` if it has changes.

    Returns ``"unknown"`` outside a git checkout (e.g. an installed wheel).
    """
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


# What trains and evaluates: a change here can change a result, so it changes the hash.
# The book's helpers (spreadcon/book, spreadcon/theory) and the benchmarks are left out:
# editing a table formatter must not look like new training code.
TRAINING_CODE = ("__init__.py", "__main__.py", "methods.py", "presets.py", "distributed.py",
                 "losses", "models", "data", "train", "eval", "runs", "util")
HASH_SCHEME = 2  # 1: every spreadcon/**/*.py (records written before the layers); 2: TRAINING_CODE only


def source_hash(package: str | Path | None = None, *, parts: tuple[str, ...] | None = TRAINING_CODE) -> str:
    """SHA-256 of the training code's source (scheme 2): the ``**/*.py`` of ``parts``, sorted by path.

    For each file in order, its path relative to the package's parent folder,
    in POSIX form and UTF-8 (``"spreadcon/losses/contrastive.py"``), then its
    bytes, are fed to one SHA-256; nothing separates them. Byte-identical source
    gives the same hash on any machine and checkout, committed or not;
    ``__pycache__`` holds no ``.py`` files, so it does not count.

    Args:
        package: the package folder; default this package (``spreadcon/``).
        parts: the files and folders of ``package`` that count (``TRAINING_CODE``);
            ``None`` hashes every file, as scheme 1 did.

    Returns:
        64 lowercase hex digits.
    """
    root = Path(package) if package is not None else Path(__file__).resolve().parents[1]

    def counts(p: Path) -> bool:
        return parts is None or p.relative_to(root).parts[0] in parts

    files = sorted((p.relative_to(root.parent).as_posix(), p) for p in root.rglob("*.py")
                   if p.is_file() and counts(p))
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(rel.encode("utf-8"))
        digest.update(path.read_bytes())
    return digest.hexdigest()


def source_hashes(records: list[dict[str, Any]]) -> dict[str | None, int]:
    """How many of ``records`` carry each ``provenance.source_hash`` (None: hash unknown)."""
    counts: dict[str | None, int] = {}
    for rec in records:
        key = (rec.get("provenance") or {}).get("source_hash")
        counts[key] = counts.get(key, 0) + 1
    return counts


def source_hash_note(records: list[dict[str, Any]]) -> str:
    """One line for under a table of ``records``: whether their source hashes differ.

    Returns ``""`` when every record carries the same hash (nothing to say);
    otherwise, e.g. ``"Rows come from 2 different source hashes (1a2b3c4d: 6
    records, 5e6f7a8b: 3) and 2 records with hash unknown (written before
    source hashes were recorded); their training code may differ."``

    Example:
        >>> source_hash_note([{"provenance": {"source_hash": "ab" * 32}}] * 2)
        ''
        >>> source_hash_note([{"provenance": {}}])
        '1 record with hash unknown (written before source hashes were recorded): its source cannot be compared.'
    """
    counts = source_hashes(records)
    unknown = counts.pop(None, 0)
    known = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if not unknown and len(known) <= 1:
        return ""

    def plural(n: int, word: str) -> str:
        return f"{n} {word}" + ("" if n == 1 else "s")

    unknown_part = (f"{plural(unknown, 'record')} with hash unknown "
                    "(written before source hashes were recorded)") if unknown else ""
    if not known:
        return f"{unknown_part}: {'its' if unknown == 1 else 'their'} source cannot be compared."
    listed = ", ".join(f"{h[:8]}: {plural(n, 'record')}" for h, n in known)
    if len(known) == 1:
        return f"All rows with a hash share one source hash ({listed}); {unknown_part}, whose source may differ."
    tail = f" and {unknown_part}" if unknown else ""
    return f"Rows come from {len(known)} different source hashes ({listed}){tail}; their training code may differ."


def device_name(device: str | torch.device) -> str:
    """``"cpu"`` or the CUDA card's name, e.g. ``"NVIDIA H200"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def record_path(results_dir: str | Path, *, task: str, dataset: str, preset: str, method: str,
                seed: int, alpha: float | None = None) -> Path:
    """Where a record lives: ``<results>/<task>/<dataset>/<preset>/<method>_seed<N>[_alpha<A>].json``."""
    name = f"{method}_seed{int(seed)}" + ("" if alpha is None else f"_alpha{alpha:g}")
    return Path(results_dir) / task / dataset / preset / f"{name}.json"


def make_record(*, dataset: str, method: str, preset: str, seed: int, task: str,
                metrics: dict[str, float], config: dict[str, Any], started_at: str,
                wall_time_s: float, device: str = "cpu", git: str | None = None,
                extra: dict[str, Any] | None = None,
                provenance_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble (and validate) a record dict.

    Args:
        extra: top-level keys added to the record.
        provenance_extra: keys merged into ``provenance`` (e.g. ``precision``,
            ``resumed_from_epoch``, ``attempts``, ``train_time_total_s``); a
            ``source_hash`` here wins over the one computed now, so a run can
            pass the hash it took when it started.

    ``provenance.source_hash`` is :func:`source_hash` at the time of the call
    unless ``provenance_extra`` gives one.
    """
    record = {
        "dataset": dataset, "method": method, "preset": preset, "seed": int(seed), "task": task,
        "metrics": {k: _metric(v) for k, v in metrics.items()},
        "provenance": {
            "git_commit": git if git is not None else git_commit(),
            "torch_version": torch.__version__,
            "device": device,
            "started_at": started_at,
            "wall_time_s": float(wall_time_s),
            "config": dict(config),
            "source_hash": source_hash(),
            "hash_scheme": HASH_SCHEME,
        },
    }
    record["provenance"].update(provenance_extra or {})
    record.update(extra or {})
    validate_record(record)
    return record


def _metric(value: Any) -> float | dict[str, float]:
    """A metric as a record keeps it: a float, or ``{name: float}`` for a per-group breakdown."""
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return float(value)


# ---------------------------------------------------------------------------
# What a record must be (validate_record), read strictly (read_record)
# ---------------------------------------------------------------------------

#: ``dataset``, ``method`` and ``preset`` name a folder or a file: a letter or digit, then letters,
#: digits, ``.``, ``_`` or ``-``. A record whose names would lead elsewhere (``../x``) is damaged.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: ``provenance.precision``: what training used.
PRECISIONS = ("fp32", "bf16", "fp16")


def _is_number(value: Any) -> bool:
    """An int or a float, and finite; ``True`` is not a number here (it would count as 100%)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(where: str, value: Any, *, accuracy: bool = False, minimum: float | None = None) -> None:
    if not _is_number(value):
        raise ValueError(f"record {where}={value!r} is not a finite number")
    if accuracy and not 0.0 <= value <= 1.0:
        raise ValueError(f"record {where}={value!r} is not a fraction in [0, 1]")
    if minimum is not None and value < minimum:
        raise ValueError(f"record {where}={value!r} is below {minimum:g}")


def _check_metrics(where: str, metrics: Any) -> None:
    """``{name: number}``, where a name ending ``acc`` is a fraction in [0, 1] and a name ending
    ``per_group_acc`` may instead hold ``{group: fraction}``."""
    if not isinstance(metrics, dict):
        raise ValueError(f"record {where} is a {type(metrics).__name__}, not an object of metrics")
    for key, value in metrics.items():
        if isinstance(value, dict):  # a per-group breakdown, {group: accuracy}
            if not key.endswith("per_group_acc") or not all(_is_number(v) and 0.0 <= v <= 1.0
                                                            for v in value.values()):
                raise ValueError(f"record metric {key}={value!r} is not a per-group accuracy breakdown")
            continue
        _check_number(f"{where}.{key}", value, accuracy=key.endswith("acc"))


def _check_object(where: str, value: Any, required: tuple[str, ...]) -> None:
    """``value`` is a JSON object holding the keys ``required``."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} is a {type(value).__name__}, not a JSON object")
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"{where} is missing keys {missing}")


def _check_provenance(prov: Any) -> None:
    _check_object("record provenance", prov, PROVENANCE_KEYS)
    for key in ("git_commit", "torch_version", "device", "started_at"):
        if not isinstance(prov[key], str):
            raise ValueError(f"record provenance.{key}={prov[key]!r} is not a string")
    try:
        datetime.fromisoformat(prov["started_at"])
    except ValueError:
        raise ValueError(f"record provenance.started_at={prov['started_at']!r} is not ISO 8601") from None
    _check_number("provenance.wall_time_s", prov["wall_time_s"], minimum=0.0)
    if not isinstance(prov["config"], dict):
        raise ValueError(f"record provenance.config is a {type(prov['config']).__name__}, not an object")
    digest = prov.get("source_hash")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ValueError(f"record provenance.source_hash={digest!r} is not 64 lowercase hex digits")
    if "precision" in prov and prov["precision"] not in PRECISIONS:
        raise ValueError(f"record provenance.precision={prov['precision']!r}; valid: {', '.join(PRECISIONS)}")
    for key, low in (("attempts", 1), ("resumed_from_epoch", 0), ("hash_scheme", 1)):
        value = prov.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise ValueError(f"record provenance.{key}={value!r} is not an int >= {low}")
    if prov.get("train_time_total_s") is not None:
        _check_number("provenance.train_time_total_s", prov["train_time_total_s"], minimum=0.0)


def validate_record(record: Any) -> None:
    """Check a record against CONTRACT section 3, types included.

    A record is a JSON object with string ``dataset``, ``method``, ``preset``
    (each matching :data:`NAME_PATTERN`) and ``task`` (a key of
    :data:`METRIC_KEYS`); an int ``seed`` (``true`` is not one); ``metrics``, an
    object of finite numbers with every ``*acc`` a fraction in [0, 1] (a
    ``*per_group_acc`` may be ``{group: fraction}``) that holds the task's
    :data:`METRIC_KEYS`; and ``provenance``, an object with
    :data:`PROVENANCE_KEYS` (strings, an ISO 8601 ``started_at``, a finite
    ``wall_time_s``, an object ``config``) and, where present, a well-formed
    ``source_hash``, ``precision``, ``attempts``, ``resumed_from_epoch`` and
    ``train_time_total_s``. ``alpha_override`` is null or in [0, 1];
    ``metrics_by_epoch`` maps epoch numbers to metrics objects; ``embedding_map`` is an int
    ``coarse``, equally long lists ``fine`` (ints) and ``xy`` (pairs of finite numbers), and finite
    ``explained`` and ``scale``.

    Raises:
        ValueError: one line naming the first thing wrong.
    """
    _check_object("record", record, REQUIRED_KEYS)
    for key in ("dataset", "method", "preset", "task"):
        if not (isinstance(record[key], str) and NAME_PATTERN.fullmatch(record[key])):
            raise ValueError(f"record {key}={record[key]!r} is not a name (letters, digits, '.', '_', '-')")
    task = record["task"]
    if task not in METRIC_KEYS:
        raise ValueError(f"record task={task!r}; valid: {', '.join(METRIC_KEYS)}")
    if not isinstance(record["seed"], int) or isinstance(record["seed"], bool):
        raise ValueError(f"record seed={record['seed']!r} is not an int")
    _check_provenance(record["provenance"])
    _check_metrics("metrics", record["metrics"])
    missing = [k for k in METRIC_KEYS[task] if k not in record["metrics"]]
    if missing:
        raise ValueError(f"record metrics are missing {missing} for task {task!r}")
    if record.get("alpha_override") is not None:
        _check_number("alpha_override", record["alpha_override"], accuracy=True)
    if record.get("embedding_map") is not None:
        _check_map(record["embedding_map"])
    by_epoch = record.get("metrics_by_epoch")
    if by_epoch is not None:
        if not isinstance(by_epoch, dict) or not all(str(e).isdigit() for e in by_epoch):
            raise ValueError("record metrics_by_epoch is not an object keyed by epoch numbers")
        for epoch, metrics in by_epoch.items():
            _check_metrics(f"metrics_by_epoch.{epoch}", metrics)


def _check_map(emap: Any) -> None:
    """``embedding_map`` (:func:`spreadcon.eval.geometry.class_map`): checked before a page draws it."""
    _check_object("record embedding_map", emap, ("coarse", "fine", "xy", "explained", "scale"))
    fine, xy = emap["fine"], emap["xy"]
    ints = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if not (ints(emap["coarse"]) and isinstance(fine, list) and all(ints(f) for f in fine)):
        raise ValueError("record embedding_map.coarse / .fine are not integer class ids")
    if not (isinstance(xy, list) and len(xy) == len(fine)
            and all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in xy)):
        raise ValueError("record embedding_map.xy is not one [x, y] pair of finite numbers per fine label")
    for key in ("explained", "scale"):
        _check_number(f"embedding_map.{key}", emap[key], minimum=0.0)


def _not_a_number(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _strict_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: a float that overflows to infinity
        raise ValueError(f"{text} overflows a float")
    return value


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        twice = sorted({k for k, _ in pairs if sum(1 for j, _ in pairs if j == k) > 1})
        raise ValueError(f"key {twice[0]!r} appears twice in one object")
    return out


def parse_record(text: str) -> dict[str, Any]:
    """A record from its JSON text, strictly: no ``NaN``/``Infinity``, no key given twice; validated.

    Raises:
        ValueError: the text is not JSON, or not a valid record (:func:`validate_record`).
    """
    try:
        record = json.loads(text, parse_constant=_not_a_number, parse_float=_strict_float,
                            object_pairs_hook=_no_repeated_keys)
    except RecursionError:
        raise ValueError("nested too deeply to be a record") from None
    except ValueError as exc:  # json.JSONDecodeError is one
        raise ValueError(f"not strict JSON ({str(exc).splitlines()[0]})") from None
    validate_record(record)
    return record


def dumps_record(record: dict[str, Any]) -> str:
    """A record's file content: strict JSON (``allow_nan=False``), sorted keys, 2-space indent, newline."""
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    """Validate ``record`` and write it atomically as strict JSON; return its path.

    The JSON text is made before anything is written, so a record that JSON
    cannot hold (a NaN anywhere in it) raises ``ValueError`` and touches no file.
    """
    validate_record(record)
    text = dumps_record(record)
    atomic_write(canonical_path(record, results_dir), lambda f: f.write(text), binary=False)
    return canonical_path(record, results_dir)


def canonical_path(record: dict[str, Any], results_dir: str | Path) -> Path:
    """The one path under ``results_dir`` where ``record`` belongs (:func:`record_path` of its fields)."""
    return record_path(results_dir, task=record["task"], dataset=record["dataset"], preset=record["preset"],
                       method=record["method"], seed=record["seed"], alpha=record.get("alpha_override"))


# ---------------------------------------------------------------------------
# Loading: good records counted, damaged and duplicate ones named
# ---------------------------------------------------------------------------

DAMAGED = "damaged"
DUPLICATE = "duplicate"


class RecordProblem(NamedTuple):
    """A file under a task folder that does not count as a record.

    Attributes:
        path: the file.
        kind: :data:`DAMAGED` (not strict JSON, or not a valid record) or
            :data:`DUPLICATE` (a valid record at a path that is not its
            :func:`canonical_path`, such as a copy ``spread_seed0 (1).json``).
        reason: what is wrong, in words.
        cell: what is known of the cell it would have filled: ``task``,
            ``dataset`` and ``preset`` from its folders, everything from its
            contents when they are a valid record.
    """

    path: Path
    kind: str
    reason: str
    cell: dict[str, Any] = {}

    def __str__(self) -> str:
        return f"{self.kind} record {self.path}: {self.reason}; not counted"

    def concerns(self, match: dict[str, Any]) -> bool:
        """Whether a loader asked for ``match`` would have used this file (unknown fields: yes)."""
        return all(self.cell.get(k, v) == v for k, v in match.items())


class Records(list):
    """The good records (a list, as before) and ``problems``: the files that did not count."""

    def __init__(self, records: Iterable[dict[str, Any]] = (), problems: Iterable[RecordProblem] = ()):
        super().__init__(records)
        self.problems: list[RecordProblem] = list(problems)


def check_record(path: str | Path, results_dir: str | Path, *,
                 text: str | None = None) -> tuple[dict[str, Any] | None, RecordProblem | None]:
    """Read one record file and judge it: ``(record, None)`` if it counts, ``(None, problem)`` if not.

    Args:
        path: the file, under ``results_dir``.
        results_dir: the results root (the folder holding ``transfer/`` and
            ``robustness/``): the file must be :func:`canonical_path` of its
            contents there.
        text: the file's content when it is already read (e.g. from git);
            default: read ``path``.
    """
    path = Path(path)
    parts = path.relative_to(results_dir).parts if path.is_relative_to(results_dir) else path.parts
    cell = dict(zip(("task", "dataset", "preset"), parts[:-1]))
    try:
        record = parse_record(path.read_text(encoding="utf-8") if text is None else text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, RecordProblem(path, DAMAGED, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                                   cell)
    want = canonical_path(record, results_dir)
    if path != want:
        cell = {k: record[k] for k in ("task", "dataset", "preset", "method", "seed")}
        cell["alpha_override"] = record.get("alpha_override")
        return None, RecordProblem(path, DUPLICATE, f"its contents are the record of {want}", cell)
    return record, None


def record_files(results_dir: str | Path) -> list[Path]:
    """Every ``*.json`` under the task folders of ``results_dir`` (``transfer/``, ``robustness/``), sorted.

    Files elsewhere (``bench/``, the top level) are not records and are not looked at.
    """
    root = Path(results_dir)
    return sorted(p for task in METRIC_KEYS for p in (root / task).rglob("*.json") if p.is_file())


def scan_records(results_dir: str | Path) -> Records:
    """Judge every record file under ``results_dir`` (:func:`check_record`); name nothing."""
    good, problems = [], []
    for path in record_files(results_dir):
        record, problem = check_record(path, results_dir)
        if problem is not None:
            problems.append(problem)
        else:
            record["path"] = str(path)
            good.append(record)
    return Records(good, problems)


_NAMED: set[str] = set()  # problem lines already printed by this process


def name_problems(problems: Iterable[RecordProblem | str], *, stream: IO[str] | None = None) -> None:
    """Print each problem as one line on stderr (prefixed ``spreadcon:``), once per process."""
    for problem in problems:
        line = f"spreadcon: {problem}"
        if line not in _NAMED:
            _NAMED.add(line)
            print(line, file=stream or sys.stderr, flush=True)


def load_records(results_dir: str | Path, *, quiet: bool = False, **match: Any) -> Records:
    """Read every good record under ``results_dir``, optionally filtered; name the files that do not count.

    A file under a task folder counts when it is strict JSON, a valid record
    (:func:`validate_record`) and at its :func:`canonical_path`. A damaged file
    or a duplicate (a valid record under another name, such as
    ``spread_seed0 (1).json``, which would count as a second seed) is left
    out and named in one line on stderr, once per process
    (:func:`name_problems`): a table built from the records then lacks the
    row, and says why, rather than stopping the build.

    Args:
        results_dir: the results root (the folder holding ``transfer/`` and ``robustness/``).
        quiet: name nothing (the caller reports ``.problems`` itself).
        **match: keep only records whose top-level keys equal these values,
            e.g. ``dataset="cifar10", preset="cpu"``.

    Returns:
        :class:`Records`: the good records sorted by (task, dataset, preset,
        method, seed), each with an added ``"path"`` key, and in
        ``.problems`` the files that would have matched but do not count.
    """
    scanned = scan_records(results_dir)
    out = [r for r in scanned if all(r.get(k) == v for k, v in match.items())]
    out.sort(key=lambda r: (r["task"], r["dataset"], r["preset"], r["method"], r["seed"]))
    problems = [p for p in scanned.problems if p.concerns(match)]
    if not quiet:
        name_problems(problems)
    return Records(out, problems)
