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


# --------------------------------------------------------------------------- a full disk


def _save_fails_with_enospc(folder):
    """``atomic_torch_save`` of 400 kB over ``folder/x.pt``: an OSError with ENOSPC, and the folder as it was."""
    import errno

    import torch

    from spreadcon.util.atomic import atomic_torch_save

    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OSError) as err:
        atomic_torch_save({"x": torch.zeros(100_000)}, folder / "x.pt")
    assert err.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary or partial file


def test_a_full_disk_raises_oserror_not_torchs_runtime_error(tmp_path, full_disk):
    """torch's writer turns the file's ENOSPC into ``RuntimeError: ... unexpected pos``; callers that
    handle OSError (the decoded cache, the checkpoints) need the OSError. The previous file stays."""
    import torch

    torch.save({"x": torch.arange(3)}, tmp_path / "x.pt")
    full_disk()
    _save_fails_with_enospc(tmp_path)


def test_a_full_real_file_system_raises_enospc(tiny_tmpfs):
    _save_fails_with_enospc(tiny_tmpfs)
