"""The atomic writer behind caches, checkpoints and records, and the
restricted unpickler for the official CIFAR batches."""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from spreadcon.util.atomic import atomic_write
from spreadcon.data import datasets as D


def test_atomic_write_keeps_old_file_on_crash_and_is_world_readable(tmp_path):
    path = tmp_path / "r.json"
    atomic_write(path, lambda f: f.write("old"), binary=False)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    def crash(f):
        f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash, binary=False)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_unpickler_refuses_code(tmp_path):
    bad = tmp_path / "train"
    bad.write_bytes(pickle.dumps({"data": _Evil()}))
    with pytest.raises(D.CorruptDataset, match="refusing"):
        D._unpickle(bad, "cifar100")


def test_cifar_unpickler_reads_numpy_batches(tmp_path):
    import numpy as np

    good = tmp_path / "train"
    arr = np.arange(12, dtype=np.uint8).reshape(1, 12)
    good.write_bytes(pickle.dumps({b"data": arr, b"fine_labels": [3]}, protocol=2))
    out = D._unpickle(good, "cifar100")
    assert out[b"fine_labels"] == [3] and (out[b"data"] == arr).all()
