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
