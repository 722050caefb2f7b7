"""Data errors give one line that names the file and the fix (issue #13, CONTRACT §2).

Each case is checked twice: ``load`` raises the right :class:`DataError`
subclass, and ``data summary`` turns it into one line on stderr, nothing on
stdout, and its exit code (3 missing, 4 damaged or unreadable).

The tests run as root here, and root reads every file whatever its mode, so
unreadable files are simulated: ``open`` (``builtins.open`` and ``io.open``,
which ``zipfile`` and ``pathlib`` use) and ``os.listdir`` raise the
``PermissionError`` the kernel would. ``test_really_unreadable_file`` also
runs the command for real where it can: as this user when it is not root,
or as ``nobody`` when root can switch to it and ``nobody`` can run this
Python.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_fixtures import _idx, _solid, write_cifar10_zip, write_folder, write_mnist

from spreadcon.data import (
    EXIT_BAD_DATA,
    EXIT_MISSING_DATA,
    CorruptDataset,
    DatasetNotFound,
    UnreadableDataset,
    hierarchy,
    load,
)
from spreadcon.data.cli import main as data_cli

REPO = Path(__file__).resolve().parents[1]


def one_line_failure(capsys, argv: list[str], code: int) -> str:
    """Run ``data`` with ``argv``; assert exit ``code``, empty stdout and one stderr line; return that line."""
    assert data_cli(argv) == code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("spreadcon data: "), err
    return err


@pytest.fixture
def deny(monkeypatch):
    """``deny(path)``: opening or listing ``path`` (or anything under it) raises PermissionError from now on."""
    denied: list[str] = []
    real_open, real_io_open, real_listdir = builtins.open, io.open, os.listdir

    def blocked(p) -> bool:
        try:
            p = os.fspath(p)
        except TypeError:  # a file descriptor
            return False
        p = os.path.abspath(p)
        return any(p == d or p.startswith(d + os.sep) for d in denied)

    def guard(real):
        def wrapped(file, *args, **kwargs):
            if blocked(file):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
            return real(file, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(builtins, "open", guard(real_open))
    monkeypatch.setattr(io, "open", guard(real_io_open))
    monkeypatch.setattr(os, "listdir", guard(real_listdir))
    return lambda path: denied.append(os.path.abspath(path))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPREADCON_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- folder


@pytest.mark.parametrize("mapping, wants", [
    # a fine class with no folder (today: silently dropped)
    ("cat\tanimal\ndog\tanimal\noak\tplant\npine\tplant\n", ["{root}/hierarchy.tsv names the fine class 'pine'",
                                                            "{root}/train/pine does not exist", "remove the line"]),
    # a line that is not tab-separated (today: a ValueError traceback)
    ("cat\tanimal\ndog animal\noak\tplant\n", ["{root}/hierarchy.tsv line 2 is 'dog animal'", "one tab"]),
    # one fine class with two coarse classes
    ("cat\tanimal\ndog\tanimal\noak\tplant\ndog\tplant\n", ["{root}/hierarchy.tsv line 4", "keep one of the two lines"]),
])
def test_bad_hierarchy_lines(tmp_path, capsys, mapping, wants):
    write_folder(tmp_path)
    (tmp_path / "hierarchy.tsv").write_text(mapping)
    with pytest.raises(CorruptDataset):
        load("folder", tmp_path)
    err = one_line_failure(capsys, ["summary", "folder", "--root", str(tmp_path)], EXIT_BAD_DATA)
    for want in wants:
        assert want.format(root=tmp_path) in err


def test_folder_not_in_hierarchy_and_stray_test_class(tmp_path, capsys):
    write_folder(tmp_path)
    (tmp_path / "hierarchy.tsv").write_text("cat\tanimal\noak\tplant\n")
    err = one_line_failure(capsys, ["summary", "folder", "--root", str(tmp_path)], EXIT_BAD_DATA)
    assert "'dog'" in err and "add a line 'dog<TAB><coarse class>'" in err
    write_folder(tmp_path)
    _solid(tmp_path / "test" / "elm" / "0.png", (0, 0, 0))
    err = one_line_failure(capsys, ["summary", "folder", "--root", str(tmp_path)], EXIT_BAD_DATA)
    assert str(tmp_path / "test" / "elm") in err


def test_folder_with_empty_class_folders(tmp_path, capsys):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
    (tmp_path / "train" / "cat" / "README.txt").write_text("not an image")
    (tmp_path / "hierarchy.tsv").write_text("cat\tanimal\ndog\tanimal\n")
    with pytest.raises(CorruptDataset, match="has no images"):
        load("folder", tmp_path)
    err = one_line_failure(capsys, ["summary", "folder", "--root", str(tmp_path)], EXIT_BAD_DATA)
    assert str(tmp_path / "train" / "cat") in err and ".png" in err and "1 other class folder" in err


def test_folder_with_one_empty_class(tmp_path):
    write_folder(tmp_path)
    for p in (tmp_path / "train" / "oak").iterdir():
        p.unlink()
    with pytest.raises(CorruptDataset, match=r"train/oak has no images.*remove the folder and its line"):
        load("folder", tmp_path)


def test_unreadable_folder(tmp_path, capsys, deny):
    write_folder(tmp_path)
    deny(tmp_path / "train" / "dog")
    with pytest.raises(UnreadableDataset, match="permission denied"):
        load("folder", tmp_path)
    err = one_line_failure(capsys, ["summary", "folder", "--root", str(tmp_path)], EXIT_BAD_DATA)
    assert str(tmp_path / "train" / "dog") in err and "chmod" in err


# --------------------------------------------------------------------------- MNIST


def test_mnist_label_out_of_range(tmp_path, capsys):
    labels = np.arange(50) % 10
    labels[7] = 12
    write_mnist(tmp_path, labels=labels)
    with pytest.raises(CorruptDataset, match="label 12 at position 7"):
        load("mnist", tmp_path)
    err = one_line_failure(capsys, ["summary", "mnist", "--root", str(tmp_path)], EXIT_BAD_DATA)
    assert str(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz") in err and "fetch it again" in err


def test_mnist_test_label_out_of_range(tmp_path):
    write_mnist(tmp_path)
    _idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", np.full(20, 200))
    with pytest.raises(CorruptDataset, match="t10k-labels-idx1-ubyte.gz holds label 200 at position 0"):
        load("mnist", tmp_path)


def test_unreadable_mnist_file(tmp_path, capsys, deny):
    write_mnist(tmp_path)
    deny(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(UnreadableDataset):
        load("mnist", tmp_path)
    err = one_line_failure(capsys, ["summary", "mnist", "--root", str(tmp_path)], EXIT_BAD_DATA)
    assert "t10k-images-idx3-ubyte.gz (permission denied)" in err and "fetch it again" not in err


# --------------------------------------------------------------------------- CIFAR-10


def test_unreadable_cifar_zip_is_not_called_damaged(tmp_path, capsys, deny):
    write_cifar10_zip(tmp_path)
    deny(tmp_path / "cifar10-jpeg.zip")
    with pytest.raises(UnreadableDataset):
        load("cifar10", tmp_path)
    err = one_line_failure(capsys, ["summary", "cifar10", "--root", str(tmp_path)], EXIT_BAD_DATA)
    assert str(tmp_path / "cifar10-jpeg.zip") in err and "permission denied" in err
    assert "delete it" not in err and "fetch it again" not in err  # the file is fine; the rights are not


def test_unreadable_data_root(tmp_path, capsys, deny):
    write_folder(tmp_path / "root")
    deny(tmp_path / "root")
    err = one_line_failure(capsys, ["summary", "folder", "--root", str(tmp_path / "root")], EXIT_BAD_DATA)
    assert "permission denied" in err


def test_cifar10_pickle_label_out_of_range(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [10 if (i, j) == (2, 4) else j % 10 for j in range(10)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": labels}, f)
    with pytest.raises(CorruptDataset, match="data_batch_3 holds label 10 at position 4"):
        load("cifar10", tmp_path)


def test_missing_dataset_exit_code(tmp_path, capsys):
    with pytest.raises(DatasetNotFound):
        load("mnist", tmp_path)
    err = one_line_failure(capsys, ["summary", "mnist", "--root", str(tmp_path)], EXIT_MISSING_DATA)
    assert "train-images-idx3-ubyte" in err and "download=True" in err
    assert EXIT_MISSING_DATA == 3 and EXIT_BAD_DATA == 4


def test_cifar10_jpeg_copy_is_grouped_by_class_unlike_the_pickles(tmp_path):
    """The documented difference: the zip gives class-grouped order, the pickles the official order.

    Both hold the same images with the same labels (here lossless PNGs in the
    zip, so pixels compare exactly), and the seeded hold-out picks the same
    images (it draws ranks within each class, and ``NNNN`` is that rank), but
    position ``i`` is a different image on the two paths.
    """
    rng = np.random.default_rng(0)
    official = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        labels = rng.permutation(np.arange(20) % 10).tolist()
        official[name] = (rng.integers(0, 256, (20, 3072), dtype=np.uint8), labels)
    pick = tmp_path / "py"
    (pick / "cifar-10-batches-py").mkdir(parents=True)
    for name, (data, labels) in official.items():
        with open(pick / "cifar-10-batches-py" / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    (tmp_path / "zip").mkdir()
    with zipfile.ZipFile(tmp_path / "zip" / "cifar10-jpeg.zip", "w") as z:
        for split, names in (("train", [f"data_batch_{k}" for k in range(1, 6)]), ("test", ["test_batch"])):
            rank = {c: 0 for c in range(10)}
            for name in names:
                data, labels = official[name]
                for row, c in zip(data, labels):
                    buf = io.BytesIO()
                    Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0)).save(buf, format="PNG")
                    z.writestr(f"{split}/{hierarchy.CIFAR10_FINE[c]}/{rank[c]:04d}.png", buf.getvalue())
                    rank[c] += 1
    a, b = (load("cifar10", tmp_path / p, seed=3, cache=tmp_path / f"c{p}") for p in ("zip", "py"))
    ta, tb = a.splits["train"], b.splits["train"]
    assert torch.equal(ta.fine, ta.fine.sort().values) and not torch.equal(tb.fine, tb.fine.sort().values)
    assert not torch.equal(ta.images, tb.images)
    for s in ("train", "val", "test"):
        x, y = a.splits[s], b.splits[s]
        order = torch.argsort(y.fine, stable=True)  # the official order, regrouped by class
        assert torch.equal(x.images, y.images[order]) and torch.equal(x.fine, y.fine[order])


# --------------------------------------------------------------------------- for real


DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def test_really_unreadable_file():
    """A real ``chmod 000`` file and a real ``python -m spreadcon data summary``: one line, exit 4.

    Root reads a mode-000 file through its DAC capabilities, so as root the
    command runs under ``setpriv`` without ``CAP_DAC_OVERRIDE`` and
    ``CAP_DAC_READ_SEARCH``: still uid 0, but held to the permission bits.
    """
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: root reads a mode-000 file, so nothing is unreadable")
        prefix = DROP_DAC
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_mnist(root)
        bad = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
        os.chmod(bad, 0)
        env = {**os.environ, "SPREADCON_CACHE": str(root / "cache")}
        cmd = prefix + [sys.executable, "-m", "spreadcon", "data", "summary", "mnist", "--root", str(root)]
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        os.chmod(bad, 0o644)
        assert out.returncode == EXIT_BAD_DATA and out.stdout == "", out.stderr
        assert out.stderr.count("\n") == 1 and f"{bad} (permission denied)" in out.stderr
