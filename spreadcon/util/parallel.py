"""Independent jobs on every core: each in a ``spawn`` process of its own, one torch thread each.

The chapters' sweeps (chapter 2's MNIST encoders, chapter 3's symmetry
study, chapter 6's live runs) are many small, independent trainings. Their
operations are too small for torch's intra-op threads to pay (on two cores a
second thread makes a small CNN step slower, and far slower on a busy
machine), so the cores are used one job per process instead. Every job seeds
itself, and a worker runs with the same single torch thread as the serial
loop, so :func:`run_jobs` returns what the loop ``[fn(*args) for args in
jobs]`` returns, bit for bit (``tests/test_parallel.py``).

Example:
    >>> run_jobs(pow, [(2, 3), (3, 2)], workers=1)
    [8, 9]
    >>> run_jobs(int, [("11",), ("101",)], shared={"base": 2}, workers=1)
    [3, 5]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["cores", "run_jobs"]


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one, else ``os.cpu_count``).

    Example:
        >>> cores() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows: no affinity call
        return max(1, os.cpu_count() or 1)


def _init_worker(threads: int) -> None:
    """In a fresh worker: the torch threads of the serial loop, so each job computes what it computes there."""
    import torch

    torch.set_num_threads(threads)


def run_jobs(fn: Callable[..., Any], jobs: Sequence[Sequence[Any]], *, shared: Mapping[str, Any] | None = None,
             workers: int | None = None, threads: int = 1) -> list[Any]:
    """``[fn(*args, **shared) for args in jobs]``, the jobs shared among ``workers`` processes; results in job order.

    Args:
        fn: a module-level function (a spawned process imports it by name; a
            lambda or a function defined in a notebook cannot travel). Its
            arguments and result must pickle.
        jobs: the positional arguments, one tuple per call.
        shared: keyword arguments of every call.
        workers: processes at once; ``None``: :func:`cores`, at most one per
            job. With 1 (or a single job) the calls run here, in order, with
            this process's threads: nothing is spawned.
        threads: torch threads in each worker.

    Raises:
        ValueError: ``workers`` or ``threads`` below 1.
        Whatever a call raised: the first failing job's exception, after the
        pool has shut down.
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    jobs = [tuple(args) for args in jobs]
    if shared:
        fn = functools.partial(fn, **shared)  # pickles as the function's name and the arguments
    n = min(cores() if workers is None else workers, len(jobs))
    if n <= 1:
        return [fn(*args) for args in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    try:
        futures = [pool.submit(fn, *args) for args in jobs]
        return [f.result() for f in futures]
    finally:  # after a failure the jobs not started are dropped; the running ones end first
        pool.shutdown(wait=True, cancel_futures=True)
