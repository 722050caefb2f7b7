"""Every setting of a run checked before anything expensive: names, seed, folders, device, checkpoints.

The checks run in two rounds. The first needs no torch (importing it takes
seconds here), so a mistyped name, a negative seed, an unknown config key or
an unwritable folder is reported in well under a second. The second needs
torch: the device, and whether the checkpoint folder already holds a run.
Each failure is a :class:`SettingError` with a one-line message; the command
line prints it and exits 2.

The name lists are written here, without importing the registries behind them
(which import torch); ``tests/test_run_reliability.py`` checks that they match.

Example:
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    spreadcon.runs.checks.SettingError: --seed must be an integer from 0 to 4294966295; got -1
    >>> check_names("mnist", "spraed", "smoke")
    Traceback (most recent call last):
    ...
    spreadcon.runs.checks.SettingError: unknown method 'spraed'; valid methods: ce, supcon, spread, autoencoder, simclr, thanos, thanos-joint, supcon-quirks, spread-quirks, thanos-quirks, supcon-clamp, random-init, supcon-pair, spread-pair
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["SettingError", "DATASET_NAMES", "METHOD_NAMES", "check_names", "check_seed", "check_writable",
           "check_device", "check_basic", "check_settings", "check_world_size", "MAX_SEED"]

#: :data:`spreadcon.data.DATASETS`, without importing it
DATASET_NAMES = ("mnist", "cifar10", "cifar100", "cifar100u", "tinyimagenet", "waterbirds", "celeba", "isic",
                 "folder", "mnist-cifar", "cifar-patch")
#: the datasets whose task is worst-group robustness (their runs cluster subgroups)
ROBUSTNESS_NAMES = ("waterbirds", "celeba", "isic", "mnist-cifar", "cifar-patch")
#: :data:`spreadcon.methods.METHODS`, without importing it
METHOD_NAMES = ("ce", "supcon", "spread", "autoencoder", "simclr", "thanos", "thanos-joint", "supcon-quirks",
                "spread-quirks", "thanos-quirks", "supcon-clamp", "random-init", "supcon-pair", "spread-pair")
# seeds feed torch.manual_seed and k-means' random_state (< 2**32); the pair controls add 1000
MAX_SEED = 2**32 - 1 - 1000


class SettingError(ValueError):
    """A setting that cannot work, found before any data loads."""


def check_names(dataset: str, method: str, preset: str) -> None:
    """Dataset, method and preset names (no torch import)."""
    from spreadcon.presets import PRESETS  # torch-free

    for what, name, valid in (("dataset", dataset, DATASET_NAMES), ("method", method, METHOD_NAMES),
                              ("preset", preset, tuple(PRESETS))):
        if name not in valid:
            raise SettingError(f"unknown {what} {name!r}; valid {what}s: {', '.join(valid)}")


def check_seed(seed: Any) -> int:
    """The seed as an int in ``[0, MAX_SEED]``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SettingError(f"--seed must be an integer from 0 to {MAX_SEED}; got {seed!r}")
    return seed


def check_writable(folder: str | Path, what: str, flag: str) -> Path:
    """Create ``folder`` if needed and prove it can be written (a probe file, removed again)."""
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".spreadcon-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SettingError(f"the {what} folder {folder} cannot be written ({reason}); choose another with {flag}"
                           ) from None
    return folder


def check_device(device: str | None) -> None:
    """``device`` names a device this machine has (imports torch unless it is ``cpu`` or None)."""
    if device is None or device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SettingError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError(f"--device {device} asked for a GPU, but torch sees no CUDA device here; "
                               f"use --device cpu") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise SettingError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise SettingError(f"--device {device!r}: only cpu, cuda[:N] and mps are supported")


def _check_checkpoints(folders: list[tuple[Path, dict[str, Any]]], *, resume: bool, fresh: bool, eval_only: bool,
                       epochs: int) -> None:
    """Each ``(folder, identity)``: not in use by another run, and its checkpoint usable as asked.

    ``identity`` (``method``, ``seed``, ``dataset``) is what a checkpoint to resume or evaluate must
    belong to; :func:`spreadcon.train.loop.train` checks the rest (config, data) once the data is loaded.
    """
    from spreadcon.train.checkpoint import (CheckpointError, CheckpointMismatch, check_identity, checkpoint_files,
                                            describe_checkpoint, folder_in_use, latest_checkpoint)

    for folder, identity in folders:
        busy = folder_in_use(folder)
        if busy:
            raise SettingError(busy)
        present = checkpoint_files(folder)
        if eval_only and not present:
            raise SettingError(f"--eval-only needs a finished checkpoint in {folder}; there is none")
        if present and not (resume or fresh or eval_only):
            raise SettingError(f"checkpoint at {describe_checkpoint(folder)}; "
                               f"pass --resume to continue or --fresh to start over")
        if not present or fresh:
            continue
        try:
            path, state = latest_checkpoint(folder)
            check_identity(path, state, identity)
        except CheckpointMismatch as exc:
            raise SettingError(str(exc)) from None
        except CheckpointError as exc:
            if eval_only:
                raise SettingError(str(exc)) from None
            continue  # --resume: training says which file it skips, or that none loads
        if eval_only and int(state["epoch"]) < epochs:
            raise SettingError(f"--eval-only: the checkpoint in {folder} is from epoch {int(state['epoch'])} "
                               f"of {epochs}; training did not finish (use --resume)")


