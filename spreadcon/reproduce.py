"""The experiment grid: run ``book/experiment.ipynb`` once per run with papermill.

Command line::

    python -m spreadcon reproduce --preset cpu|paper|smoke \\
        --datasets mnist cifar10 --methods supcon spread autoencoder thanos --seeds 0 1 2 \\
        [--alpha A] [--data-root DIR] [--results results] [--runs runs] \\
        [--set key=value ...] [--jobs N [--threads T]] [--dry-run]

For every (dataset, method, seed) of the grid, in that order:

* if a result record for it already exists under ``--results`` (the path is
  :func:`spreadcon.records.record_path`'s), the run is **skipped** -- so an
  interrupted grid resumes where it stopped, and finished runs are never
  repeated;
* otherwise the template notebook is executed by papermill with the run's
  parameters; the executed notebook is kept as
  ``<runs>/<preset>/<dataset>/<method>_seed<N>[_alpha<A>].ipynb`` (``runs/``
  is git-ignored) and the notebook writes the record under ``--results``
  (``results/`` is committed).

``--jobs N`` runs N notebooks at once, each in its own worker process whose
kernel is limited to ``--threads`` torch threads (default: the CPU count
divided by N, at least 1). On a 2-core machine ``--jobs 2`` runs two
single-threaded runs side by side, which finishes a grid of small CPU runs in
about half the wall time of one two-threaded run after another (small
models do not scale to a second thread). On one GPU keep ``--jobs 1``.

A failed run does not stop the grid. At the end the command prints how many
runs finished, were skipped and failed, lists the failures with the notebook
to open, and exits 1 if any failed (0 otherwise; 2 for bad arguments).

``--set key=value`` overrides a config key for every run of the grid. The
record stores the full resolved config, but its file name does not encode the
overrides, so use a separate ``--results`` folder for overridden grids.

Example:
    >>> plan = plan_grid("smoke", ["mnist"], ["ce", "spread"], [0], results_dir="/tmp/none")
    >>> [(r.dataset, r.method, r.seed, r.existing) for r in plan]
    [('mnist', 'ce', 0, None), ('mnist', 'spread', 0, None)]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = ["GridRun", "TEMPLATE", "plan_grid", "find_record", "execute_run", "run_grid", "default_threads", "main"]

#: The papermill template, next to the chapters it serves.
TEMPLATE = Path(__file__).resolve().parents[1] / "book" / "experiment.ipynb"


@dataclass(frozen=True)
class GridRun:
    """One cell of the grid.

    Attributes:
        dataset, method, preset, seed: what to run.
        alpha: the cNCE weight override, or None for the preset's.
        existing: the path of its record if one already exists, else None.
    """

    dataset: str
    method: str
    preset: str
    seed: int
    alpha: float | None = None
    existing: Path | None = None

    @property
    def name(self) -> str:
        """``<method>_seed<N>[_alpha<A>]``, as in the record's file name."""
        return f"{self.method}_seed{self.seed}" + ("" if self.alpha is None else f"_alpha{self.alpha:g}")

    def notebook_path(self, runs_dir: str | Path) -> Path:
        """Where the executed notebook is kept."""
        return Path(runs_dir) / self.preset / self.dataset / f"{self.name}.ipynb"

    def label(self) -> str:
        return f"{self.dataset}/{self.preset}/{self.name}"


def find_record(results_dir: str | Path, dataset: str, method: str, preset: str, seed: int,
                alpha: float | None = None) -> Path | None:
    """The existing record of a run, or None.

    The path comes from :func:`spreadcon.records.record_path`, the one place
    that decides it. A dataset has exactly one task, so checking both tasks
    finds the record without loading the dataset.
    """
    from spreadcon.records import METRIC_KEYS, record_path

    for task in METRIC_KEYS:
        path = record_path(results_dir, task=task, dataset=dataset, preset=preset, method=method,
                           seed=seed, alpha=alpha)
        if path.is_file():
            return path
    return None


