"""Decoded-dataset caches: where they go, how they are written, listed and removed.

Decoding CIFAR-10's 60,000 JPEGs or TinyImageNet's 30,000 takes a minute; the
decoded uint8 tensors are saved once and read back in about a second.

Where (the first that is set):

1. the ``cache`` argument of :func:`spreadcon.data.load` (``--cache DIR`` on
   the command line);
2. the environment variable ``SPREADCON_CACHE`` (the documented override:
   ``run`` and ``reproduce`` read it too);
3. ``$XDG_CACHE_HOME/spreadcon/decoded``;
4. ``~/.cache/spreadcon/decoded``.

The data root is never written unless the user names it as the cache. The
``decoded/`` subfolder keeps caches apart from downloads when the data root
is the default ``~/.cache/spreadcon`` too.

Format: ``<name>-<key>.pt`` written by ``torch.save`` atomically (temporary
file, then ``os.replace``) and read with ``torch.load(weights_only=True)``,
which unpickles tensors, lists, dicts and strings only, never code. ``key``
hashes the cache version, the name and each source file's path, size and
mtime, so a changed source gets a new cache. Beside it, ``<name>-<key>.json``
records the dataset, the sources and the size, for ``data cache`` to list.

What can go wrong costs speed only, with one line on stderr: a damaged or
truncated cache is rebuilt from the source, and an unwritable cache folder
means decoding from the source on every load. The first build of a cache
prints one line saying where it went and how large it is.

These status lines are for a terminal, not for a published page
(:func:`status_lines_wanted`): never inside a Jupyter kernel (a chapter would
show them as a stderr box with this machine's paths); else when
``$SPREADCON_VERBOSE`` says so (``1`` on, ``0`` off); else when a command asks
for them (``python -m spreadcon data`` does, :func:`status_lines`); else only
when stderr is a terminal.

Example:
    >>> import tempfile, torch
    >>> d = Path(tempfile.mkdtemp())
    >>> src = d / "src.bin"; _ = src.write_bytes(b"pixels")
    >>> a = cached("toy", [src], lambda: {"x": torch.arange(3)}, d / "c", quiet=True)
    >>> b = cached("toy", [src], lambda: {"x": torch.zeros(3)}, d / "c", quiet=True)  # read back, not rebuilt
    >>> b["x"].tolist(), [e.name for e in list_caches(d / "c")]
    ([0, 1, 2], ['toy'])
    >>> [e.name for e in clear_caches(cache=d / "c")], list_caches(d / "c")
    (['toy'], [])
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from spreadcon.util.atomic import atomic_torch_save, atomic_write

CACHE_VERSION = 1
CACHE_ENV = "SPREADCON_CACHE"
#: ``1`` prints the cache's status lines wherever stderr goes, ``0`` never (a Jupyter kernel: never).
VERBOSE_ENV = "SPREADCON_VERBOSE"
_ASKED: contextvars.ContextVar[bool | None] = contextvars.ContextVar("spreadcon_status_lines", default=None)
_CACHE_FILE = re.compile(r"^(?P<name>.+)-(?P<key>[0-9a-f]{16})\.pt$")
_TEMP_FILE = re.compile(r"^\..+-[0-9a-f]{16}\.(pt|json)\.[A-Za-z0-9_]+\.tmp$")  # atomic_write's temporary files


def cache_dir(cache: str | Path | None = None) -> Path:
    """The cache folder: ``cache`` if given, else ``$SPREADCON_CACHE``, else
    ``$XDG_CACHE_HOME/spreadcon/decoded``, else ``~/.cache/spreadcon/decoded``.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {CACHE_ENV: "/tmp/my-caches"}):
        ...     cache_dir(), cache_dir("/elsewhere")
        (PosixPath('/tmp/my-caches'), PosixPath('/elsewhere'))
    """
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path.home() / ".cache"
    return base / "spreadcon" / "decoded"


def _in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, a chapter executed by the book build or nbmake)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None) is not None


def status_lines_wanted() -> bool:
    """Whether :func:`notice` prints: never in a Jupyter kernel; else ``$SPREADCON_VERBOSE`` (``0``/``1``)
    when set; else what :func:`status_lines` asked; else whether stderr is a terminal.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {VERBOSE_ENV: "1"}):
        ...     status_lines_wanted()
        True
        >>> with mock.patch.dict(os.environ, {VERBOSE_ENV: "0"}), status_lines():
        ...     status_lines_wanted()
        False
    """
    if _in_jupyter_kernel():
        return False
    env = os.environ.get(VERBOSE_ENV, "").strip().lower()
    if env:
        return env not in ("0", "false", "no", "off")
    if _ASKED.get() is not None:
        return bool(_ASKED.get())
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


@contextlib.contextmanager
def status_lines(on: bool = True):
    """Within the block, print the status lines (``on``) or not, whatever stderr is (a kernel: never)."""
    token = _ASKED.set(on)
    try:
        yield
    finally:
        _ASKED.reset(token)


def notice(message: str) -> None:
    """One line on stderr, prefixed ``spreadcon:``: what a cache did that costs time or space.

    Printed only where :func:`status_lines_wanted` says so: on a terminal, not on a page.
    """
    if status_lines_wanted():
        print(f"spreadcon: {message}", file=sys.stderr, flush=True)


def human_bytes(n: int) -> str:
    """``185.3 MB`` style sizes (powers of 1000).

    Example:
        >>> human_bytes(999), human_bytes(185_312_000), human_bytes(2_500_000_000)
        ('999 B', '185.3 MB', '2.5 GB')
    """
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------- read and write


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``."""
    atomic_torch_save(obj, path)


