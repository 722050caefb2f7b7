"""Atomic file writes: the one place that writes caches, checkpoints and records.

A write goes to a temporary file in the destination folder, is flushed and
fsynced, and then ``os.replace``-d onto the destination. A crash at any point
leaves either the previous file or the new one, never half of one. An
exception (including ``KeyboardInterrupt`` and a SIGTERM turned into one)
removes the temporary file. Only a SIGKILL or a power cut can leave one
behind: its name, ``.NAME.PID.XXXX.tmp``, carries the writer's process id,
and the next write into that folder removes every such file whose writer is
no longer running.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["atomic_write", "atomic_torch_save", "remove_stale_temporaries"]


_writing = 0  # atomic writes in progress in this process
_pending: list[Callable[[], None]] = []  # a signal's action, held until the write is complete


def defer_while_writing(action: Callable[[], None]) -> bool:
    """Hold ``action`` (a signal handler's ``raise``) until the atomic write in progress has finished.

    Returns True when it was held, False when no write is in progress (the caller acts now). A
    signal that interrupted ``torch.save`` midway would surface as a ``RuntimeError`` from its C++
    writer; held, it is raised right after ``os.replace``, with the new file complete.
    """
    if _writing:
        _pending[:] = [action]
        return True
    return False


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *, binary: bool = True,
                 mode: int = 0o644) -> Path:
    """Call ``write(f)`` on a temporary file, then move it onto ``path``.

    Args:
        path: destination; its folder is created if needed.
        write: writes the whole content to the open file ``f``.
        binary: open the temporary file in binary (default) or text mode.
        mode: permission bits of the final file (``mkstemp`` would leave 0600).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = atomic_write(p, lambda f: f.write("hi"), binary=False)
        >>> p.read_text()
        'hi'
    """
    global _writing
    _writing += 1
    try:
        return _atomic_write(Path(path), write, binary=binary, mode=mode)
    finally:
        _writing -= 1
        if not _writing and _pending:
            action = _pending.pop()
            action()


def _atomic_write(path: Path, write: Callable[[IO[Any]], None], *, binary: bool, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_TEMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")  # .NAME.PID.XXXX.tmp, as atomic_write names them


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``; return what was removed.

    Only files named as :func:`atomic_write` names them are touched, and only
    when the process id in the name is not running (a live writer's file is
    left alone). A folder that cannot be listed is skipped.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / ".last.pt.999999999.abcd.tmp").write_bytes(b"half a checkpoint")
        >>> [p.name for p in remove_stale_temporaries(d)]
        ['.last.pt.999999999.abcd.tmp']
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m and not _running(int(m.group(1))):
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (read back with ``weights_only=True``).

    A write that fails (a full disk, a quota, an I/O error) raises :class:`OSError` with the
    failing write's ``errno`` (``ENOSPC`` for a full disk), as any other file write does. Without
    this, ``torch.save``'s C++ writer swallows the error of the file's ``write`` and raises a
    ``RuntimeError`` about a file position instead; the previous file at ``path`` is intact.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = atomic_torch_save({"x": torch.arange(3)}, pathlib.Path(tempfile.mkdtemp()) / "x.pt")
        >>> torch.load(p, weights_only=True)["x"].tolist()
        [0, 1, 2]
    """
    import torch

    def write(f: IO[bytes]) -> None:
        failed: list[OSError] = []
        try:
            torch.save(obj, _RecordingWriter(f, failed))
        except RuntimeError as exc:
            cause = failed[0] if failed else exc.__context__
            if not isinstance(cause, OSError):  # not a write failure (e.g. an object torch cannot save)
                raise
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from exc
        if failed:  # torch went on after a failed write: never move a short file into place
            raise OSError(failed[0].errno, failed[0].strerror or str(failed[0]), str(path)) from failed[0]

    return atomic_write(path, write)


class _RecordingWriter:
    """The file object handed to ``torch.save``: writes through to ``f``, keeping any :class:`OSError`."""

    def __init__(self, f: IO[bytes], failed: list[OSError]) -> None:
        self._f, self._failed = f, failed

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self._failed.append(exc)
            raise

    def flush(self) -> None:
        self._f.flush()