def _check_names(kind: str, names: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; valid {kind}: {', '.join(valid)}")
    if not names:
        raise ValueError(f"--{kind} needs at least one name; valid {kind}: {', '.join(valid)}")


def plan_grid(preset: str, datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
              alpha: float | None = None, results_dir: str | Path = "results",
              overrides: dict[str, Any] | None = None) -> list[GridRun]:
    """Validate the names and list the grid's runs, marking those already recorded.

    Args:
        preset: a name in :data:`spreadcon.presets.PRESETS`.
        datasets: names in :data:`spreadcon.data.DATASETS`.
        methods: names in :data:`spreadcon.methods.METHODS`.
        seeds: ints.
        alpha: cNCE weight override for every run, or None.
        results_dir: where records are looked for.
        overrides: config overrides, checked here (unknown keys fail before
            anything runs).

    Returns:
        The runs in (dataset, method, seed) order.

    Raises:
        ValueError: an unknown preset, dataset, method or config key (the
            message lists the valid names), or an alpha outside [0, 1].
    """
    from spreadcon.data import DATASETS
    from spreadcon.methods import METHODS
    from spreadcon.presets import PRESETS, resolve

    _check_names("presets", [preset], list(PRESETS))
    _check_names("datasets", list(datasets), list(DATASETS))
    _check_names("methods", list(methods), list(METHODS))
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1]")
    for d in datasets:  # unknown override keys or bad values fail now, not in run 17
        resolve(preset, d, {**(overrides or {}), **({} if alpha is None else {"alpha": alpha})})
    return [GridRun(d, m, preset, int(s), alpha, find_record(results_dir, d, m, preset, int(s), alpha))
            for d in datasets for m in methods for s in seeds]