def read_cache(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU; raises if the file is absent or damaged."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def load_cache(path: str | Path):
    """Read a cache written by :func:`save_atomic`; None if absent or unreadable."""
    try:
        return read_cache(path)
    except Exception:  # absent, from another torch version, or damaged: the caller rebuilds it
        return None


def cache_key(name: str, sources: list[Path]) -> str:
    """16 hex digits hashing :data:`CACHE_VERSION`, ``name`` and each source's resolved path, size and mtime."""
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources)
    return hashlib.sha256(f"{CACHE_VERSION}|{name}|{stamp}".encode()).hexdigest()[:16]


def _write_sidecar(path: Path, name: str, dataset: str, sources: list[Path]) -> None:
    info = {
        "name": name,
        "dataset": dataset,
        "sources": [str(p.resolve()) for p in sources],
        "bytes": path.stat().st_size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime)),
        "cache_version": CACHE_VERSION,
        "torch_version": torch.__version__,
    }
    atomic_write(path.with_suffix(".json"), lambda f: json.dump(info, f, indent=1), binary=False)


def cached(
    name: str,
    sources: list[Path],
    build: Callable[[], dict],
    cache: str | Path | None = None,
    *,
    dataset: str | None = None,
    quiet: bool = False,
) -> dict:
    """``build()``, memoised on disk under :func:`cache_dir` ``(cache)``.

    Args:
        name: the cache's name (``cifar10-jpeg``); also the file name's stem.
        sources: the files ``build`` reads; their paths, sizes and mtimes key the cache.
        build: returns a dict of tensors, lists and strings.
        cache: the cache folder (default :func:`cache_dir`).
        dataset: the dataset it belongs to, for ``data cache --clear NAME`` (default ``name``).
        quiet: no notices on stderr.

    A damaged cache is rebuilt, and an unwritable folder only costs speed;
    either says so in one line on stderr (unless ``quiet``, and only where
    :func:`status_lines_wanted`).
    """
    say = (lambda m: None) if quiet else notice
    path = cache_dir(cache) / f"{name}-{cache_key(name, sources)}.pt"
    if path.is_file():
        try:
            hit = read_cache(path)
        except Exception as e:  # truncated, damaged, or from an incompatible torch
            say(f"cache {path} is damaged ({type(e).__name__}); rebuilding it from {', '.join(map(str, sources))}")
        else:
            if not path.with_suffix(".json").is_file():
                try:  # a cache from before the sidecar: record its sources now, for `data cache`
                    _write_sidecar(path, name, dataset or name, sources)
                except OSError:
                    pass
            return hit
    data = build()
    try:
        save_atomic(data, path)
        _write_sidecar(path, name, dataset or name, sources)
    except OSError as e:  # an unwritable cache folder only costs speed
        say(f"cannot write the cache {path} ({e.strerror or e}); decoding from source on every load "
            f"(set {CACHE_ENV} or --cache to a writable folder)")
    else:
        say(f"decoded {name} once into {path} ({human_bytes(path.stat().st_size)}); later loads read it "
            "(`python -m spreadcon data cache` lists caches, `--clear` removes them)")
    return data


# --------------------------------------------------------------------------- list and clear


@dataclass
class CacheEntry:
    """One cache file and what its sidecar says about it."""

    path: Path
    name: str
    dataset: str
    bytes: int
    sources: list[str] = field(default_factory=list)
    created: str = ""

    def as_dict(self) -> dict:
        return {"path": str(self.path), "name": self.name, "dataset": self.dataset, "bytes": self.bytes,
                "sources": self.sources, "created": self.created}


def list_caches(cache: str | Path | None = None) -> list[CacheEntry]:
    """The caches in :func:`cache_dir` ``(cache)``, sorted by name; only files named ``<name>-<16 hex>.pt``."""
    folder = cache_dir(cache)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        m = _CACHE_FILE.match(p.name)
        if not m or not p.is_file():
            continue
        info = {}
        try:
            info = json.loads(p.with_suffix(".json").read_text())
        except (OSError, ValueError):
            pass
        out.append(CacheEntry(
            path=p, name=m["name"], dataset=str(info.get("dataset", m["name"])), bytes=p.stat().st_size,
            sources=list(info.get("sources", [])), created=str(info.get("created", "")),
        ))
    return sorted(out, key=lambda e: (e.name, e.path.name))


def clear_caches(name: str | None = None, cache: str | Path | None = None) -> list[CacheEntry]:
    """Remove the caches (all, or those whose name or dataset is ``name``) and their sidecars; returns them.

    Only files this module writes are removed (``<name>-<16 hex>.pt`` and
    ``.json``, and temporary files a killed write left), so naming the data
    root as the cache never puts the data at risk.
    """
    gone = [e for e in list_caches(cache) if name is None or name in (e.name, e.dataset, e.path.name)]
    for e in gone:
        e.path.unlink(missing_ok=True)
        e.path.with_suffix(".json").unlink(missing_ok=True)
    folder = cache_dir(cache)
    if name is None and folder.is_dir():
        for p in folder.iterdir():  # left by a write that was killed (SIGKILL skips the clean-up)
            if _TEMP_FILE.match(p.name):
                p.unlink(missing_ok=True)
    return gone
