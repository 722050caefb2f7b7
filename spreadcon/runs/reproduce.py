"""The experiment grid: run ``book/experiment.ipynb`` once per run with papermill.

Command line::

    python -m spreadcon reproduce --preset smoke|cpu|colab|paper|official \\
        --datasets mnist cifar10 --methods supcon spread autoencoder thanos --seeds 0 1 2 \\
        [--alpha A] [--data-root DIR] [--results results] [--runs runs] [--checkpoints checkpoints] \\
        [--set key=value ...] [--jobs N [--threads T]] [--dry-run]
    python -m spreadcon reproduce --paper [--dry-run]     # the paper's whole grid, with its price

For every (dataset, method, seed) of the grid, in that order:

* if a good result record for it already exists under ``--results`` (the path is
  :func:`spreadcon.runs.records.record_path`'s, and the file is strict JSON and
  a valid record of this very cell: :func:`spreadcon.runs.records.check_record`),
  the run is **skipped** -- so an interrupted grid resumes where it stopped, and
  finished runs are never repeated;
* if the file there is **damaged** (truncated, not a valid record, or another
  cell's record), the command names it in one line, moves it aside to
  ``<name>.damaged`` (nothing is lost) and reruns the cell; a **duplicate**
  beside it (a record under another name, such as ``spread_seed0 (1).json``) is
  named and never counted;
* otherwise the template notebook is executed by papermill with the run's
  parameters; the executed notebook is kept as
  ``<runs>/<preset>/<dataset>/<method>_seed<N>[_alpha<A>].ipynb`` (``runs/``
  is git-ignored) and the notebook writes the record under ``--results``
  (``results/`` is committed).

**Checkpoints.** Every run trains into its own checkpoint folder under
``--checkpoints`` (default ``checkpoints/`` in the current folder) and is
always started with ``resume=True``: a run that was interrupted (a killed
process, a Colab disconnect) continues from its newest loadable checkpoint
when ``reproduce`` is called again, and a run with no checkpoint starts
fresh. The layout (:meth:`GridRun.checkpoint_dir`)::

    <checkpoints>/<preset>/<dataset>/seed<N>[_alpha<A>]/<method>/    # one backbone per method

A composite method (``thanos``) gets the ``seed<N>`` folder itself, and
:func:`spreadcon.runs.experiment.run_experiment` trains each of its backbones in
``<that folder>/<backbone>``: exactly the folders of the ``spread`` and
``autoencoder`` runs of the same seed. Their configs and seeds are the same,
so ``thanos`` resumes their finished checkpoints instead of training again
(the official Thanos concatenates separately trained backbones), and costs
only its evaluation. Composite runs are therefore executed after every other
run of the grid, never beside one of their backbones. Both ``--results`` and
``--checkpoints`` may be on a mounted drive (Colab: Google Drive; see the
README), so a new session picks up where the last one stopped. ``--set``
overrides are part of the record's preset name (``cpu.set.epochs-1``, see
:mod:`spreadcon.runs.names`), so an overridden grid never lands on the
preset's own records.

**The paper's grid.** ``--paper`` fills in the preset ``official`` (the
official code's form, against which the official README's table is
compared; ``--preset paper`` gives the equations (Khosla's L_out) instead), every
dataset of the paper (:data:`PAPER_DATASETS`: transfer and robustness), the
methods ``supcon spread autoencoder thanos`` and seeds 0 1 2. Any of
``--preset``, ``--datasets``, ``--methods`` and ``--seeds`` given with it
replaces that part.

**Cost.** ``--dry-run`` runs nothing. It prints one line per run with its
estimated GPU-hours (:mod:`spreadcon.runs.cost`: counted FLOPs at a throughput
that is measured where ``results/bench/gpu.json`` exists, else assumed and
labelled so; ``--gpu t4`` prices at a T4's, the default for ``--preset
colab``), ``thanos`` at its marginal cost when its backbones are trained
in this grid or already checkpointed (and its stand-alone cost beside it),
and ends with a line ``total: ... GPU-hours ...``.

``--jobs N`` runs N notebooks at once, each in its own worker process whose
kernel is limited to ``--threads`` torch threads (default: the CPU count
divided by N, at least 1). On a 2-core machine ``--jobs 2`` runs two
single-threaded runs side by side, which finishes a grid of small CPU runs in
about half the wall time of one two-threaded run after another (small
models do not scale to a second thread). On one GPU keep ``--jobs 1``.

A failed run does not stop the grid. At the end the command prints how many
runs finished, were skipped and failed, lists the failures with the notebook
to open, and exits 1 if any failed (0 otherwise; 2 for bad arguments:
unknown names, negative or repeated seeds, a dataset or method listed twice,
checked before anything heavy is imported).

``--set key=value`` overrides a config key for every run of the grid. The
record stores the full resolved config, but its file name does not encode the
overrides, so use a separate ``--results`` folder for overridden grids.

Example:
    >>> plan = plan_grid("smoke", ["mnist"], ["ce", "spread"], [0], results_dir="/tmp/none")
    >>> [(r.dataset, r.method, r.seed, r.existing) for r in plan]
    [('mnist', 'ce', 0, None), ('mnist', 'spread', 0, None)]
    >>> str(plan[1].checkpoint_dir("checkpoints"))
    'checkpoints/smoke/mnist/seed0/spread'
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from spreadcon.book.report import PAPER_ROBUSTNESS_DATASETS, PAPER_TRANSFER_DATASETS

if TYPE_CHECKING:  # the records module imports torch; the grid's first checks must not
    from spreadcon.runs.records import RecordProblem

__all__ = ["GridRun", "TEMPLATE", "PAPER_DATASETS", "PAPER_METHODS", "PAPER_SEEDS", "PAPER_PRESET",
           "check_grid", "plan_grid", "find_record", "record_state", "grid_problems", "aside_path", "set_aside",
           "plan_costs", "execute_run", "run_grid", "kernel_environment", "PATH_VARIABLES",
           "default_threads", "main"]

#: The papermill template, next to the chapters it serves.
TEMPLATE = Path(__file__).resolve().parents[2] / "book" / "experiment.ipynb"

#: ``--paper``: every dataset of the paper, transfer then robustness (spreadcon.book.report's lists).
PAPER_DATASETS = PAPER_TRANSFER_DATASETS + PAPER_ROBUSTNESS_DATASETS
#: ``--paper``: the paper's methods; thanos after the backbones it concatenates.
PAPER_METHODS = ("supcon", "spread", "autoencoder", "thanos")
PAPER_SEEDS = (0, 1, 2)
#: ``--paper``'s preset: the official code's form (spreadcon.presets).
PAPER_PRESET = "official"


@dataclass(frozen=True)
class GridRun:
    """One cell of the grid.

    Attributes:
        dataset, method, preset, seed: what to run.
        alpha: the cNCE weight override, or None for the preset's.
        existing: the path of its record if a good one already exists, else None.
        backbones: the single-backbone trainings the run needs
            (:func:`spreadcon.runs.cost.backbones_of`): ``(method,)`` for an
            ordinary method, two for ``thanos`` and the pair controls.
        damaged: the file at its record's path when that file is not a good
            record of this cell (:func:`spreadcon.runs.records.check_record`),
            else None: the run reruns, once the file is moved aside.
    """

    dataset: str
    method: str
    preset: str
    seed: int
    alpha: float | None = None
    existing: Path | None = None
    backbones: tuple[str, ...] = ()
    damaged: RecordProblem | None = None
    record_preset: str = ""  # the preset its record is filed under (spreadcon.runs.names); "" = preset

    @property
    def filed(self) -> str:
        """The preset folder of its record and checkpoints: ``preset``, or the name that says how
        ``--set`` changed it (and an alpha the file name would round)."""
        return self.record_preset or self.preset

    @property
    def composite(self) -> bool:
        """Whether the run concatenates backbones trained as other methods (``thanos``, the pairs)."""
        return bool(self.backbones) and self.backbones != (self.method,)

    def checkpoint_dir(self, root: str | Path) -> Path:
        """This run's checkpoint folder (see the module docstring for the layout)."""
        folder = Path(root) / self.filed / self.dataset / (
            f"seed{self.seed}" + ("" if self.alpha is None else f"_alpha{self.alpha:g}"))
        return folder if self.composite else folder / self.method

    @property
    def name(self) -> str:
        """``<method>_seed<N>[_alpha<A>]``, as in the record's file name."""
        return f"{self.method}_seed{self.seed}" + ("" if self.alpha is None else f"_alpha{self.alpha:g}")

    def notebook_path(self, runs_dir: str | Path) -> Path:
        """Where the executed notebook is kept: beside its record's preset folder (``--set`` grids apart)."""
        return Path(runs_dir) / self.filed / self.dataset / f"{self.name}.ipynb"

    def label(self) -> str:
        return f"{self.dataset}/{self.preset}/{self.name}"


