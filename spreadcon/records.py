"""Result records (CONTRACT section 3): one JSON file per finished experiment.

Layout under the results directory (``results/`` in the repository)::

    <task>/<dataset>/<preset>/<method>_seed<N>.json
    <task>/<dataset>/<preset>/<method>_seed<N>_alpha<A>.json   # when --alpha was given

``task`` is ``transfer`` or ``robustness``; ``A`` is written with ``repr``-free
``%g`` formatting, e.g. ``alpha0.25``. Every record holds ``dataset``,
``method``, ``preset``, ``seed``, ``task``, ``metrics`` and ``provenance``
(``git_commit``, ``torch_version``, ``device``, ``started_at``,
``wall_time_s``, ``config``). Files are written atomically (temp file +
``os.replace``), so a reader never sees half a record.

Example:
    >>> rec = make_record(dataset="mnist", method="spread", preset="smoke", seed=0,
    ...     task="transfer", metrics={"fine_test_acc": 0.5, "coarse_test_acc": 0.9},
    ...     config={}, started_at="2024-01-01T00:00:00+00:00", wall_time_s=1.0)
    >>> validate_record(rec)
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import torch

from spreadcon.atomic import atomic_write

__all__ = [
    "REQUIRED_KEYS", "PROVENANCE_KEYS", "METRIC_KEYS", "record_path", "make_record",
    "validate_record", "write_record", "load_records", "git_commit", "device_name",
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
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


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
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble (and validate) a record dict. ``extra`` adds top-level keys."""
    record = {
        "dataset": dataset, "method": method, "preset": preset, "seed": int(seed), "task": task,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "provenance": {
            "git_commit": git if git is not None else git_commit(),
            "torch_version": torch.__version__,
            "device": device,
            "started_at": started_at,
            "wall_time_s": float(wall_time_s),
            "config": dict(config),
        },
    }
    record.update(extra or {})
    validate_record(record)
    return record


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