def execute_run(run: GridRun, results_dir: str | Path, runs_dir: str | Path,
                data_root: str | Path | None = None, overrides: dict[str, Any] | None = None,
                template: str | Path = TEMPLATE) -> Path:
    """Execute the template for one run with papermill; return the record's path.

    Raises:
        RuntimeError: the notebook failed (the message names the executed
            notebook to open), or it finished without writing the record.
    """
    import papermill

    out = run.notebook_path(runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {
        "dataset": run.dataset, "method": run.method, "preset": run.preset, "seed": run.seed,
        "alpha": run.alpha, "data_root": None if data_root is None else str(Path(data_root).resolve()),
        "results_dir": str(Path(results_dir).resolve()), "overrides": dict(overrides or {}),
    }
    template = Path(template)
    try:
        papermill.execute_notebook(str(template), str(out), parameters=params, cwd=str(template.parent),
                                   progress_bar=False, log_output=False)
    except Exception as exc:  # papermill raises its own error types and kernel errors alike
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise RuntimeError(f"{lines[-1] if lines else type(exc).__name__} (see {out})") from exc
    path = find_record(results_dir, run.dataset, run.method, run.preset, run.seed, run.alpha)
    if path is None:
        raise RuntimeError(f"the notebook finished but wrote no record under {results_dir} (see {out})")
    return path


def _limit_threads(threads: int) -> None:
    """Worker initialiser: the kernels this process starts inherit these variables."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def default_threads(jobs: int) -> int:
    """Torch threads per run when ``jobs`` runs share this machine: ``cpu_count // jobs``, at least 1."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def run_grid(plan: Sequence[GridRun], results_dir: str | Path = "results", runs_dir: str | Path = "runs",
             data_root: str | Path | None = None, overrides: dict[str, Any] | None = None,
             template: str | Path = TEMPLATE, progress: bool = True, jobs: int = 1,
             threads: int | None = None) -> dict[str, list]:
    """Run every not-yet-recorded run of ``plan``; failures do not stop the rest.

    Args:
        jobs: how many runs execute at once. With ``jobs > 1`` each run executes
            in a worker process (``spawn``) whose kernel gets ``threads`` torch
            threads through ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``.
        threads: threads per run when ``jobs > 1``; default :func:`default_threads`.

    Returns:
        ``{"done": [record paths], "skipped": [GridRun], "failed": [(GridRun, message)]}``;
        with ``jobs > 1`` ``done`` and ``failed`` are in completion order.
    """
    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive int")
    result: dict[str, list] = {"done": [], "skipped": [], "failed": []}
    todo = []
    for run in plan:
        existing = run.existing or find_record(results_dir, run.dataset, run.method, run.preset,
                                               run.seed, run.alpha)
        (result["skipped"] if existing is not None else todo).append(run)
    bar = tqdm(total=len(plan), initial=len(result["skipped"]), desc="grid", unit="run",
               disable=not progress, file=sys.stderr)

    def finished(run: GridRun, path: Path | None, exc: BaseException | None) -> None:
        if exc is None:
            result["done"].append(path)
        else:
            result["failed"].append((run, str(exc)))
            bar.write(f"FAILED {run.label()}: {exc}")
        bar.update(1)

    if jobs == 1:
        for run in todo:
            bar.set_postfix_str(run.label())
            try:
                path = execute_run(run, results_dir, runs_dir, data_root, overrides, template)
            except Exception as exc:  # keep going; report at the end
                finished(run, None, exc)
            else:
                finished(run, path, None)
    elif todo:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        n_threads = default_threads(jobs) if threads is None else int(threads)
        if n_threads < 1:
            raise ValueError(f"threads={threads!r} must be a positive int")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_limit_threads, initargs=(n_threads,)) as pool:
            futures = {pool.submit(execute_run, run, results_dir, runs_dir, data_root, overrides,
                                   template): run for run in todo}
            bar.set_postfix_str(f"{jobs} at once, {n_threads} thread(s) each")
            for fut in as_completed(futures):
                exc = fut.exception()
                finished(futures[fut], None if exc else fut.result(), exc)
    bar.close()
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spreadcon reproduce",
                                description="Run an experiment grid through papermill (book/experiment.ipynb).")
    p.add_argument("--preset", default="cpu", help="smoke, cpu or paper (default cpu)")
    p.add_argument("--datasets", nargs="+", required=True, help="dataset names (space- or comma-separated)")
    p.add_argument("--methods", nargs="+", required=True, help="method names (space- or comma-separated)")
    p.add_argument("--seeds", nargs="+", default=["0"], help="seeds (default 0)")
    p.add_argument("--alpha", type=float, default=None, help="cNCE weight for every run (default: the preset's)")
    p.add_argument("--data-root", default=None, help="dataset folder (default $SPREADCON_DATA)")
    p.add_argument("--results", default="results", help="records folder (default results)")
    p.add_argument("--runs", default="runs", help="executed notebooks folder (default runs)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run; repeatable")
    p.add_argument("--template", default=str(TEMPLATE), help="papermill template notebook")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs executed at once, each in its own process (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run when --jobs > 1 (default: CPU count // jobs)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what would be skipped; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _split(values: Sequence[str]) -> list[str]:
    return [v for item in values for v in item.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 all done, 1 some runs failed, 2 bad arguments."""
    args = _parser().parse_args(argv)
    try:
        try:
            seeds = [int(s) for s in _split(args.seeds)]
        except ValueError:
            raise ValueError(f"--seeds must be integers, got {args.seeds!r}") from None
        overrides = {}
        for item in args.sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
            overrides[key.strip()] = value.strip()
        if args.jobs < 1 or (args.threads is not None and args.threads < 1):
            raise ValueError(f"--jobs and --threads must be positive; got {args.jobs} and {args.threads}")
        plan = plan_grid(args.preset, _split(args.datasets), _split(args.methods), seeds, args.alpha,
                         args.results, overrides)
    except ValueError as exc:
        print(f"spreadcon reproduce: {exc}", file=sys.stderr)
        return 2
    todo = [r for r in plan if r.existing is None]
    print(f"grid: {len(plan)} runs, {len(plan) - len(todo)} already recorded under {args.results}")
    if args.dry_run:
        for r in plan:
            state = f"skip (record {r.existing})" if r.existing else f"run  -> {r.notebook_path(args.runs)}"
            print(f"  {r.label():<40} {state}")
        return 0
    out = run_grid(plan, args.results, args.runs, args.data_root, overrides, args.template,
                   progress=not args.no_progress, jobs=args.jobs, threads=args.threads)
    print(f"finished {len(out['done'])}, skipped {len(out['skipped'])}, failed {len(out['failed'])}")
    for path in out["done"]:
        print(f"  wrote {path}")
    if out["failed"]:
        print("failed runs:")
        for run, msg in out["failed"]:
            print(f"  {run.label()}: {msg}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