def record_state(results_dir: str | Path, run: GridRun) -> tuple[Path | None, RecordProblem | None]:
    """Whether ``run`` is recorded: ``(path, None)`` for a good record, ``(None, problem)`` when the file
    at its record's path does not count (:func:`spreadcon.runs.records.check_record`), ``(None, None)``
    when there is none.

    The path comes from :func:`spreadcon.runs.records.record_path`, the one place
    that decides it. A dataset has exactly one task, so checking both tasks
    finds the record without loading the dataset. A file there that holds
    another cell's record (a renamed copy) is damaged for this cell.
    """
    from spreadcon.runs.records import DAMAGED, METRIC_KEYS, check_record, record_path

    for task in METRIC_KEYS:
        path = record_path(results_dir, task=task, dataset=run.dataset, preset=run.filed, method=run.method,
                           seed=run.seed, alpha=run.alpha)
        if path.is_file():
            record, problem = check_record(path, results_dir)
            if problem is not None:
                return None, problem._replace(kind=DAMAGED)
            return path, None
    return None, None


def find_record(results_dir: str | Path, run: GridRun) -> Path | None:
    """The good record of ``run`` under ``results_dir``, or None (:func:`record_state`)."""
    return record_state(results_dir, run)[0]


def aside_path(path: Path) -> Path:
    """Where :func:`set_aside` moves ``path``: ``<name>.damaged``, or ``<name>.damaged.1``, ... if taken."""
    target, n = path.with_name(path.name + ".damaged"), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged.{n}")
    return target


