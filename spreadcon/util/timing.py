"""Timing helpers shared by the benchmarks: medians after warm-ups, round-robin, a thread-count scope.

They sit below everything that is timed (the losses, the training engine, the
augmentation), so any module can time itself without importing
:mod:`spreadcon.bench`, which imports the training stack.

Example:
    >>> t = median_time(lambda: sum(range(100)), repeats=3, warmup=1)
    >>> t > 0
    True
    >>> with torch_threads(1) as n:
    ...     n
    1
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["interleaved_times", "median_time", "torch_threads"]


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 2, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    return interleaved_times({"fn": fn}, repeats=repeats, warmup=warmup, device=device)["fn"]


def interleaved_times(
    steps: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2, device: str = "cpu",
    slow: dict[str, int] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Median time (s) of each step, measured round-robin so that load changes on a shared
    machine hit every step alike. ``slow`` caps the repeats (and warm-ups, to 1) of named slow steps."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got repeats={repeats!r}, warmup={warmup!r}")
    dev = torch.device(device)
    slow = slow or {}
    for name, step in steps.items():
        for _ in range(min(warmup, 1) if name in slow else warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats):
        for name, step in steps.items():
            if r >= slow.get(name, repeats):
                continue
            _sync(dev)
            t0 = time.perf_counter()
            step()
            _sync(dev)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the block, restored after; yields the count in use (``None``: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
