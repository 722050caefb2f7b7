"""``python -m spreadcon run``: one experiment (train on coarse labels, evaluate, write a record).

Command line::

    python -m spreadcon run DATASET METHOD --preset PRESET --seed N --data-root DIR \\
        --results DIR [--alpha A] [--set key=value ...] [--checkpoint-dir DIR] \\
        [--resume | --fresh | --eval-only] [--device D]

The finished run prints its headline metrics and then the record's path, the
last line on stdout. Under ``torchrun --nproc_per_node N -m spreadcon run ...``
training is data-parallel (gloo on CPU, NCCL on GPU); rank 0 evaluates and
writes the record while the other ranks leave as soon as training ends.

Exit codes: 0 done; 1 an error after training started (the message says where
the trained weights are, if training finished, and the command that evaluates
them); 2 a bad setting, found before any data loads (every config key is
checked against its rule, :data:`spreadcon.presets.RULES`), or a checkpoint
that belongs to another run, found before training; 3 a dataset that is not
under the data root; 4 a dataset that is there but damaged or unreadable;
130 SIGINT; 143 SIGTERM.

Where the record goes: ``<results>/<task>/<dataset>/<preset>/...``, where a run
whose config differs from its preset's (a ``--set`` that changes a value) is
filed under ``<preset>.set.<key>-<value>...`` (:mod:`spreadcon.runs.names`), so a
one-off run never replaces the preset's committed record.

Checkpoints: with ``--checkpoint-dir DIR`` the run checkpoints there, keeping
the last two (``last.pt``, ``prev.pt``). A rerun into a folder that holds a
checkpoint refuses with one line unless told ``--resume`` (continue from the
newest checkpoint that loads; a finished one is only evaluated), ``--fresh``
(delete it and start over) or ``--eval-only`` (evaluate a finished one,
never train). Without ``--checkpoint-dir`` the run checkpoints into a private
temporary folder that is removed once the record is written, and kept (and
named) if the run fails or is interrupted.

The experiment itself is :func:`spreadcon.runs.experiment.run_experiment`, which is
also importable from here. This module imports no torch until the names and
the seed have been checked.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from spreadcon.runs.checks import DATASET_NAMES, METHOD_NAMES, SettingError, check_basic

__all__ = ["main"]

EXIT_ERROR, EXIT_SETTING = 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """SIGTERM, raised where the run is (SIGINT arrives as :class:`KeyboardInterrupt`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM: raise where the run is, unless an atomic write (a checkpoint, a record)
    is in progress; then right after it completes (:func:`spreadcon.util.atomic.defer_while_writing`)."""
    exc = KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)

    def fire() -> None:
        raise exc

    if "spreadcon.util.atomic" in sys.modules and sys.modules["spreadcon.util.atomic"].defer_while_writing(fire):
        return
    fire()


_EPILOG = """\
datasets: {datasets}
methods:  {methods}

--seed N seeds the encoder's initialisation, the shuffling and the augmentation
(an integer from 0; the book's grids use 0, 1, 2). The images in each preset's
subsets are fixed for every method and seed, so seeds vary the training only.
Exit codes: 0 done, 1 failed after training started, 2 bad setting,
3 dataset missing, 4 dataset damaged or unreadable, 130 SIGINT, 143 SIGTERM."""


def _parser() -> argparse.ArgumentParser:
    from spreadcon.presets import PRESETS  # torch-free

    p = argparse.ArgumentParser(
        prog="python -m spreadcon run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one method on a dataset's coarse labels, evaluate it (coarse-to-fine transfer or "
                    "worst-group robustness) and write one JSON result record.",
        epilog=_EPILOG.format(datasets=", ".join(DATASET_NAMES), methods=", ".join(METHOD_NAMES)))
    p.add_argument("dataset", help="dataset name (listed below)")
    p.add_argument("method", help="method name (listed below)")
    p.add_argument("--preset", default="cpu", help=f"one of: {', '.join(PRESETS)} (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="training seed, an integer >= 0 (default 0; see below)")
    p.add_argument("--data-root", default=None, help="dataset folder (default $SPREADCON_DATA)")
    p.add_argument("--results", default="results", help="records folder (default results)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="decoded-dataset cache folder (default $SPREADCON_CACHE, else ~/.cache/spreadcon/decoded)")
    p.add_argument("--alpha", type=float, default=None, help="cNCE weight in L_spread, in [0, 1] (overrides the preset)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; repeatable")
    p.add_argument("--checkpoint-dir", default=None,
                   help="folder for training checkpoints (default: a temporary one, kept only on failure)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    mode.add_argument("--fresh", action="store_true", help="delete the checkpoint in --checkpoint-dir and start over")
    mode.add_argument("--eval-only", action="store_true",
                      help="evaluate the finished checkpoint in --checkpoint-dir without training")
    p.add_argument("--eval-epochs", default="", metavar="E1,E2,...",
                   help="also evaluate the encoder as it was after these epochs (record: metrics_by_epoch)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or status lines")
    return p


def _headline(path: str) -> list[str]:
    """The record's main metrics as short lines (accuracies in percent)."""
    with open(path) as f:
        rec = json.load(f)
    keys = ("fine_test_acc", "coarse_test_acc", "spread") if rec["task"] == "transfer" else \
        ("worst_group_acc", "avg_acc", "oracle_worst_group_acc")
    parts = []
    for k in keys:
        v = rec["metrics"].get(k)
        if isinstance(v, (int, float)):
            parts.append(f"{k} {100 * v:.1f}%" if k.endswith("acc") else f"{k} {v:.3f}")
    return [f"{rec['dataset']} {rec['method']} ({rec['preset']}, seed {rec['seed']}): " + ", ".join(parts)]


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (a checkpoint's load error may quote a multi-line one)."""
    return " ".join(str(exc).split())


def _interrupted_message(exc: BaseException, checkpoint_dir: str | None) -> str:
    name = "SIGINT" if isinstance(exc, KeyboardInterrupt) else exc.signum and signal.Signals(exc.signum).name
    folder = checkpoint_dir or getattr(exc, "checkpoint_dir", None)
    if folder is None:
        return f"interrupted by {name}; no checkpoint had been written yet"
    from spreadcon.train.checkpoint import describe_checkpoint

    found = describe_checkpoint(folder) if os.path.isdir(folder) else None
    for sub in [] if found else sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        found = found or describe_checkpoint(os.path.join(folder, sub))
    if found is None:
        return f"interrupted by {name}; no checkpoint had been written yet"
    return f"interrupted by {name}; the last checkpoint is intact ({found}); continue with " \
           f"--checkpoint-dir {folder} --resume"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code. Prints the headline metrics, then the record path last."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    try:
        for item in args.sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise SettingError(f"--set needs KEY=VALUE, got {item!r}")
            overrides[key.strip()] = value.strip()
        try:
            eval_epochs = tuple(int(e) for e in args.eval_epochs.split(",") if e.strip())
        except ValueError:
            raise SettingError(f"--eval-epochs needs comma-separated epochs, got {args.eval_epochs!r}") from None
        check_basic(dataset=args.dataset, method=args.method, preset=args.preset, seed=args.seed,  # no torch yet
                    overrides={**overrides, **({} if args.alpha is None else {"alpha": args.alpha})},
                    alpha=args.alpha, results_dir=args.results, checkpoint_dir=args.checkpoint_dir,
                    resume=args.resume, fresh=args.fresh, eval_only=args.eval_only)
    except SettingError as exc:
        print(f"spreadcon run: {_one_line(exc)}", file=sys.stderr)
        return EXIT_SETTING
    previous = {}
    try:
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals stay as they are
        pass
    from spreadcon import distributed as D
    # torch-free; found before training, these name another run's folder: a setting, exit 2
    from spreadcon.train.checkpoint import CheckpointBusy, CheckpointError, CheckpointExists, CheckpointMismatch

    path, code = None, 0
    try:
        from spreadcon.data.errors import DataError, exit_code
        from spreadcon.runs.experiment import TrainingSaved, run_experiment

        path = run_experiment(args.dataset, args.method, preset=args.preset, seed=args.seed,
                              data_root=args.data_root, results_dir=args.results, overrides=overrides,
                              alpha=args.alpha, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                              fresh=args.fresh, eval_only=args.eval_only, device=args.device,
                              progress=not args.no_progress, eval_epochs=eval_epochs, cache=args.cache)
    except (SettingError, CheckpointMismatch, CheckpointBusy, CheckpointExists) as exc:  # before training
        print(f"spreadcon run: {_one_line(exc)}", file=sys.stderr)
        code = EXIT_SETTING
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"spreadcon run: {_interrupted_message(exc, args.checkpoint_dir)}", file=sys.stderr)
        code = EXIT_SIGNAL[signal.SIGINT if isinstance(exc, KeyboardInterrupt) else exc.signum]
    except DataError as exc:  # a missing or damaged dataset says what to do about it
        print(f"spreadcon run: {exc}", file=sys.stderr)
        code = exit_code(exc)
    except (TrainingSaved, CheckpointError) as exc:
        print(f"spreadcon run: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    except Exception as exc:
        if not D.is_distributed():
            raise
        print(f"spreadcon run: rank {D.rank()}: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if D.is_distributed():
        if code:  # leave at once: no barrier, no collective that the other ranks would wait in
            sys.stderr.flush()
            os._exit(code)
        import torch.distributed as dist

        dist.destroy_process_group()
    if path is not None:
        for line in _headline(str(path)):
            print(line)
        print(path, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
