"""The download path, offline: the real `spreadcon.data.download` code against a local HTTP server.

A ThreadingHTTPServer on 127.0.0.1 serves small archives packed in each
dataset's official format (`download_fixtures.build_archives`). Each test
fetches into a fresh data root and then loads it with `spreadcon.data.load`,
or checks that a bad download gives one line and leaves the root as it was.
Every request has a timeout (the client's `$SPREADCON_DOWNLOAD_TIMEOUT`, the
server's per-socket timeout), and the server is shut down in a `finally`.
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from download_fixtures import build_archives, serve, sha256, tar_with_member, write_celeba_files
from test_data_fixtures import CELEBA_ATTRS

from spreadcon.data import DatasetNotFound, exit_code, load
from spreadcon.data import download as DL
from spreadcon.data.download import CorruptDownload, fetch

PLACES = {  # what a complete fetch leaves in the root, and nothing else
    "mnist": ["MNIST"], "cifar10": ["cifar-10-batches-py"], "cifar100": ["cifar-100-python"],
    "cifar100u": ["cifar-100-python"], "tinyimagenet": ["tiny-imagenet-200.zip"],
    "waterbirds": ["waterbird_complete95_forest2water2"], "celeba": ["celeba"],
}


@pytest.fixture(autouse=True)
def _bounded(monkeypatch):
    monkeypatch.setenv("SPREADCON_DOWNLOAD_TIMEOUT", "10")
    for var in ["SPREADCON_MIRROR"] + [f"SPREADCON_MIRROR_{n.upper()}" for n in PLACES]:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    return out, build_archives(out, tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def server(archives):
    with serve(archives[0]) as (base, requests):
        yield base, requests


def _listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _one_line(info) -> str:
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- fetch, then load


@pytest.mark.parametrize("name", list(PLACES))
def test_fetch_then_load(tmp_path, archives, server, name, capsys, monkeypatch):
    _, info = archives
    base, _ = server
    root = tmp_path / "fresh" / "root"  # does not exist yet
    monkeypatch.setenv("SPREADCON_VERBOSE", "1")  # status lines as on a terminal (a page never shows them)
    assert fetch(name, root, base_url=base, checksums=info[name]["checksums"]) == root
    assert _listing(root) == PLACES[name]  # no temporary folder, no lock file
    err = capsys.readouterr().err
    first = info[name]["files"][0]
    assert f"downloading {name.replace('cifar100u', 'cifar100')} from {base}/{first} into {root}" in err
    ds = load(name, root, cache=tmp_path / "cache")
    assert {s: len(ds.splits[s]) for s in ("train", "val", "test")} == info[name]["counts"]
    for split in ds.splits.values():  # streaming datasets: every image was unpacked where the loader reads it
        if split.files is not None:
            assert all((split.reader.root / f).is_file() for f in split.files)
            assert split.reader(split.files[0]).shape == (3, split.reader.size, split.reader.size)


def test_fetch_is_a_no_op_when_the_data_is_there(tmp_path, archives, server):
    _, info = archives
    base, requests = server
    root = tmp_path / "root"
    fetch("mnist", root, base_url=base, checksums=info["mnist"]["checksums"])
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    n = len(requests)
    fetch("mnist", root, base_url=base, checksums=info["mnist"]["checksums"])
    assert len(requests) == n  # nothing asked of the server
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # nothing written


def test_mirror_environment_variables(tmp_path, archives, server, monkeypatch):
    _, info = archives
    base, requests = server
    monkeypatch.setenv("SPREADCON_MIRROR", "http://127.0.0.1:9/not-this-one")
    monkeypatch.setenv("SPREADCON_MIRROR_CIFAR10", base)  # the per-dataset variable wins
    fetch("cifar10", tmp_path / "root", checksums=info["cifar10"]["checksums"], progress=False)
    assert requests[-1] == "/cifar-10-python.tar.gz"
    urls = DL.resource_urls(DL.SOURCES["mnist"].resources[0], "mnist")
    assert urls == ["http://127.0.0.1:9/not-this-one/train-images-idx3-ubyte.gz"]
    monkeypatch.delenv("SPREADCON_MIRROR")
    assert DL.resource_urls(DL.SOURCES["mnist"].resources[0], "mnist")[0].startswith("https://ossci-datasets")


def test_google_drive_confirmation_page_is_answered(tmp_path, archives, server):
    _, info = archives
    base, requests = server
    root = tmp_path / "root"
    fetch("celeba", root, base_url=base + "/drive", checksums=info["celeba"]["checksums"], progress=False)
    assert "/confirm?id=img_align_celeba.zip&export=download&confirm=t&uuid=1234-abcd" in requests
    assert len(load("celeba", root).splits["train"]) == 6


# --------------------------------------------------------------------------- damaged downloads


def test_wrong_checksum_is_one_line_and_leaves_nothing(tmp_path, server):
    base, _ = server
    root = tmp_path / "root"
    root.mkdir()
    (root / "other-dataset").mkdir()  # what was there stays there
    with pytest.raises(CorruptDownload) as info:
        fetch("mnist", root, base_url=base, progress=False)  # the official MD5s, not the fixture's
    msg = _one_line(info)
    assert "md5" in msg and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg and f"nothing was written to {root}" in msg
    assert exit_code(info.value) == 4 and isinstance(info.value, ValueError)
    assert _listing(root) == ["other-dataset"]


def test_truncated_archive_is_caught_by_its_checksum_or_its_crc(tmp_path, archives, server):
    served, info = archives
    base, _ = server
    whole = (served / "cifar-10-python.tar.gz").read_bytes()
    (served / "half").mkdir(exist_ok=True)
    (served / "half" / "cifar-10-python.tar.gz").write_bytes(whole[: len(whole) // 2])
    root = tmp_path / "root"
    with pytest.raises(CorruptDownload, match="sha256") as caught:  # served whole but short: the checksum differs
        fetch("cifar10", root, base_url=base + "/half", checksums=info["cifar10"]["checksums"], progress=False)
    _one_line(caught)
    assert not root.exists()  # the root it had to create is gone again
    with pytest.raises(CorruptDownload, match="not a readable archive") as caught:  # no checksum: the gzip stream ends early
        fetch("cifar10", root, base_url=base + "/half", checksums={"cifar-10-python.tar.gz": None}, progress=False)
    _one_line(caught)
    assert not root.exists()


@pytest.mark.parametrize("name", ["mnist", "waterbirds", "celeba"])
def test_connection_dropped_midway_is_truncation(tmp_path, archives, server, name):
    _, info = archives
    base, _ = server
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(CorruptDownload, match="truncated") as caught:
        fetch(name, root, base_url=base + "/short", checksums=info[name]["checksums"], progress=False)
    _one_line(caught)
    assert _listing(root) == []


def test_damaged_zip_member_is_caught(tmp_path, archives, server):
    served, info = archives
    base, _ = server
    data = bytearray((served / "tiny-imagenet-200.zip").read_bytes())
    at = data.index(b"\xff\xd8")  # inside the first JPEG: its CRC no longer matches
    data[at + 40] ^= 0xFF
    (served / "flipped").mkdir(exist_ok=True)
    (served / "flipped" / "tiny-imagenet-200.zip").write_bytes(bytes(data))
    root = tmp_path / "root"
    with pytest.raises(CorruptDownload, match="CRC|not a readable archive") as caught:
        fetch("tinyimagenet", root, base_url=base + "/flipped", checksums={"tiny-imagenet-200.zip": None}, progress=False)
    _one_line(caught)
    assert not root.exists()


def test_archive_without_the_expected_files_or_escaping_its_folder(tmp_path, server, archives):
    served, _ = archives
    base, _ = server
    for sub, member in (("lacking", "waterbird_complete95_forest2water2/README"), ("escape", "../escaped.txt")):
        (served / sub).mkdir(exist_ok=True)
        tar_with_member(served / sub / "waterbird_complete95_forest2water2.tar.gz", member)
        root = tmp_path / sub / "root"
        with pytest.raises(CorruptDownload, match="lacks|outside") as caught:
            fetch("waterbirds", root, base_url=f"{base}/{sub}", progress=False)
        _one_line(caught)
        assert not root.exists() and not (tmp_path / sub / "escaped.txt").exists()


def test_a_killed_fetch_leaves_a_partial_folder_that_the_next_one_removes(tmp_path, archives, server):
    _, info = archives
    base, _ = server
    root = tmp_path / "root"
    dead = 2 ** 22 + 12345  # above any pid_max: no such process
    (root / f".spreadcon-mnist-{dead}-x1y2.partial" / "MNIST").mkdir(parents=True)
    fetch("mnist", root, base_url=base, checksums=info["mnist"]["checksums"], progress=False)
    assert _listing(root) == ["MNIST"]


def test_ctrl_c_midway_leaves_nothing(tmp_path, archives, server, monkeypatch):
    _, info = archives
    base, _ = server

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DL, "_unpack", interrupted)  # after the download, before anything is placed
    root = tmp_path / "root"
    with pytest.raises(KeyboardInterrupt):
        fetch("cifar10", root, base_url=base, checksums=info["cifar10"]["checksums"], progress=False)
    assert not root.exists()


# --------------------------------------------------------------------------- no data to be had


def test_unreachable_server_is_dataset_not_found(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFound) as caught:
        fetch("cifar100", root, base_url=f"http://127.0.0.1:{port}", progress=False)
    msg = _one_line(caught)
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "SPREADCON_MIRROR" in msg
    assert exit_code(caught.value) == 3 and not root.exists()


def test_http_error_and_web_page_are_dataset_not_found(tmp_path, server):
    base, _ = server
    with pytest.raises(DatasetNotFound, match="HTTP 404") as caught:
        fetch("waterbirds", tmp_path / "a", base_url=base + "/nowhere", progress=False)
    assert "group_DRO" in _one_line(caught)
    with pytest.raises(DatasetNotFound, match="web page instead of the file .Quota exceeded") as caught:
        fetch("celeba", tmp_path / "b", base_url=base + "/page", progress=False)
    assert "mmlab.ie.cuhk.edu.hk" in _one_line(caught)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_isic_gives_the_manual_steps(tmp_path):
    with pytest.raises(DatasetNotFound) as caught:
        fetch("isic", tmp_path)
    msg = _one_line(caught)
    for needed in ("isic/metadata.csv", "isic/images/", "benign_malignant", "patch", "split", "isic-archive.com"):
        assert needed in msg
    assert _listing(tmp_path) == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="name='folder'"):
        fetch("folder", "/nonexistent")
    with pytest.raises(ValueError, match="no such file"):
        fetch("mnist", "/nonexistent", checksums={"mnist.zip": None})
    with pytest.raises(ValueError, match="md5:<hex>"):
        fetch("mnist", "/nonexistent", checksums={"train-images-idx3-ubyte.gz": "crc:1234"})


def test_production_table_keeps_the_published_checksums():
    md5 = {r.filename: r.checksum for s in DL.SOURCES.values() for r in s.resources}
    assert md5["cifar-10-python.tar.gz"] == "md5:c58f30108f718f92721af3b95e74349a"
    assert md5["train-images-idx3-ubyte.gz"] == "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert md5["img_align_celeba.zip"] == "md5:00d2c5bc6d35e252742224ab0c1e8fcb"
    assert md5["waterbird_complete95_forest2water2.tar.gz"] is None  # none is published
    with pytest.raises(TypeError):
        DL.SOURCES["mnist"] = None  # read-only: tests override through fetch(checksums=...)


# --------------------------------------------------------------------------- CelebA's groups (issue 17, point 7)


def test_celeba_blond_male_groups_from_the_official_attribute_format(tmp_path):
    # train: 5 non-blond female, 4 non-blond male, 3 blond female, 1 blond male; val/test one of each
    want = {"train": [5, 4, 3, 1], "val": [1, 1, 1, 1], "test": [1, 1, 1, 1]}
    blond, male = CELEBA_ATTRS.index("Blond_Hair"), CELEBA_ATTRS.index("Male")
    rng = np.random.default_rng(7)
    names, attrs, parts = [], [], []
    for p, split in enumerate(("train", "val", "test")):
        for g, n in enumerate(want[split]):
            for _ in range(n):
                a = rng.choice([-1, 1], size=40)
                a[blond], a[male] = (1 if g >= 2 else -1), (1 if g % 2 else -1)
                names.append(f"{len(names) + 1:06d}.jpg")
                attrs.append(a)
                parts.append(p)
    order = rng.permutation(len(names))  # the file is in file-name order; groups interleave
    attrs = np.stack(attrs)[order]
    parts = [parts[i] for i in order]
    write_celeba_files(tmp_path / "celeba", names, attrs, parts, images=False)
    text = (tmp_path / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    assert text[0] == str(len(names)) and text[1].split() == CELEBA_ATTRS and text[2].startswith("000001.jpg ")
    ds = load("celeba", tmp_path)
    assert ds.group_names == ["not blond, female", "not blond, male", "blond, female", "blond, male"]
    for split, counts in want.items():
        s = ds.splits[split]
        assert torch.bincount(s.group, minlength=4).tolist() == counts
        assert torch.equal(s.coarse, (s.group >= 2).long())  # the target is Blond_Hair
    # each image's group is 2 * Blond_Hair + Male of its own row
    row = {n: (int(a[blond] > 0), int(a[male] > 0)) for n, a in zip(names, attrs)}
    for s in ds.splits.values():
        assert [2 * row[f.split("/")[-1]][0] + row[f.split("/")[-1]][1] for f in s.files] == s.group.tolist()
    assert Counter(parts) == {0: 13, 1: 4, 2: 4}


# --------------------------------------------------------------------------- through load() and run


@pytest.fixture
def fixture_sources(archives, server, monkeypatch):
    """The production table with the fixtures' checksums, and $SPREADCON_MIRROR at the local server.

    This is how the loaders' own ``download=True`` path (which calls ``fetch(name, root)`` with no
    overrides) reaches the fixtures; the real table is untouched outside this test.
    """
    import dataclasses

    _, info = archives
    base, requests = server
    table = {k: dataclasses.replace(s, resources=tuple(dataclasses.replace(r, checksum=info[k]["checksums"][r.filename])
                                                       for r in s.resources)) for k, s in DL.SOURCES.items()}
    monkeypatch.setattr(DL, "SOURCES", table)
    monkeypatch.setenv("SPREADCON_MIRROR", base)
    return info, requests


@pytest.mark.parametrize("name", list(PLACES))
def test_load_with_download_fetches_a_missing_dataset_and_only_reads_a_present_one(tmp_path, fixture_sources, name):
    info, requests = fixture_sources
    root = tmp_path / "root"
    ds = load(name, root, download=True, cache=tmp_path / "cache")
    assert {s: len(ds.splits[s]) for s in ("train", "val", "test")} == info[name]["counts"]
    assert _listing(root) == PLACES[name]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    n = len(requests)
    load(name, root, download=True, cache=tmp_path / "cache")
    assert len(requests) == n and {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_load_isic_with_download_gives_the_manual_steps(tmp_path):
    with pytest.raises(DatasetNotFound, match="cannot be downloaded by a program") as caught:
        load("isic", tmp_path, download=True)
    assert "isic/metadata.csv" in _one_line(caught) and _listing(tmp_path) == []


def test_run_on_a_fresh_root_downloads_verifies_trains_and_records(tmp_path, fixture_sources, one_thread):
    import json

    from spreadcon.runs.experiment import run_experiment

    _, requests = fixture_sources
    root = tmp_path / "fresh"
    path = run_experiment("mnist", "ce", preset="smoke", data_root=root, results_dir=tmp_path / "results",
                          device="cpu", progress=False, cache=tmp_path / "cache")
    assert {"/train-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"} <= set(requests)
    assert _listing(root) == ["MNIST"]
    record = json.loads(Path(path).read_text())
    assert record["dataset"] == "mnist" and 0.0 <= record["metrics"]["fine_test_acc"] <= 1.0


def test_command_line_exit_codes_for_a_damaged_and_an_unreachable_download(tmp_path, server):
    import os
    import subprocess
    import sys

    base, _ = server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    for mirror, code, words in ((base, 4, "md5"), (dead, 3, "Connection refused")):  # fixtures vs the official MD5s
        root = tmp_path / str(code)
        env = {**os.environ, "SPREADCON_MIRROR": mirror, "SPREADCON_DOWNLOAD_TIMEOUT": "10"}
        p = subprocess.run([sys.executable, "-m", "spreadcon", "data", "summary", "mnist", "--root", str(root),
                            "--download", "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == code, p.stderr
        assert p.stdout == "" and words in p.stderr.strip().splitlines()[-1]
        assert not root.exists()
    p = subprocess.run([sys.executable, "-m", "spreadcon", "run", "cifar10", "ce", "--preset", "smoke", "--data-root",
                        str(tmp_path / "run"), "--results", str(tmp_path / "results"), "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=120)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 3 and last.startswith("spreadcon run: cifar10: cannot download cifar-10-python.tar.gz"), p.stderr
    assert not (tmp_path / "run").exists() and not list((tmp_path / "results").rglob("*.json"))  # no record


def test_a_download_off_a_terminal_prints_no_status_line(tmp_path, archives, server, capsys, monkeypatch):
    """In a kernel or a pipe (a chapter being built) a download says nothing on stderr: pages show no paths."""
    _, info = archives
    base, _ = server
    monkeypatch.delenv("SPREADCON_VERBOSE", raising=False)
    fetch("mnist", tmp_path / "root", base_url=base, checksums=info["mnist"]["checksums"])
    assert capsys.readouterr().err == ""
