"""Small archives packed as each dataset's official release is, and a local HTTP server for them.

The files inside come from the loader tests' writers in ``test_data_fixtures``
(the official on-disk formats); this module only packs them the way the real
downloads arrive (idx ``.gz`` files, python-pickle tarballs, zips) and serves
a folder of them on 127.0.0.1.

:func:`serve` also answers two routes that imitate awkward servers:

* ``/short/<file>``: promises the whole file (``Content-Length``) but sends half of it
  and closes the connection, as a dropped download does;
* ``/drive/<file>``: a web page with a download-confirmation form, like Google
  Drive's "can't scan this file for viruses" page; submitting it (``/confirm?id=<file>``)
  sends the file.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import shutil
import tarfile
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from test_data_fixtures import (
    CELEBA_ATTRS,
    _cifar_rows,
    _solid,
    write_cifar100,
    write_mnist,
    write_tinyimagenet,
    write_waterbirds,
)

from spreadcon.data import hierarchy


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _tar(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


def write_cifar10_pickles(root: Path, per_batch: int = 20) -> Path:
    """``cifar-10-batches-py/``: five training batches and a test batch of ``per_batch`` images (labels in turn)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [(i + j) % 10 for j in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": _cifar_rows(per_batch, i), "labels": labels, "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(hierarchy.CIFAR10_FINE), "num_cases_per_batch": per_batch}, f)
    return folder


def celeba_attr_text(names: list[str], attrs: np.ndarray) -> str:
    """``list_attr_celeba.txt`` as released: the count, the 40 names, then ``file  ±1 ...`` (values right-aligned in 2)."""
    rows = [f"{n} " + " ".join(f"{int(v):2d}" for v in a) for n, a in zip(names, attrs)]
    return "\n".join([str(len(names)), " ".join(CELEBA_ATTRS) + " "] + rows) + "\n"


def write_celeba_files(folder: Path, names: list[str], attrs: np.ndarray, parts: list[int], images: bool = True) -> None:
    """``list_attr_celeba.txt``, ``list_eval_partition.txt`` and (optionally) ``img_align_celeba/*.jpg`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "list_attr_celeba.txt").write_text(celeba_attr_text(names, attrs))
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    if images:
        for n in names:
            _solid(folder / "img_align_celeba" / n, (200, 180, 160), size=(178, 218))


def build_archives(out: Path, work: Path) -> dict:
    """Pack one small copy of every downloadable dataset into ``out``, as its server delivers it.

    Returns ``{dataset: {"checksums": {file: "sha256:..."}, "counts": {split: n}}}``: the fixture
    checksums to pass to :func:`spreadcon.data.download.fetch` and the split sizes a load must give.
    """
    out.mkdir(parents=True, exist_ok=True)
    info = {}

    mnist = work / "mnist"
    write_mnist(mnist)  # 50 training images (40 train + 10 val: 1 per class), 20 test
    for f in sorted((mnist / "MNIST" / "raw").iterdir()):
        shutil.copy(f, out / f.name)
    info["mnist"] = {"files": sorted(f.name for f in (mnist / "MNIST" / "raw").iterdir()),
                     "counts": {"train": 40, "val": 10, "test": 20}}

    c10 = work / "cifar10"
    _tar(write_cifar10_pickles(c10), out / "cifar-10-python.tar.gz")  # 100 training images (90 + 10), 20 test
    info["cifar10"] = {"files": ["cifar-10-python.tar.gz"], "counts": {"train": 90, "val": 10, "test": 20}}

    c100 = work / "cifar100"
    write_cifar100(c100, {c: 10 for c in range(100)})  # 1000 training images (900 + 100), 200 test
    _tar(c100 / "cifar-100-python", out / "cifar-100-python.tar.gz")
    info["cifar100"] = {"files": ["cifar-100-python.tar.gz"], "counts": {"train": 900, "val": 100, "test": 200}}

    tin = work / "tinyimagenet"
    tin.mkdir()
    rows = hierarchy.tinyimagenet_table()
    write_tinyimagenet(tin, [rows[0][0], rows[1][0], rows[2][0]], n_train=10)  # 30 training (27 + 3), 9 test
    shutil.copy(tin / "tiny-imagenet-200.zip", out / "tiny-imagenet-200.zip")
    info["tinyimagenet"] = {"files": ["tiny-imagenet-200.zip"], "counts": {"train": 27, "val": 3, "test": 9}}

    wb = work / "waterbirds"
    wb_rows = write_waterbirds(wb)
    _tar(wb / "waterbird_complete95_forest2water2", out / "waterbird_complete95_forest2water2.tar.gz")
    splits = [r[3] for r in wb_rows]
    info["waterbirds"] = {"files": ["waterbird_complete95_forest2water2.tar.gz"],
                          "counts": {"train": splits.count(0), "val": splits.count(1), "test": splits.count(2)}}

    cel = work / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 13)]
    attrs = np.random.default_rng(1).choice([-1, 1], size=(12, 40))
    write_celeba_files(cel, names, attrs, [0] * 6 + [1] * 3 + [2] * 3)
    with zipfile.ZipFile(out / "img_align_celeba.zip", "w") as z:
        for n in names:
            z.write(cel / "img_align_celeba" / n, f"img_align_celeba/{n}")
    for txt in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        shutil.copy(cel / txt, out / txt)
    info["celeba"] = {"files": ["img_align_celeba.zip", "list_attr_celeba.txt", "list_eval_partition.txt"],
                      "counts": {"train": 6, "val": 3, "test": 3}}

    for entry in info.values():
        entry["checksums"] = {f: sha256(out / f) for f in entry["files"]}
    info["cifar100u"] = info["cifar100"]
    return info


class _Handler(http.server.SimpleHTTPRequestHandler):
    timeout = 10  # seconds per socket operation: a stuck client cannot hold a server thread

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path.startswith("/short/"):
            return self._send_half(self.path[len("/short/"):])
        if self.path.startswith("/drive/"):
            return self._send_confirm_page(self.path[len("/drive/"):])
        if self.path.startswith("/confirm?"):
            from urllib.parse import parse_qs, urlsplit

            q = parse_qs(urlsplit(self.path).query)
            if q.get("confirm") == ["t"]:
                self.path = "/" + q["id"][0]
        if self.path.startswith("/page/"):
            return self._send(200, b"<html><head><title>Quota exceeded</title></head><body>Too many users</body></html>",
                              "text/html; charset=utf-8")
        return super().do_GET()

    def _send(self, code: int, body: bytes, ctype: str, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _send_half(self, name: str) -> None:
        data = (Path(self.directory) / name).read_bytes()
        self._send(200, data[: len(data) // 2], "application/octet-stream", length=len(data))
        self.close_connection = True

    def _send_confirm_page(self, name: str) -> None:
        page = (
            "<html><head><title>Google Drive - Virus scan warning</title></head><body>"
            '<form id="download-form" action="/confirm" method="get">'
            f'<input type="submit" value="Download anyway"/><input type="hidden" name="id" value="{name}">'
            '<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">'
            '<input type="hidden" name="uuid" value="1234-abcd"></form></body></html>'
        )
        self._send(200, page.encode(), "text/html; charset=utf-8")


@contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``folder`` on 127.0.0.1 (a free port) in a thread; yields ``(base_url, requested_paths)``.

    The server is shut down and its socket closed on the way out, whatever happened.
    """

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(folder), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def tar_with_member(out: Path, name: str, data: bytes = b"x") -> Path:
    """A ``.tar.gz`` holding one file called ``name`` (for example ``../escape``)."""
    with tarfile.open(out, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out