def set_aside(path: Path) -> Path:
    """Move a damaged record out of the way (:func:`aside_path`) and return where it went; nothing is
    deleted, and a ``*.damaged`` file is no longer looked at as a record."""
    target = aside_path(path)
    os.replace(path, target)
    return target


def _check_names(kind: str, names: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; valid {kind}: {', '.join(valid)}")
    if not names:
        raise ValueError(f"--{kind} needs at least one name; valid {kind}: {', '.join(valid)}")


def _repeated(values: Sequence) -> list:
    seen, twice = set(), []
    for v in values:
        if v in seen and v not in twice:
            twice.append(v)
        seen.add(v)
    return twice


def check_grid(datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int]) -> None:
    """The checks that need no import: seeds are ints >= 0, and nothing is listed twice.

    Raises:
        ValueError: one line naming the first problem.
    """
    for kind, values in (("datasets", datasets), ("methods", methods), ("seeds", seeds)):
        twice = _repeated(list(values))
        if twice:
            raise ValueError(f"--{kind} lists {', '.join(map(repr, twice))} more than once; "
                             f"each grid cell must be listed once")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"--seeds must be integers >= 0; got {', '.join(map(repr, bad))}")


def plan_grid(preset: str, datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int], *,
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
        The runs in (dataset, method, seed) order; ``existing`` is set where a
        good record exists, ``damaged`` where the file there does not count.

    Raises:
        ValueError: an unknown preset, dataset, method or config key (the
            message lists the valid names), an alpha outside [0, 1], a
            negative or repeated seed, or a dataset or method listed twice.
    """
    from spreadcon.presets import PRESETS, resolve

    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    check_grid(datasets, methods, seeds)
    _check_names("presets", [preset], list(PRESETS))
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1]")
    from spreadcon.runs.checks import DATASET_NAMES, METHOD_NAMES  # torch-free copies of the registries' names

    _check_names("datasets", list(datasets), list(DATASET_NAMES))
    _check_names("methods", list(methods), list(METHOD_NAMES))
    from spreadcon.runs.cost import backbones_of
    for d in datasets:  # unknown override keys or bad values fail now, not in run 17
        resolve(preset, d, {**(overrides or {}), **({} if alpha is None else {"alpha": alpha})})
    plan = []
    from spreadcon.runs.names import resolve_run

    for run in (GridRun(d, m, preset, int(s), alpha, backbones=backbones_of(m),
                        record_preset=resolve_run(preset, d, m, overrides=overrides, alpha=alpha)[1])
                for d in datasets for m in methods for s in seeds):
        existing, damaged = record_state(results_dir, run)
        plan.append(replace(run, existing=existing, damaged=damaged))
    return plan


def grid_problems(plan: Sequence[GridRun], results_dir: str | Path) -> list[RecordProblem]:
    """The files under the plan's record folders that do not count: each damaged record at a run's path
    (the run reruns) and every damaged or duplicate file beside them (never counted)."""
    from spreadcon.runs.records import scan_records

    damaged = {r.damaged.path: r.damaged for r in plan if r.damaged is not None}
    cells = [{"dataset": d, "preset": p} for d, p in dict.fromkeys((r.dataset, r.preset) for r in plan)]
    found = [p for p in scan_records(results_dir).problems
             if p.path not in damaged and any(p.concerns(c) for c in cells)]
    return sorted([*damaged.values(), *found], key=lambda p: str(p.path))


def plan_costs(plan: Sequence[GridRun], overrides: dict[str, Any] | None = None,
               checkpoints_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The estimated cost of each run of ``plan`` (:mod:`spreadcon.runs.cost`), in FLOPs.

    A composite run's backbone counts as **reused** when the grid trains it
    (a run of that method, same dataset, seed and alpha, still to run) or when
    its checkpoint folder under ``checkpoints_dir`` already holds files.

    Returns:
        One dict per run: ``run``, ``flops`` (what it adds to the bill: 0 for
        a recorded run, the marginal cost for a composite one), ``standalone``
        (everything trained by this run alone), ``reused`` (backbone names), and
        ``error`` (why no cost is known, e.g. a dataset of unknown size) or None.
    """
    from spreadcon.runs.cost import run_cost

    todo = {(r.dataset, r.method, r.seed, r.alpha) for r in plan if r.existing is None}
    rows = []
    for r in plan:
        row: dict[str, Any] = {"run": r, "flops": 0.0, "standalone": 0.0, "reused": (), "error": None}
        try:
            c = run_cost(r.dataset, r.method, r.preset,
                         {**(overrides or {}), **({} if r.alpha is None else {"alpha": r.alpha})})
        except ValueError as exc:
            row["error"] = str(exc)
            rows.append(row)
            continue
        reused = ()
        if r.composite:
            base = r.checkpoint_dir(checkpoints_dir) if checkpoints_dir is not None else None
            reused = tuple(b for b in dict.fromkeys(r.backbones)
                           if (r.dataset, b, r.seed, r.alpha) in todo
                           or (base is not None and (base / b).is_dir() and any((base / b).iterdir())))
        row.update(standalone=c.total_flops, reused=reused,
                   flops=0.0 if r.existing is not None else c.marginal_flops(reused))
        rows.append(row)
    return rows


