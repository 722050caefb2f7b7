"""Decoded caches stay out of the data root (issue #20, CONTRACT §2).

Each test builds a small data root in its official on-disk format (the
writers of ``test_data_fixtures``), points ``HOME``, ``XDG_CACHE_HOME`` and
``SPREADCON_CACHE`` at fresh folders, and checks where the bytes go.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from test_data_fixtures import write_cifar10_zip, write_folder, write_mnist, write_tinyimagenet

from spreadcon.data import cache as C
from spreadcon.data import hierarchy, load
from spreadcon.data.cli import main as data_cli


def manifest(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> SHA-256 of its bytes (``dir`` for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_root(name: str, root: Path) -> None:
    root.mkdir(parents=True)
    if name == "mnist":
        write_mnist(root)
    elif name == "cifar10":
        write_cifar10_zip(root, n_train=4, n_test=2)
    elif name == "tinyimagenet":
        rows = hierarchy.tinyimagenet_table()
        write_tinyimagenet(root, [rows[0][0], rows[1][0]], n_train=4, n_val=2)
    elif name == "folder":
        write_folder(root, n_train=3, n_test=1)


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Fresh HOME and XDG_CACHE_HOME, no SPREADCON_CACHE: the defaults can be observed."""
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.delenv("SPREADCON_CACHE", raising=False)
    monkeypatch.delenv(C.VERBOSE_ENV, raising=False)
    return home, xdg


@pytest.fixture
def verbose(monkeypatch):
    """Status lines on, wherever stderr goes (here: pytest's capture, not a terminal)."""
    monkeypatch.setenv(C.VERBOSE_ENV, "1")


CACHED = {"mnist": [], "cifar10": ["cifar10-jpeg"], "tinyimagenet": ["tinyimagenet"], "folder": []}


@pytest.mark.parametrize("name", sorted(CACHED))
def test_loading_leaves_the_data_root_byte_for_byte_unchanged(name, tmp_path, homes, monkeypatch):
    home, xdg = homes
    root = tmp_path / "data"
    write_root(name, root)
    before = manifest(root)
    assert os.access(root, os.W_OK)  # writable: today's code put its cache into root/.cache
    override = tmp_path / "override"
    monkeypatch.setenv("SPREADCON_CACHE", str(override))
    for _ in range(2):  # a build, then a cache hit
        ds = load(name, root, image_size=16 if name == "folder" else None)
        assert len(ds.splits["train"]) > 0
    assert manifest(root) == before
    assert sorted(e.name for e in C.list_caches()) == CACHED[name]
    assert all(e.path.parent == override for e in C.list_caches())
    assert list(home.iterdir()) == [] and not xdg.exists()  # the override wins over both defaults


