"""Shared fixtures. The real-data root is SPREADCON_DATA, else ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    env = os.environ.get("SPREADCON_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder with the real MNIST, CIFAR-10 and TinyImageNet copies."""
    root = shared_data_root()
    if not (root / "MNIST").is_dir():
        pytest.skip(f"real data not found under {root} (set SPREADCON_DATA)")
    return root


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: small tensors on a shared 2-core
    machine run far faster (and steadier) that way. Restores the count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_real_downloads(monkeypatch):
    """A run on a root without its dataset downloads it (``load(download=True)``). In tests that must never
    reach the internet, even where CI has it: every source resolves to a closed port on 127.0.0.1 (a refused
    connection, at once), unless a test points ``SPREADCON_MIRROR`` at its own local server."""
    monkeypatch.setenv("SPREADCON_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setenv("SPREADCON_DOWNLOAD_TIMEOUT", "5")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 KiB file system (a tmpfs mounted on a folder under ``tmp_path``), unmounted after the test:
    writes past 64 KiB fail with ENOSPC as on a full disk. Skipped where mounting is not permitted."""
    import subprocess
    import sys

    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs Linux and root")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True,
                         text=True)
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture
def full_disk(monkeypatch):
    """A switch: once called, every file that :func:`spreadcon.util.atomic.atomic_write` opens takes 64 KiB
    and then refuses writes with ENOSPC, as a nearly full disk does (so ``torch.save`` fails midway with its
    own ``RuntimeError``, as it does there), until the test ends. Runs everywhere, unlike :func:`tiny_tmpfs`."""
    import errno

    from spreadcon.util import atomic

    real = os.fdopen

    class Full:
        def __init__(self, f):
            self._f, self._room = f, 1 << 16

        def write(self, data):
            if len(data) > self._room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._room -= len(data)
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    return lambda: monkeypatch.setattr(atomic.os, "fdopen", lambda fd, *a, **k: Full(real(fd, *a, **k)))
