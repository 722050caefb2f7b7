"""Atomic file writes: the one place that writes caches, checkpoints and records.

A write goes to a temporary file in the destination folder, is flushed and
fsynced, and then ``os.replace``-d onto the destination. A crash at any point
leaves either the previous file or the new one, never half of one, and no
temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch

__all__ = ["atomic_write", "atomic_torch_save"]


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (read back with ``weights_only=True``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))
