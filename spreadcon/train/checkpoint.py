"""Training checkpoints: atomic ``last.pt``/``prev.pt``, which run they belong to, snapshots, one writer.

A run's checkpoint folder holds:

* ``last.pt``: written atomically (:func:`spreadcon.util.atomic.atomic_torch_save`) every
  ``cfg.checkpoint_every`` epochs, when a call stops early, and at the end;
* ``prev.pt``: the ``last.pt`` it replaced, so a damaged ``last.pt`` leaves something to fall
  back on (:func:`latest_checkpoint` takes the newest one that loads, and says which);
* ``snapshots/epoch-EEEE.pt``: the encoder's weights after chosen epochs (:func:`snapshot_path`);
* ``.lock``: held (``flock``) by the process that trains there, so a second run into the same
  folder is refused (:func:`lock_folder`) instead of interleaving its writes.

A checkpoint holds tensors and primitive containers only, so it loads with
``torch.load(weights_only=True)``: model, optimiser, step, epoch, the data generator's state, the
global CPU (and CUDA) RNG states, the best model so far and its score, the history, and the run's
identity: method, seed, resolved config, dataset name, data root and data source
(:func:`data_source`, a fingerprint of the images and labels). A resume whose identity differs is
refused (:class:`CheckpointMismatch`): a checkpoint never continues on other data or settings.

Nothing here imports torch at import time: the settings checks (:mod:`spreadcon.runs.checks`)
find and describe checkpoints before torch is needed; the functions that read or write a
checkpoint import it when called.

Example:
    >>> snapshot_path("ck", 5).as_posix()
    'ck/snapshots/epoch-0005.pt'
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from spreadcon.util.atomic import atomic_torch_save, atomic_write

__all__ = [
    "CHECKPOINT_VERSION", "CHECKPOINT_NAMES", "CheckpointError", "CheckpointExists", "CheckpointMismatch",
    "CheckpointBusy", "save_checkpoint", "load_checkpoint", "checkpoint_files", "latest_checkpoint",
    "describe_checkpoint", "snapshot_path", "save_rotating", "open_checkpoint", "check_identity",
    "data_source", "lock_folder", "folder_in_use",
]

#: 2 added the run's data identity (``dataset``, ``data_root``, ``data_source``)
CHECKPOINT_VERSION = 2
CHECKPOINT_NAMES = ("last.pt", "prev.pt")  # newest first
LOCK_NAME = ".lock"
_KEYS = ("version", "epoch", "step", "model", "optimizer", "generator", "torch_rng",
         "best_val_acc", "best_epoch", "best_model", "history", "config", "method", "seed")
_DATA_KEYS = ("dataset", "data_root", "data_source")  # from version 2 on
_FINGERPRINT_BYTES = 1 << 25  # images hashed per split, at most (a fixed stride through larger splits)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that belongs to a different run."""


class CheckpointExists(CheckpointError):
    """A run without ``resume`` found a checkpoint it would overwrite."""


class CheckpointMismatch(CheckpointError):
    """A resume into a checkpoint of another run (method, seed, config, dataset or data differ)."""


class CheckpointBusy(CheckpointError):
    """The checkpoint folder is in use by another running process."""


# --------------------------------------------------------------------------- files


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: a temp file in the same folder, fsync, ``os.replace``.

    If anything fails midway the temp file is removed and any previous checkpoint at ``path``
    is untouched; a full disk raises :class:`OSError` (``errno.ENOSPC``).
    """
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its keys.

    Raises:
        CheckpointError: the file is truncated, corrupt, or not one of ours.
            The file itself is left as it is.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / garbage files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or partial ({type(exc).__name__}: {exc}). "
            f"Delete it to start over, or restore an earlier copy; nothing was overwritten."
        ) from exc
    version = state.get("version") if isinstance(state, dict) else None
    if version not in (1, CHECKPOINT_VERSION):
        raise CheckpointError(f"checkpoint {path} has version {version}, expected {CHECKPOINT_VERSION}")
    missing = [k for k in _KEYS + (_DATA_KEYS if version >= 2 else ()) if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}; it was not written by spreadcon.train")
    return state


def checkpoint_files(checkpoint_dir: str | Path) -> list[Path]:
    """The checkpoints present in ``checkpoint_dir``, newest first (``last.pt``, then ``prev.pt``)."""
    return [p for p in (Path(checkpoint_dir) / n for n in CHECKPOINT_NAMES) if p.exists()]


def latest_checkpoint(checkpoint_dir: str | Path, *, say: Callable[[str], None] | None = None
                      ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``checkpoint_dir`` that loads, as ``(path, state)``; None if there is none.

    A damaged ``last.pt`` falls back to ``prev.pt``; ``say`` (e.g. ``print``) is told what was
    skipped and which file is used.

    Raises:
        CheckpointError: there are checkpoints and none of them loads.
    """
    errors = []
    for path in checkpoint_files(checkpoint_dir):
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            if say is not None:
                say(f"skipping {path}: it does not load ({str(exc).split(' (')[0]})")
            continue
        if say is not None and errors:
            say(f"resuming from the previous checkpoint {path} (epoch {int(state['epoch'])})")
        return path, state
    if errors:
        raise CheckpointError("no checkpoint in " + str(checkpoint_dir) + " loads: " + "; ".join(errors))
    return None