def execute_run(run: GridRun, *, results_dir: str | Path, runs_dir: str | Path,
                data_root: str | Path | None = None, overrides: dict[str, Any] | None = None,
                template: str | Path = TEMPLATE, checkpoints_dir: str | Path = "checkpoints",
                eval_epochs: str = "") -> Path:
    """Execute the template for one run with papermill; return the record's path.

    ``eval_epochs`` ("1,2,5"): also evaluate the run after these epochs (the
    record's ``metrics_by_epoch``; :func:`spreadcon.runs.experiment.run_experiment`).

    The notebook gets the run's own checkpoint folder
    (:meth:`GridRun.checkpoint_dir` under ``checkpoints_dir``) with
    ``resume=True``, and ``progress=False`` (no bars in the kept notebook). Its
    kernel works in the template's folder, so every path it is given is
    absolute, the path variables of its environment included
    (:func:`kernel_environment`).

    Raises:
        RuntimeError: the notebook failed (the message names the executed
            notebook to open), or it finished without writing a good record.
    """
    import papermill

    out = run.notebook_path(runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {
        "dataset": run.dataset, "method": run.method, "preset": run.preset, "seed": run.seed,
        "alpha": run.alpha, "data_root": None if data_root is None else str(Path(data_root).resolve()),
        "results_dir": str(Path(results_dir).resolve()), "overrides": dict(overrides or {}),
        "checkpoint_dir": str(run.checkpoint_dir(Path(checkpoints_dir).resolve())), "resume": True,
        "progress": False, "eval_epochs": eval_epochs,
    }
    template = Path(template)
    try:
        with kernel_environment():
            papermill.execute_notebook(str(template), str(out), parameters=params, cwd=str(template.parent),
                                       progress_bar=False, log_output=False)
    except Exception as exc:  # papermill raises its own error types and kernel errors alike
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        message = f"{lines[-1] if lines else type(exc).__name__} (see {out})"
        if getattr(exc, "ename", None) in _DATA_ERRORS:  # the kernel's data error: keep its kind (exit code)
            from spreadcon.data import errors

            raise getattr(errors, _DATA_ERRORS[exc.ename])(message) from exc
        raise RuntimeError(message) from exc
    path, problem = record_state(results_dir, run)
    if problem is not None:
        raise RuntimeError(f"the notebook finished but its record does not count: {problem.reason} "
                           f"({problem.path}; see {out})")
    if path is None:
        raise RuntimeError(f"the notebook finished but wrote no record under {results_dir} (see {out})")
    return path


def kernel_pythonpath(current: str | None = None) -> str:
    """``PYTHONPATH`` for a run's kernel: the folder holding this ``spreadcon`` package first, then ``current``.

    Example:
        >>> import spreadcon
        >>> kernel_pythonpath("/x").split(os.pathsep) == [str(Path(spreadcon.__file__).parents[1]), "/x"]
        True
    """
    root = str(Path(__file__).resolve().parents[2])
    rest = [p for p in (current or "").split(os.pathsep) if p and p != root]
    return os.pathsep.join([root, *rest])


#: Environment variables that hold a folder: a kernel working in ``book/`` would read a relative one
#: against ``book/``, so :func:`kernel_environment` makes them absolute against the caller's folder.
PATH_VARIABLES = ("SPREADCON_DATA", "SPREADCON_CACHE")


@contextlib.contextmanager
def kernel_environment():
    """The environment a run's kernel inherits, set for the ``with`` block and restored after it.

    * ``PYTHONPATH`` starts with this ``spreadcon`` (:func:`kernel_pythonpath`): with an editable
      install of another checkout (a git worktree, say), the kernel would otherwise run that
      checkout's code, and its records would name the wrong commit.
    * Each of :data:`PATH_VARIABLES` that is set is made absolute against the current working
      folder (``~`` expanded), so ``SPREADCON_DATA=data python -m spreadcon reproduce ...`` finds
      the data that ``python -m spreadcon run ...`` finds from the same folder.
    """
    wanted = {"PYTHONPATH": kernel_pythonpath(os.environ.get("PYTHONPATH"))}
    for var in PATH_VARIABLES:
        if os.environ.get(var):
            wanted[var] = str(Path(os.environ[var]).expanduser().absolute())
    previous = {var: os.environ.get(var) for var in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for var, value in previous.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


# a data error raised inside a run's kernel, by name -> the class that carries its exit code
_DATA_ERRORS = {"DatasetNotFound": "DatasetNotFound", "CorruptDataset": "CorruptDataset",
                "CorruptDownload": "CorruptDataset", "UnreadableDataset": "UnreadableDataset"}


def _limit_threads(threads: int) -> None:
    """In a worker: the kernels this process starts inherit these variables."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def default_threads(jobs: int) -> int:
    """Torch threads per run when ``jobs`` runs share this machine: ``cpu_count // jobs``, at least 1."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _worker(conn, run: GridRun, kwargs: dict[str, Any], threads: int) -> None:
    """A worker process's whole life: one run, its outcome sent back as ``(path, None)`` or ``(None, exc)``."""
    _limit_threads(threads)
    try:
        outcome = (execute_run(run, **kwargs), None)
    except Exception as exc:  # sent back to the grid, which reports it
        outcome = (None, exc)
    try:
        pickle.loads(pickle.dumps(outcome))
    except Exception:  # an exception that does not travel between processes: its message instead
        outcome = (None, RuntimeError(str(outcome[1])))
    conn.send(outcome)
    conn.close()


def _ended(proc, conn) -> tuple[Path | None, BaseException | None]:
    """The outcome of a worker whose pipe is readable: what it sent, or how it died without sending."""
    try:
        outcome = conn.recv()
    except (EOFError, OSError):
        outcome = None
    proc.join(timeout=60)
    if proc.is_alive():  # it sent its outcome but does not end: nothing of the run is left in it
        proc.terminate()
        proc.join()
    conn.close()
    if outcome is not None:
        return outcome
    code = proc.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    return None, RuntimeError(f"its worker process ended without a result ({how})")


def _run_in_workers(runs: Sequence[GridRun], *, jobs: int, threads: int, kwargs: dict[str, Any],
                    finished: Callable[[GridRun, Path | None, BaseException | None], None]) -> None:
    """Run ``runs``, at most ``jobs`` at once, each in a fresh ``spawn`` process of its own.

    Each worker reports through its own pipe, so a worker that dies (killed, out of memory) fails
    only its own run; the others run on, and the queue goes on.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    queue, running = list(runs), {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                run = queue.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(send, run, kwargs, threads))
                proc.start()
                send.close()  # the worker holds the only writer: its death reads as end of file
                running[recv] = (proc, run)
            for conn in wait(list(running)):
                proc, run = running.pop(conn)
                path, exc = _ended(proc, conn)
                finished(run, path, exc)
    finally:
        for proc, _ in running.values():  # interrupted: stop the workers still running
            proc.terminate()
            proc.join(timeout=30)


def run_grid(plan: Sequence[GridRun], *, results_dir: str | Path = "results", runs_dir: str | Path = "runs",
             data_root: str | Path | None = None, overrides: dict[str, Any] | None = None,
             template: str | Path = TEMPLATE, progress: bool = True, jobs: int = 1,
             threads: int | None = None, checkpoints_dir: str | Path = "checkpoints",
             eval_epochs: str = "") -> dict[str, list]:
    """Run every not-yet-recorded run of ``plan``; failures do not stop the rest.

    A run counts as recorded only when its record file is a good record of it
    (:func:`record_state`). A damaged file at its path is first moved aside
    (:func:`set_aside`) and the run reruns. Composite runs (``thanos``) go after
    all the others, so that they find their backbones' finished checkpoints
    and no two runs ever train into the same folder at once.

    Args:
        checkpoints_dir: the root of the runs' checkpoint folders.
        jobs: how many runs execute at once. With ``jobs > 1`` each run executes
            in a worker process of its own (``spawn``) whose kernel gets
            ``threads`` torch threads through ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``;
            a worker that dies fails its own run only.
        threads: threads per run when ``jobs > 1``; default :func:`default_threads`.

    Returns:
        ``{"done": [record paths], "skipped": [GridRun], "failed": [(GridRun, message)],
        "set_aside": [paths of damaged records moved aside]}``; with ``jobs > 1``
        ``done`` and ``failed`` are in completion order.
    """
    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive int")
    n_threads = default_threads(jobs) if threads is None else threads
    if not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive int")
    result: dict[str, list] = {"done": [], "skipped": [], "failed": [], "set_aside": []}
    todo = []
    for run in plan:
        try:
            if not _recorded(run, results_dir, result):
                todo.append(run)
        except OSError as exc:  # the damaged record could not be moved aside: leave it, run nothing
            result["failed"].append((run, f"its damaged record could not be moved aside ({exc})"))
            result.setdefault("errors", []).append(exc)
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="grid", unit="run",
               disable=not progress, file=sys.stderr)

    def finished(run: GridRun, path: Path | None, exc: BaseException | None) -> None:
        if exc is None:
            result["done"].append(path)
        else:
            result["failed"].append((run, str(exc)))
            result.setdefault("errors", []).append(exc)
            bar.write(f"FAILED {run.label()}: {exc}")
        bar.update(1)

    kwargs = dict(results_dir=results_dir, runs_dir=runs_dir, data_root=data_root, overrides=overrides,
                  template=template, checkpoints_dir=checkpoints_dir, eval_epochs=eval_epochs)
    for phase in ([r for r in todo if not r.composite], [r for r in todo if r.composite]):
        if jobs == 1:  # composites only once every backbone run has ended
            for run in phase:
                bar.set_postfix_str(run.label())
                try:
                    path = execute_run(run, **kwargs)
                except Exception as exc:  # keep going; report at the end
                    finished(run, None, exc)
                else:
                    finished(run, path, None)
        elif phase:
            bar.set_postfix_str(f"{jobs} at once, {n_threads} thread(s) each")
            _run_in_workers(phase, jobs=jobs, threads=n_threads, kwargs=kwargs, finished=finished)
    bar.close()
    return result


def _recorded(run: GridRun, results_dir: str | Path, result: dict[str, list]) -> bool:
    """Whether ``run`` has a good record now (then it goes to ``skipped``); a damaged file at its path is
    moved aside first (into ``set_aside``), so the rerun loses nothing."""
    path, problem = record_state(results_dir, run)
    if path is not None:
        result["skipped"].append(run)
        return True
    if problem is not None:
        result["set_aside"].append(set_aside(problem.path))
    return False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spreadcon reproduce",
                                description="Run an experiment grid through papermill (book/experiment.ipynb).")
    p.add_argument("--paper", action="store_true",
                   help=f"the paper's whole grid: preset {PAPER_PRESET}, datasets {' '.join(PAPER_DATASETS)}, "
                        f"methods {' '.join(PAPER_METHODS)}, seeds {' '.join(map(str, PAPER_SEEDS))} "
                        f"(flags given beside it replace their part)")
    p.add_argument("--preset", default=None, help=f"smoke, cpu, cpu-long, collapse, colab, paper or official "
                                                  f"(default cpu; {PAPER_PRESET} with --paper)")
    p.add_argument("--datasets", nargs="+", default=None, help="dataset names (space- or comma-separated)")
    p.add_argument("--methods", nargs="+", default=None, help="method names (space- or comma-separated)")
    p.add_argument("--seeds", nargs="+", default=None, help="seeds >= 0, each once (default 0)")
    p.add_argument("--alpha", type=float, default=None, help="cNCE weight for every run (default: the preset's)")
    p.add_argument("--data-root", default=None, help="dataset folder (default $SPREADCON_DATA)")
    p.add_argument("--results", default="results", help="records folder (default results)")
    p.add_argument("--runs", default="runs", help="executed notebooks folder (default runs)")
    p.add_argument("--checkpoints", default="checkpoints",
                   help="root of the runs' checkpoint folders (default checkpoints); a rerun resumes from them")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run; repeatable")
    p.add_argument("--template", default=str(TEMPLATE), help="papermill template notebook")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs executed at once, each in its own process (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run when --jobs > 1 (default: CPU count // jobs)")
    p.add_argument("--gpu", choices=("reference", "t4"), default=None,
                   help="the GPU a dry run prices at: its measured or assumed throughput "
                        "(default t4 for --preset colab, else reference)")
    p.add_argument("--eval-epochs", default="", metavar="E1,E2,...",
                   help="also evaluate every run after these epochs (records: metrics_by_epoch)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs, what would be skipped and the estimated GPU-hours; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _split(values: Sequence[str]) -> list[str]:
    return [v for item in values for v in item.split(",") if v]


def _grid_args(args: argparse.Namespace) -> tuple[str, list[str], list[str], list[int]]:
    """Preset, datasets, methods and seeds from the flags (``--paper`` fills the ones not given)."""
    preset = args.preset or (PAPER_PRESET if args.paper else "cpu")
    datasets = _split(args.datasets) if args.datasets else list(PAPER_DATASETS if args.paper else [])
    methods = _split(args.methods) if args.methods else list(PAPER_METHODS if args.paper else [])
    if not datasets or not methods:
        raise ValueError("give --datasets and --methods, or --paper for the paper's grid")
    raw = _split(args.seeds) if args.seeds else [str(s) for s in (PAPER_SEEDS if args.paper else (0,))]
    try:
        seeds = [int(s) for s in raw]
    except ValueError:
        raise ValueError(f"--seeds must be integers, got {args.seeds!r}") from None
    return preset, datasets, methods, seeds


def _print_problems(plan: Sequence[GridRun], results_dir: str | Path, *, dry_run: bool) -> None:
    """One line per record file of the grid's folders that does not count (:func:`grid_problems`)."""
    for problem in grid_problems(plan, results_dir):
        line = f"  {problem}"
        if any(r.damaged is not None and r.damaged.path == problem.path for r in plan):
            aside = aside_path(problem.path).name
            line += (f"; a run moves it aside to {aside} and reruns its cell" if dry_run
                     else f"; moving it aside to {aside} to rerun its cell")
        print(line)


def _print_costs(plan: Sequence[GridRun], overrides: dict[str, Any], args: argparse.Namespace) -> None:
    """One line per run with its estimated cost, then the ``total:`` line."""
    from spreadcon.runs.cost import gpu_hours, throughput

    at = throughput(args.gpu or ("t4" if plan[0].preset == "colab" else "reference"))
    rows = plan_costs(plan, overrides, args.checkpoints)
    width = max(len(r.label()) for r in plan)
    total = standalone = 0.0
    unknown = 0
    for row in rows:
        r: GridRun = row["run"]
        if r.existing is not None:
            print(f"  {r.label():<{width}}  skip (record {r.existing})")
            continue
        if row["error"] is not None:
            unknown += 1
            print(f"  {r.label():<{width}}  cost unknown ({row['error']})  run -> {r.notebook_path(args.runs)}")
            continue
        total, standalone = total + row["flops"], standalone + row["standalone"]
        cost = f"{gpu_hours(row['flops'], at):8.2f} GPU-h"
        if r.composite:
            reused = f"reuses {', '.join(row['reused'])}" if row["reused"] else "trains its backbones"
            cost += f" ({reused}; stand-alone {gpu_hours(row['standalone'], at):.2f})"
        print(f"  {r.label():<{width}}  {cost}  run -> {r.notebook_path(args.runs)}")
    n = sum(1 for r in plan if r.existing is None)
    extra = f", {unknown} of unknown cost not included" if unknown else ""
    print(f"total: {gpu_hours(total, at):.1f} GPU-hours for {n} runs{extra} "
          f"(composites at their marginal cost; {gpu_hours(standalone, at):.1f} if each trained its own "
          f"backbones), {at.describe()}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 all done, 1 some runs failed, 2 bad arguments, 3 or 4 when every failure was a
    missing (3) or damaged (4) dataset, as from `run` and `data`.

    The seeds and the grid's cells are checked before anything heavy is
    imported; the names then, before any run starts.
    """
    args = _parser().parse_args(argv)
    try:
        preset, datasets, methods, seeds = _grid_args(args)
        check_grid(datasets, methods, seeds)  # no torch needed for these
        overrides = {}
        for item in args.sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
            overrides[key.strip()] = value.strip()
        if args.jobs < 1 or (args.threads is not None and args.threads < 1):
            raise ValueError(f"--jobs and --threads must be positive; got {args.jobs} and {args.threads}")
        plan = plan_grid(preset, datasets, methods, seeds, alpha=args.alpha, results_dir=args.results,
                         overrides=overrides)
    except ValueError as exc:
        print(f"spreadcon reproduce: {exc}", file=sys.stderr)
        return 2
    todo = [r for r in plan if r.existing is None]
    print(f"grid: {len(plan)} runs of preset {preset}, {len(plan) - len(todo)} already recorded under "
          f"{args.results}; checkpoints under {args.checkpoints}")
    _print_problems(plan, args.results, dry_run=args.dry_run)
    if args.dry_run:
        _print_costs(plan, overrides, args)
        return 0
    out = run_grid(plan, results_dir=args.results, runs_dir=args.runs, data_root=args.data_root,
                   overrides=overrides, template=args.template, progress=not args.no_progress, jobs=args.jobs,
                   threads=args.threads, checkpoints_dir=args.checkpoints, eval_epochs=args.eval_epochs)
    print(f"finished {len(out['done'])}, skipped {len(out['skipped'])}, failed {len(out['failed'])}")
    for path in out["done"]:
        print(f"  wrote {path}")
    if out["failed"]:
        print("failed runs:")
        for run, msg in out["failed"]:
            print(f"  {run.label()}: {msg}")
        from spreadcon.data.errors import DataError, exit_code

        data = [e for e in out.get("errors", []) if isinstance(e, DataError)]
        if data and len(data) == len(out["failed"]):  # every failure a missing or damaged dataset: its code
            return max(exit_code(e) for e in data)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