def test_cli_summary_leaves_the_root_unchanged_and_honours_cache(tmp_path, homes, capsys):
    root, cache = tmp_path / "data", tmp_path / "mine"
    write_root("cifar10", root)
    before = manifest(root)
    assert data_cli(["summary", "cifar10", "--root", str(root), "--cache", str(cache), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["splits"]["test"]["n"] == 20
    assert manifest(root) == before
    (entry,) = C.list_caches(cache)
    # the first build says, in one line on stderr, where the cache went and how large it is
    assert err.count("\n") == 1 and str(entry.path) in err and C.human_bytes(entry.bytes) in err
    assert data_cli(["summary", "cifar10", "--root", str(root), "--cache", str(cache), "--json"]) == 0
    assert capsys.readouterr().err == ""  # a hit is silent


def test_default_is_xdg_then_home(tmp_path, homes, monkeypatch):
    home, xdg = homes
    assert C.cache_dir() == xdg / "spreadcon" / "decoded"
    root = tmp_path / "data"
    write_root("cifar10", root)
    load("cifar10", root)
    assert [e.path.parent for e in C.list_caches()] == [xdg / "spreadcon" / "decoded"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert C.cache_dir() == home / ".cache" / "spreadcon" / "decoded"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec says: ignore a relative path
    assert C.cache_dir() == home / ".cache" / "spreadcon" / "decoded"


def test_data_cache_lists_and_clears(tmp_path, homes, capsys):
    root, cache = tmp_path / "data", tmp_path / "c"
    write_root("cifar10", root)
    rows = hierarchy.tinyimagenet_table()
    write_tinyimagenet(root, [rows[0][0]], n_train=2, n_val=1)
    load("cifar10", root, cache=cache)
    load("tinyimagenet", root, cache=cache)
    (cache / "notes.txt").write_text("not a cache")  # e.g. a user who named a folder of their own
    capsys.readouterr()

    assert data_cli(["cache", "--cache", str(cache), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in listing["caches"]}
    assert set(by_name) == {"cifar10-jpeg", "tinyimagenet"}
    assert by_name["cifar10-jpeg"]["sources"] == [str((root / "cifar10-jpeg.zip").resolve())]
    assert by_name["cifar10-jpeg"]["bytes"] == Path(by_name["cifar10-jpeg"]["path"]).stat().st_size > 0
    assert data_cli(["cache", "--cache", str(cache)]) == 0
    table = capsys.readouterr().out
    assert "cifar10-jpeg" in table and str(root / "cifar10-jpeg.zip") in table and " kB " in table

    assert data_cli(["cache", "--cache", str(cache), "--clear", "cifar10"]) == 0  # by dataset name
    assert "removed 1 cache" in capsys.readouterr().out
    assert [e.name for e in C.list_caches(cache)] == ["tinyimagenet"]
    assert data_cli(["cache", "--cache", str(cache), "--clear"]) == 0
    capsys.readouterr()
    assert C.list_caches(cache) == []
    assert sorted(p.name for p in cache.iterdir()) == ["notes.txt"]  # only the files it wrote are gone
    assert data_cli(["cache", "--cache", str(cache), "--clear"]) == 0
    assert "nothing removed" in capsys.readouterr().out


def test_env_override_reaches_data_cache(tmp_path, homes, monkeypatch, capsys):
    monkeypatch.setenv("SPREADCON_CACHE", str(tmp_path / "env"))
    root = tmp_path / "data"
    write_root("cifar10", root)
    load("cifar10", root)
    assert data_cli(["cache", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cache_dir"] == str(tmp_path / "env") and len(out["caches"]) == 1


def test_truncated_cache_is_rebuilt_and_equals_a_fresh_build(tmp_path, homes, verbose, capsys):
    root, cache = tmp_path / "data", tmp_path / "c"
    write_root("tinyimagenet", root)
    first = load("tinyimagenet", root, cache=cache)
    (entry,) = C.list_caches(cache)
    size = entry.path.stat().st_size
    with open(entry.path, "r+b") as f:
        f.truncate(size // 2)
    capsys.readouterr()
    again = load("tinyimagenet", root, cache=cache)
    err = capsys.readouterr().err
    assert err.count("\n") == 2  # "damaged; rebuilding" and then "decoded ... once into"
    assert "damaged" in err.splitlines()[0] and str(entry.path) in err.splitlines()[0]
    fresh = load("tinyimagenet", root, cache=tmp_path / "fresh")
    for s in ("train", "val", "test"):
        for a, b in ((again, fresh), (first, fresh)):
            assert torch.equal(a.splits[s].images, b.splits[s].images)
            assert torch.equal(a.splits[s].fine, b.splits[s].fine)
    assert entry.path.stat().st_size == size and C.load_cache(entry.path) is not None  # rewritten whole


def test_unwritable_cache_folder_only_costs_speed(tmp_path, homes, verbose, capsys):
    root = tmp_path / "data"
    write_root("cifar10", root)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a cache "folder" that is a file: no folder can be made there, even as root
    before = manifest(root)
    ds = load("cifar10", root, cache=blocker / "sub")
    assert len(ds.splits["test"]) == 20 and manifest(root) == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the cache" in err and "SPREADCON_CACHE" in err


@pytest.mark.parametrize("disk", ["simulated", "tmpfs"])
def test_a_full_disk_only_costs_speed(disk, tmp_path, homes, verbose, capsys, request):
    """The cache write fails midway (ENOSPC inside torch.save): one line, the data loads, nothing is left."""
    root = tmp_path / "data"
    write_root("cifar10", root)  # its decoded cache is ~150 kB, more than the disk has room for
    if disk == "tmpfs":
        cache = request.getfixturevalue("tiny_tmpfs")  # a real 64 KiB file system (skipped where it cannot mount)
    else:
        cache = tmp_path / "c"
        request.getfixturevalue("full_disk")()  # files that take 64 KiB, then refuse with ENOSPC: runs everywhere
    ds = load("cifar10", root, cache=cache)
    assert len(ds.splits["train"]) == 40 and len(ds.splits["test"]) == 20
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the cache" in err and "No space left on device" in err
    assert sorted(p.name for p in cache.iterdir()) == []  # no partial cache, no temporary file


class _Exploit:
    """Unpickling this would create ``marker``: what a hostile cache file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_cache_never_executes_pickled_code(tmp_path, homes, verbose, capsys):
    root, cache = tmp_path / "data", tmp_path / "c"
    write_root("cifar10", root)
    marker = tmp_path / "pwned"
    path = cache / f"cifar10-jpeg-{C.cache_key('cifar10-jpeg', [root / 'cifar10-jpeg.zip'])}.pt"
    cache.mkdir()
    torch.save({"train_images": _Exploit(marker)}, path)
    ds = load("cifar10", root, cache=cache)
    assert not marker.exists()  # weights_only=True refused the global
    assert len(ds.splits["test"]) == 20 and "damaged" in capsys.readouterr().err


def test_data_cache_points_at_caches_an_earlier_version_left_in_the_data_root(tmp_path, homes, monkeypatch, capsys):
    root = tmp_path / "data"
    (root / ".cache").mkdir(parents=True)
    (root / ".cache" / "cifar10-jpeg-0123456789abcdef.pt").write_bytes(b"\0" * 2000)
    monkeypatch.setenv("SPREADCON_DATA", str(root))
    assert data_cli(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"older caches in the data root: 2.0 kB in {root / '.cache'}" in out
    assert data_cli(["cache", "--cache", str(root / ".cache"), "--clear"]) == 0
    assert list((root / ".cache").iterdir()) == []


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _fake_kernel(monkeypatch) -> None:
    """What ``import IPython; IPython.get_ipython()`` returns inside a Jupyter kernel: a shell with a kernel."""
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_a_first_decode_off_a_terminal_prints_nothing(tmp_path, homes, capsys):
    """The book's pages (chapter 6 decoding CIFAR-10 into an empty cache) showed this line as a stderr box."""
    root, cache = tmp_path / "data", tmp_path / "empty"
    write_root("cifar10", root)
    assert len(load("cifar10", root, cache=cache).splits["test"]) == 20
    assert [e.name for e in C.list_caches(cache)] == ["cifar10-jpeg"]  # it did decode into the empty cache
    assert capsys.readouterr().err == ""


def test_status_lines_go_to_a_terminal_and_never_into_a_jupyter_kernel(tmp_path, homes, monkeypatch):
    root = tmp_path / "data"
    write_root("cifar10", root)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    load("cifar10", root, cache=tmp_path / "c1")
    assert terminal.getvalue().count("\n") == 1 and "decoded cifar10-jpeg once into" in terminal.getvalue()

    _fake_kernel(monkeypatch)
    monkeypatch.setenv(C.VERBOSE_ENV, "1")  # even when asked: a kernel's stderr ends up on a page
    terminal.seek(0)
    terminal.truncate()
    load("cifar10", root, cache=tmp_path / "c2")
    with C.status_lines():
        load("cifar10", root, cache=tmp_path / "c3")
    assert [e.name for e in C.list_caches(tmp_path / "c3")] == ["cifar10-jpeg"]
    assert terminal.getvalue() == ""


def test_verbose_env_decides_off_a_terminal_and_on_one(tmp_path, homes, monkeypatch, capsys):
    root = tmp_path / "data"
    write_root("cifar10", root)
    monkeypatch.setenv(C.VERBOSE_ENV, "1")
    load("cifar10", root, cache=tmp_path / "c1")
    assert "decoded cifar10-jpeg once into" in capsys.readouterr().err
    monkeypatch.setenv(C.VERBOSE_ENV, "0")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    load("cifar10", root, cache=tmp_path / "c2")
    assert terminal.getvalue() == ""
