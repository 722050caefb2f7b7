"""The experiment grid: run ``book/experiment.ipynb`` once per run with papermill.

Command line::

    python -m spreadcon reproduce --preset smoke|cpu|colab|paper|official \\
        --datasets mnist cifar10 --methods supcon spread autoencoder thanos --seeds 0 1 2 \\
        [--alpha A] [--data-root DIR] [--results results] [--runs runs] [--checkpoints checkpoints] \\
        [--set key=value ...] [--jobs N [--threads T]] [--dry-run]
    python -m spreadcon reproduce --paper [--dry-run]     # the paper's whole grid, with its price

For every (dataset, method, seed) of the grid, in that order:

* if a result record for it already exists under ``--results`` (the path is
  :func:`spreadcon.runs.records.record_path`'s), the run is **skipped** -- so an
  interrupted grid resumes where it stopped, and finished runs are never
  repeated;
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
overrides are not part of the folder names: give an overridden grid its own
``--results`` and ``--checkpoints``.

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
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from spreadcon.book.report import PAPER_ROBUSTNESS_DATASETS, PAPER_TRANSFER_DATASETS

__all__ = ["GridRun", "TEMPLATE", "PAPER_DATASETS", "PAPER_METHODS", "PAPER_SEEDS", "PAPER_PRESET",
           "check_grid", "plan_grid", "find_record", "plan_costs", "execute_run", "run_grid",
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
        existing: the path of its record if one already exists, else None.
        backbones: the single-backbone trainings the run needs
            (:func:`spreadcon.runs.cost.backbones_of`): ``(method,)`` for an
            ordinary method, two for ``thanos`` and the pair controls.
    """

    dataset: str
    method: str
    preset: str
    seed: int
    alpha: float | None = None
    existing: Path | None = None
    backbones: tuple[str, ...] = ()

    @property
    def composite(self) -> bool:
        """Whether the run concatenates backbones trained as other methods (``thanos``, the pairs)."""
        return bool(self.backbones) and self.backbones != (self.method,)

    def checkpoint_dir(self, root: str | Path) -> Path:
        """This run's checkpoint folder (see the module docstring for the layout)."""
        folder = Path(root) / self.preset / self.dataset / (
            f"seed{self.seed}" + ("" if self.alpha is None else f"_alpha{self.alpha:g}"))
        return folder if self.composite else folder / self.method

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

    The path comes from :func:`spreadcon.runs.records.record_path`, the one place
    that decides it. A dataset has exactly one task, so checking both tasks
    finds the record without loading the dataset.
    """
    from spreadcon.runs.records import METRIC_KEYS, record_path

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
    return [GridRun(d, m, preset, int(s), alpha, find_record(results_dir, d, m, preset, int(s), alpha),
                    backbones_of(m))
            for d in datasets for m in methods for s in seeds]


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


def execute_run(run: GridRun, results_dir: str | Path, runs_dir: str | Path,
                data_root: str | Path | None = None, overrides: dict[str, Any] | None = None,
                template: str | Path = TEMPLATE, checkpoints_dir: str | Path = "checkpoints",
                eval_epochs: str = "") -> Path:
    """Execute the template for one run with papermill; return the record's path.

    ``eval_epochs`` ("1,2,5"): also evaluate the run after these epochs (the
    record's ``metrics_by_epoch``; :func:`spreadcon.runs.experiment.run_experiment`).

    The notebook gets the run's own checkpoint folder
    (:meth:`GridRun.checkpoint_dir` under ``checkpoints_dir``) with
    ``resume=True``, and ``progress=False`` (no bars in the kept notebook).

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
        "checkpoint_dir": str(run.checkpoint_dir(Path(checkpoints_dir).resolve())), "resume": True,
        "progress": False, "eval_epochs": eval_epochs,
    }
    template = Path(template)
    # the kernel must import the spreadcon that runs this grid: with an editable install of another
    # checkout (a git worktree, say), the kernel would otherwise run that checkout's code, and its
    # records would name the wrong commit
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = kernel_pythonpath(previous)
    try:
        papermill.execute_notebook(str(template), str(out), parameters=params, cwd=str(template.parent),
                                   progress_bar=False, log_output=False)
    except Exception as exc:  # papermill raises its own error types and kernel errors alike
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        message = f"{lines[-1] if lines else type(exc).__name__} (see {out})"
        if getattr(exc, "ename", None) in _DATA_ERRORS:  # the kernel's data error: keep its kind (exit code)
            from spreadcon.data import errors

            raise getattr(errors, _DATA_ERRORS[exc.ename])(message) from exc
        raise RuntimeError(message) from exc
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    path = find_record(results_dir, run.dataset, run.method, run.preset, run.seed, run.alpha)
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


# a data error raised inside a run's kernel, by name -> the class that carries its exit code
_DATA_ERRORS = {"DatasetNotFound": "DatasetNotFound", "CorruptDataset": "CorruptDataset",
                "CorruptDownload": "CorruptDataset", "UnreadableDataset": "UnreadableDataset"}


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
             threads: int | None = None, checkpoints_dir: str | Path = "checkpoints",
             eval_epochs: str = "") -> dict[str, list]:
    """Run every not-yet-recorded run of ``plan``; failures do not stop the rest.

    Composite runs (``thanos``) go after all the others, so that they find
    their backbones' finished checkpoints and no two runs ever train into the
    same folder at once.

    Args:
        checkpoints_dir: the root of the runs' checkpoint folders.
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
            result.setdefault("errors", []).append(exc)
            bar.write(f"FAILED {run.label()}: {exc}")
        bar.update(1)

    args = (results_dir, runs_dir, data_root, overrides, template, checkpoints_dir, eval_epochs)
    phases = [[r for r in todo if not r.composite], [r for r in todo if r.composite]]
    if jobs == 1:
        for run in phases[0] + phases[1]:
            bar.set_postfix_str(run.label())
            try:
                path = execute_run(run, *args)
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
            bar.set_postfix_str(f"{jobs} at once, {n_threads} thread(s) each")
            for phase in phases:  # composites only once every backbone run has ended
                futures = {pool.submit(execute_run, run, *args): run for run in phase}
                for fut in as_completed(futures):
                    exc = fut.exception()
                    finished(futures[fut], None if exc else fut.result(), exc)
    bar.close()
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spreadcon reproduce",
                                description="Run an experiment grid through papermill (book/experiment.ipynb).")
    p.add_argument("--paper", action="store_true",
                   help=f"the paper's whole grid: preset {PAPER_PRESET}, datasets {' '.join(PAPER_DATASETS)}, "
                        f"methods {' '.join(PAPER_METHODS)}, seeds {' '.join(map(str, PAPER_SEEDS))} "
                        f"(flags given beside it replace their part)")
    p.add_argument("--preset", default=None, help=f"smoke, cpu, cpu-long, colab, paper or official "
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
        plan = plan_grid(preset, datasets, methods, seeds, args.alpha, args.results, overrides)
    except ValueError as exc:
        print(f"spreadcon reproduce: {exc}", file=sys.stderr)
        return 2
    todo = [r for r in plan if r.existing is None]
    print(f"grid: {len(plan)} runs of preset {preset}, {len(plan) - len(todo)} already recorded under "
          f"{args.results}; checkpoints under {args.checkpoints}")
    if args.dry_run:
        _print_costs(plan, overrides, args)
        return 0
    out = run_grid(plan, args.results, args.runs, args.data_root, overrides, args.template,
                   progress=not args.no_progress, jobs=args.jobs, threads=args.threads,
                   checkpoints_dir=args.checkpoints, eval_epochs=args.eval_epochs)
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
