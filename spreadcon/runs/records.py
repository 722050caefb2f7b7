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
(temp file + ``os.replace``), so a reader never sees half a record.

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
import subprocess
from pathlib import Path
from typing import Any

import torch

from spreadcon.util.atomic import atomic_write

__all__ = [
    "REQUIRED_KEYS", "PROVENANCE_KEYS", "METRIC_KEYS", "record_path", "make_record",
    "validate_record", "write_record", "load_records", "git_commit", "device_name",
    "source_hash", "source_hashes", "source_hash_note",
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


def validate_record(record: dict[str, Any]) -> None:
    """Check a record against CONTRACT section 3.

    Raises:
        ValueError: a missing key, an unknown task, a missing metric, or an
            accuracy outside [0, 1] (or not finite).
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record is missing keys {missing}")
    missing = [k for k in PROVENANCE_KEYS if k not in record["provenance"]]
    if missing:
        raise ValueError(f"record provenance is missing keys {missing}")
    digest = record["provenance"].get("source_hash")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError(f"record provenance.source_hash={digest!r} is not 64 lowercase hex digits")
    task = record["task"]
    if task not in METRIC_KEYS:
        raise ValueError(f"record task={task!r}; valid: {', '.join(METRIC_KEYS)}")
    if not isinstance(record["seed"], int):
        raise ValueError(f"record seed={record['seed']!r} is not an int")
    metrics = record["metrics"]
    missing = [k for k in METRIC_KEYS[task] if k not in metrics]
    if missing:
        raise ValueError(f"record metrics are missing {missing} for task {task!r}")
    for key, value in metrics.items():
        if isinstance(value, dict):  # a per-group breakdown, {group: accuracy}
            bad = {g: v for g, v in value.items() if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0)}
            if not key.endswith("per_group_acc") or bad:
                raise ValueError(f"record metric {key}={value!r} is not a per-group accuracy breakdown")
            continue
        if key.endswith("acc") and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise ValueError(f"record metric {key}={value!r} is not an accuracy in [0, 1]")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"record metric {key}={value!r} is not finite")


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    """Validate ``record`` and write it atomically; return its path."""
    validate_record(record)
    alpha = record.get("alpha_override")
    path = record_path(results_dir, task=record["task"], dataset=record["dataset"],
                       preset=record["preset"], method=record["method"], seed=record["seed"],
                       alpha=alpha)
    def dump(f) -> None:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")

    atomic_write(path, dump, binary=False)
    return path


def load_records(results_dir: str | Path, **match: Any) -> list[dict[str, Any]]:
    """Read every valid record under ``results_dir``, optionally filtered.

    Args:
        results_dir: folder searched recursively for ``*.json``.
        **match: keep only records whose top-level keys equal these values,
            e.g. ``dataset="cifar10", preset="cpu"``.

    Returns:
        Records sorted by (task, dataset, preset, method, seed), each with an
        added ``"path"`` key. Files that are not valid records are skipped.
    """
    out = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
            validate_record(record)
        except (ValueError, OSError, KeyError, TypeError):
            continue
        if all(record.get(k) == v for k, v in match.items()):
            record["path"] = str(path)
            out.append(record)
    out.sort(key=lambda r: (r["task"], r["dataset"], r["preset"], r["method"], r["seed"]))
    return out