def check_basic(*, dataset: str, method: str, preset: str, seed: Any, overrides: dict[str, Any] | None = None,
                alpha: float | None = None, results_dir: str | Path = "results",
                checkpoint_dir: str | Path | None = None, resume: bool = False, fresh: bool = False,
                eval_only: bool = False):
    """The first round of :func:`check_settings`, without torch: names, seed, modes, config keys,
    writable folders. Returns the resolved :class:`spreadcon.presets.Config`."""
    from spreadcon.presets import resolve

    check_names(dataset, method, preset)
    check_seed(seed)
    if sum(map(bool, (resume, fresh, eval_only))) > 1:
        raise SettingError("--resume, --fresh and --eval-only exclude each other; pass one")
    if (resume or eval_only) and checkpoint_dir is None:
        raise SettingError(f"--{'resume' if resume else 'eval-only'} needs --checkpoint-dir")
    if alpha is not None and (isinstance(alpha, bool) or not (isinstance(alpha, (int, float))
                                                             and 0.0 <= float(alpha) <= 1.0)):
        raise SettingError(f"--alpha must be in [0, 1]; got {alpha!r}")
    try:
        cfg = resolve(preset, dataset, overrides)  # every key against its rule (spreadcon.presets.RULES)
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    check_world_size(cfg.batch_size)
    if dataset in ROBUSTNESS_NAMES:
        check_subgroup_clustering(cfg.subgroup_cluster)
    check_writable(results_dir, "results", "--results")
    if checkpoint_dir is not None:
        check_writable(checkpoint_dir, "checkpoint", "--checkpoint-dir")
    return cfg


def check_world_size(batch_size: int) -> None:
    """Under ``torchrun`` (``$WORLD_SIZE`` processes) each process takes an equal share of a batch."""
    try:
        world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        world = 1
    if batch_size % world:
        raise SettingError(f"config batch_size={batch_size} must be divisible by the number of processes "
                           f"({world}, $WORLD_SIZE)")


def check_subgroup_clustering(cluster: str) -> None:
    """A robustness run clusters with UMAP (GEORGE's step 1) unless told otherwise: is ``umap-learn`` there?

    Checked before training, so a missing package never costs a finished run its evaluation.
    """
    import importlib.util

    if cluster.startswith("umap") and importlib.util.find_spec("umap") is None:
        raise SettingError(f"subgroup_cluster={cluster} needs umap-learn (GEORGE's dependency): pip install "
                           "umap-learn, or pass --set subgroup_cluster=kmeans-raw")


def check_settings(*, dataset: str, method: str, preset: str, seed: Any, overrides: dict[str, Any] | None = None,
                   alpha: float | None = None, results_dir: str | Path = "results",
                   checkpoint_dir: str | Path | None = None, resume: bool = False, fresh: bool = False,
                   eval_only: bool = False, device: str | None = None):
    """Check one run's settings; return its resolved :class:`spreadcon.presets.Config`.

    Raises:
        SettingError: the first setting that cannot work, in one line.
    """
    cfg = check_basic(dataset=dataset, method=method, preset=preset, seed=seed, overrides=overrides, alpha=alpha,
                      results_dir=results_dir, checkpoint_dir=checkpoint_dir, resume=resume, fresh=fresh,
                      eval_only=eval_only)
    check_device(device)
    if checkpoint_dir is not None:
        from spreadcon.methods import get_method

        m = get_method(method)
        folders = [] if m.untrained else [(Path(checkpoint_dir) / sub, {"method": name, "seed": bseed, "dataset": dataset})
                                          for name, bseed, sub in m.backbone_runs(seed)]
        _check_checkpoints(folders, resume=resume, fresh=fresh, eval_only=eval_only, epochs=cfg.epochs)
    return cfg