def describe_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """``"<dir> from epoch E"`` for the newest loadable checkpoint in the folder, ``"<dir> (unreadable)"``
    when none loads, or None when the folder has no checkpoint."""
    if not checkpoint_files(checkpoint_dir):
        return None
    try:
        found = latest_checkpoint(checkpoint_dir)
    except CheckpointError:
        return f"{checkpoint_dir} (unreadable)"
    return f"{checkpoint_dir} from epoch {int(found[1]['epoch'])}" if found else None


def snapshot_path(checkpoint_dir: str | Path, epoch: int) -> Path:
    """Where :func:`spreadcon.train.loop.train` keeps the encoder's weights after ``epoch`` (``snapshot_epochs``).

    Example:
        >>> snapshot_path("ck", 5).as_posix()
        'ck/snapshots/epoch-0005.pt'
    """
    return Path(checkpoint_dir) / "snapshots" / f"epoch-{epoch:04d}.pt"


def save_rotating(state: dict[str, Any], ckpt_path: Path, keep_previous: bool) -> None:
    """Write ``last.pt``; with ``keep_previous`` the file it replaces becomes ``prev.pt`` first.

    ``keep_previous`` is False when the current ``last.pt`` is not known to be good (it failed to
    load on resume): then it is overwritten and ``prev.pt`` is left as it is.
    """
    if keep_previous and ckpt_path.exists():
        # last.pt -> prev.pt without a moment when last.pt is missing: a hard link (or, on a file
        # system without them, a copy) under a temporary name, moved onto prev.pt atomically
        prev = ckpt_path.with_name(CHECKPOINT_NAMES[1])
        tmp = ckpt_path.with_name(f".{prev.name}.{os.getpid()}.link.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(ckpt_path, tmp)
            os.replace(tmp, prev)
        except OSError:
            tmp.unlink(missing_ok=True)
            atomic_write(prev, lambda f: f.write(ckpt_path.read_bytes()))
    save_checkpoint(state, ckpt_path)


def _clear(checkpoint_dir: Path, *, checkpoints: bool) -> None:
    """Delete the snapshots (and with ``checkpoints`` the checkpoints) in ``checkpoint_dir``: only the
    files this module names, then the ``snapshots`` folder if nothing else is in it."""
    for old in checkpoint_files(checkpoint_dir) if checkpoints else []:
        old.unlink()
    snapshots = snapshot_path(checkpoint_dir, 0).parent
    if snapshots.is_dir():
        for old in snapshots.glob("epoch-*.pt"):
            old.unlink()
        with contextlib.suppress(OSError):
            snapshots.rmdir()


def open_checkpoint(checkpoint_dir: str | Path, *, resume: bool, fresh: bool, writer: bool = True,
                    say: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """Decide how a training run starts in ``checkpoint_dir``; return the checkpoint to resume, if any.

    * ``fresh``: the folder's checkpoints and snapshots are deleted; None.
    * ``resume``: the newest checkpoint that loads (:func:`latest_checkpoint`), or None if there is none.
    * neither: a checkpoint there raises :class:`CheckpointExists` (nothing is overwritten).

    A run that starts from scratch deletes the snapshots it finds (they belong to a run whose
    checkpoint is gone; left, a later ``--eval-only --eval-epochs`` would report their metrics as
    this run's). Only the ``writer`` (rank 0 under DDP) deletes.
    """
    checkpoint_dir = Path(checkpoint_dir)
    found = None
    if checkpoint_files(checkpoint_dir) and not fresh:
        if not resume:
            raise CheckpointExists(f"checkpoint at {describe_checkpoint(checkpoint_dir)}; "
                                   f"pass --resume to continue or --fresh to start over")
        found = latest_checkpoint(checkpoint_dir, say=say)
    if found is None and writer:
        _clear(checkpoint_dir, checkpoints=fresh)
    return found


# --------------------------------------------------------------------------- which run a checkpoint belongs to


def data_source(dataset) -> str:
    """A fingerprint (16 hex digits of SHA-256) of the images and labels of ``dataset``'s splits.

    It covers each split's name, size, image shape and dtype, every label (fine, coarse, group) and
    the images: all of them up to 32 MiB per split, beyond that every ``k``-th image (a fixed
    stride, so the same data gives the same fingerprint). A streamed split contributes its file
    names. Two runs on different data (another dataset under the same name, another data root's
    copy with other files, another subset) get different fingerprints.

    Example:
        >>> import torch
        >>> from spreadcon.data import Dataset, Split
        >>> def ds(px):
        ...     s = Split(fine=torch.tensor([0, 1]), coarse=torch.tensor([0, 0]), images=torch.full((2, 1, 2, 2), px))
        ...     return Dataset("toy", "transfer", (1, 2, 2), ["a", "b"], ["ab"], (0.5,), (0.25,), False, {"train": s})
        >>> data_source(ds(3)) == data_source(ds(3)), data_source(ds(3)) == data_source(ds(4))
        (True, False)
    """
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(dataset.splits):
        split = dataset.splits[name]
        for labels in (split.fine, split.coarse, split.group):
            digest.update(b"-" if labels is None else labels.detach().cpu().contiguous().numpy().tobytes())
        if split.images is None:
            digest.update(f"{name}:{len(split)}:files:{'|'.join(split.files)}".encode())
            continue
        images = split.images.detach()
        digest.update(f"{name}:{tuple(images.shape)}:{images.dtype}".encode())
        size = images.numel() * images.element_size()
        stride = max(1, math.ceil(size / _FINGERPRINT_BYTES))
        digest.update(images[::stride].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


#: Config keys added after checkpoints were first written, with the value every older run used:
#: a checkpoint whose config lacks one of them belongs to a run with that value.
LATER_CONFIG_KEYS: dict[str, Any] = {"hierarchy": "wordnet"}


def _differences(state: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's identity and the run's, as short phrases."""
    out = []
    if isinstance(state.get("config"), dict):  # an older checkpoint: the later keys at their old value
        state = {**state, "config": {**LATER_CONFIG_KEYS, **state["config"]}}
    for key in ("method", "seed", "dataset"):
        if key in identity and state.get(key) != identity[key]:
            out.append(f"{key} {state[key]!r}, not {identity[key]!r}" if key in state else
                       f"no {key} recorded (an older checkpoint), this run's is {identity[key]!r}")
    if "data_source" in identity and state.get("data_source") != identity["data_source"]:
        out.append(f"data fingerprint {state.get('data_source', 'unrecorded')} (read from "
                   f"{state.get('data_root', 'an unrecorded root')}), not {identity['data_source']} (read from "
                   f"{identity.get('data_root')})")
    if "config" in identity and state.get("config") != identity["config"]:
        old, new = state.get("config") or {}, identity["config"]
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        out.append("config " + ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in keys[:4])
                   + (" ..." if len(keys) > 4 else ""))
    return out


def check_identity(path: str | Path, state: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to resume ``state`` (read from ``path``) unless it belongs to the run ``identity`` describes.

    ``identity`` has some of ``method``, ``seed``, ``config`` (a dict), ``dataset``, ``data_root``
    and ``data_source``; each key present must equal the checkpoint's, except ``data_root``: the
    same data (the same ``data_source``) read from another folder is the same run.

    Raises:
        CheckpointMismatch: one line naming what differs.
    """
    diff = _differences(state, identity)
    if diff:
        raise CheckpointMismatch(f"checkpoint {path} belongs to a different run ({'; '.join(diff)}); "
                                 f"use another --checkpoint-dir, or --fresh to start over there")


# --------------------------------------------------------------------------- one writer per folder


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def lock_folder(folder: str | Path) -> Iterator[None]:
    """Hold ``<folder>/.lock`` exclusively (``fcntl.flock``) while the block runs.

    The lock ends with the block, or with the process however it ends (the kernel drops it),
    so a killed run never leaves the folder locked. The file stays, holding the last holder's pid.
    Where ``fcntl`` does not exist (Windows) nothing is locked.

    Raises:
        CheckpointBusy: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointBusy(f"the checkpoint folder {folder} is in use by another run{_holder(lock)}; "
                                 f"wait for it to end, or choose another --checkpoint-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def folder_in_use(folder: str | Path) -> str | None:
    """A one-line reason when another process holds ``folder``'s lock (:func:`lock_folder`), else None.

    Creates nothing: a folder without a lock file is free.
    """
    lock = Path(folder) / LOCK_NAME
    try:
        import fcntl

        fd = os.open(lock, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"the checkpoint folder {folder} is in use by another run{_holder(lock)}; " \
               f"wait for it to end, or choose another --checkpoint-dir"
    finally:
        os.close(fd)
    return None
