"""Fetch a benchmark from its official archives: checksums, a progress bar, nothing half-written.

:func:`fetch` downloads one dataset into a data root, in the layout its loader
in :mod:`spreadcon.data.datasets` reads. :data:`SOURCES` is the one table of
where each dataset comes from and what is checked:

| name | files | checksum | lands in the root as |
|---|---|---|---|
| ``mnist`` | the four ``*-ubyte.gz`` idx files | MD5 (torchvision's) | ``MNIST/raw/*.gz`` |
| ``cifar10`` | ``cifar-10-python.tar.gz`` | MD5 (published on the CIFAR page) | ``cifar-10-batches-py/`` |
| ``cifar100``, ``cifar100u`` | ``cifar-100-python.tar.gz`` | MD5 (published on the CIFAR page) | ``cifar-100-python/`` |
| ``tinyimagenet`` | ``tiny-imagenet-200.zip`` | MD5 not published by Stanford; the one other loaders check (e.g. Avalanche's) | ``tiny-imagenet-200.zip`` (read as a zip) |
| ``waterbirds`` | ``waterbird_complete95_forest2water2.tar.gz`` | none published | ``waterbird_complete95_forest2water2/`` |
| ``celeba`` | ``img_align_celeba.zip``, ``list_attr_celeba.txt``, ``list_eval_partition.txt`` | MD5 (torchvision's) | ``celeba/`` |
| ``isic`` | cannot be fetched by a program | | see :data:`ISIC_STEPS` |

Every download is also checked against its ``Content-Length`` (a short read
is a truncated download), every archive is read through to the end (gzip and
zip CRCs: a damaged member fails), and the files the loader needs must be in
it. So where no checksum is published (Waterbirds) a download is verified by
its size, its archive's integrity and its contents, not by its bytes.

Where from (first that is set): the ``base_url=`` argument, then
``$SPREADCON_MIRROR_<NAME>`` (for example ``SPREADCON_MIRROR_CELEBA``), then
``$SPREADCON_MIRROR`` (one base for every dataset), then the official URLs.
With a base, file ``F`` is fetched from ``<base>/F``. Every socket operation
has a timeout, ``$SPREADCON_DOWNLOAD_TIMEOUT`` seconds (default 60).

Atomic: the files go to a temporary folder ``.spreadcon-<name>-<pid>-*.partial``
inside the data root, are verified there, archives are unpacked there, and
only a complete, verified tree is renamed into place (a rename per top-level
folder or file). Any failure, including Ctrl-C, removes the temporary folder,
so the root holds either the whole dataset or nothing of the attempt. A lock
file (removed afterwards) makes concurrent fetches of one dataset, such as
several ranks of one run, wait for the first one. A folder that a SIGKILLed
fetch left behind (its process id no longer runs) is removed by the next fetch
of that dataset.

Errors (one line each, see :mod:`spreadcon.data.errors`):

* no network, a refused connection, an HTTP error, an unwritable root:
  :class:`DatasetNotFound` (exit code 3), naming where to get the data by hand;
* a wrong checksum, a truncated file, a damaged or incomplete archive:
  :class:`CorruptDownload`, a :class:`CorruptDataset` (exit code 4).

Example:
    >>> sorted(SOURCES)
    ['celeba', 'cifar10', 'cifar100', 'mnist', 'tinyimagenet', 'waterbirds']
    >>> [r.filename for r in SOURCES["mnist"].resources][:2]
    ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz']
    >>> resource_urls(SOURCES["cifar10"].resources[0], "cifar10", base_url="http://127.0.0.1:8000/data")
    ['http://127.0.0.1:8000/data/cifar-10-python.tar.gz']
    >>> fetch("mnist", "/tmp/mnist-root")                              # doctest: +SKIP
    downloading mnist from https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz into /tmp/mnist-root
"""

from __future__ import annotations

import hashlib
import html
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Iterator, Mapping

from .cache import status_lines_wanted
from .errors import CorruptDataset, DataError, DatasetNotFound

__all__ = ["SOURCES", "ISIC_STEPS", "CorruptDownload", "Resource", "Source", "fetch", "resource_urls"]

MIRROR_ENV = "SPREADCON_MIRROR"
TIMEOUT_ENV = "SPREADCON_DOWNLOAD_TIMEOUT"
_CHUNK = 1 << 20


class CorruptDownload(CorruptDataset):
    """A download arrived damaged: wrong checksum, truncated, or an archive that is broken or incomplete.

    A :class:`CorruptDataset`, so :func:`spreadcon.data.errors.exit_code` gives it exit code 4.
    """


@dataclass(frozen=True)
class Resource:
    """One file of a dataset.

    Attributes:
        filename: its name on the server (and under a mirror base).
        urls: the official URLs, tried in order while the network refuses.
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"``, or None where none is published.
        dest: the folder (relative to the root) it ends up in, or is unpacked into.
        unpack: ``"tar"`` or ``"zip"`` to unpack it into ``dest`` (the archive is then dropped),
            ``"verify-zip"`` to keep the zip as it is after checking every member's CRC,
            or None to keep the file as it is.
    """

    filename: str
    urls: tuple[str, ...]
    checksum: str | None
    dest: str = ""
    unpack: str | None = None


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and what a complete download holds.

    Attributes:
        name: the dataset name.
        resources: its files.
        places: the paths (relative to the root) that move into the root once all is verified.
        expect: paths that a complete download must contain (the files the loader reads).
        homepage: where a person gets the data by hand.
        manual: what to put where when fetching by hand (for the error message).
    """

    name: str
    resources: tuple[Resource, ...]
    places: tuple[str, ...]
    expect: tuple[str, ...]
    homepage: str
    manual: str


def _gdrive(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_FILES = (  # the MD5s torchvision.datasets.MNIST checks
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)
_CIFAR10_BATCHES = tuple(f"cifar-10-batches-py/{n}" for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])

#: The production table: official URLs and published checksums. Tests and mirrors override
#: the base URL and (tests only) the checksums through :func:`fetch`'s arguments, never here.
SOURCES: Mapping[str, Source] = MappingProxyType({
    "mnist": Source(
        "mnist",
        tuple(Resource(f, tuple(m + f for m in _MNIST_MIRRORS), f"md5:{md5}", dest="MNIST/raw") for f, md5 in _MNIST_FILES),
        places=("MNIST",),
        expect=tuple(f"MNIST/raw/{f}" for f, _ in _MNIST_FILES),
        homepage="http://yann.lecun.com/exdb/mnist/ (mirror https://ossci-datasets.s3.amazonaws.com/mnist/)",
        manual="put the four *-ubyte.gz files in {root}/MNIST/raw/",
    ),
    "cifar10": Source(
        "cifar10",
        (Resource("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                  "md5:c58f30108f718f92721af3b95e74349a", unpack="tar"),),
        places=("cifar-10-batches-py",),
        expect=_CIFAR10_BATCHES,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        manual="unpack cifar-10-python.tar.gz in {root} (giving {root}/cifar-10-batches-py/)",
    ),
    "cifar100": Source(
        "cifar100",
        (Resource("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                  "md5:eb9058c3a382ffc7106e4002c42a8d85", unpack="tar"),),
        places=("cifar-100-python",),
        expect=("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        manual="unpack cifar-100-python.tar.gz in {root} (giving {root}/cifar-100-python/)",
    ),
    "tinyimagenet": Source(
        "tinyimagenet",
        # Stanford publishes no checksum; this MD5 is the one other loaders check (e.g. ContinualAI's
        # Avalanche), so a changed archive fails loudly. The zip's CRCs and its layout are checked too.
        (Resource("tiny-imagenet-200.zip", ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
                  "md5:90528d7ca1a48142e341f4ef8d21d0de", unpack="verify-zip"),),
        places=("tiny-imagenet-200.zip",),
        expect=("tiny-imagenet-200.zip",),
        homepage="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        manual="put tiny-imagenet-200.zip in {root}",
    ),
    "waterbirds": Source(
        "waterbirds",
        # No checksum is published (Sagawa et al.'s group_DRO README links the tarball only):
        # verified by Content-Length, the gzip CRC over the whole tar, and metadata.csv inside.
        (Resource("waterbird_complete95_forest2water2.tar.gz",
                  ("https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz",), None, unpack="tar"),),
        places=("waterbird_complete95_forest2water2",),
        expect=("waterbird_complete95_forest2water2/metadata.csv",),
        homepage="https://github.com/kohpangwei/group_DRO (the tarball link in its README)",
        manual="unpack waterbird_complete95_forest2water2.tar.gz in {root}",
    ),
    "celeba": Source(
        "celeba",
        (  # Google Drive ids and MD5s as torchvision.datasets.CelebA lists them
            Resource("img_align_celeba.zip", (_gdrive("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),),
                     "md5:00d2c5bc6d35e252742224ab0c1e8fcb", dest="celeba", unpack="zip"),
            Resource("list_attr_celeba.txt", (_gdrive("0B7EVK8r0v71pblRyaVFSWGxPY0U"),),
                     "md5:75e246fa4810816ffd6ee81facbd244c", dest="celeba"),
            Resource("list_eval_partition.txt", (_gdrive("0B7EVK8r0v71pY0NSMzRuSXJEVkk"),),
                     "md5:d32c9cbf5e040fd4025c592c306e6668", dest="celeba"),
        ),
        places=("celeba",),
        expect=("celeba/list_attr_celeba.txt", "celeba/list_eval_partition.txt", "celeba/img_align_celeba"),
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive: Img/img_align_celeba.zip, "
                 "Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt)",
        manual="put list_attr_celeba.txt and list_eval_partition.txt in {root}/celeba/ and unpack "
               "img_align_celeba.zip there (giving {root}/celeba/img_align_celeba/)",
    ),
})

_ALIASES = {"cifar100u": "cifar100"}

#: ISIC cannot be fetched by a program: the loader's ``patch`` column (whether a coloured patch is in
#: the image, which defines the groups) is not part of the ISIC archive's metadata.
ISIC_STEPS = (
    "isic: cannot be downloaded by a program (the ISIC archive has the images and the benign/malignant "
    "diagnosis, but not the per-image patch labels that define the groups); by hand: "
    "(1) download the images and their metadata from the ISIC archive (https://www.isic-archive.com, or its API "
    "https://api.isic-archive.com/api/v2/) into {root}/isic/images/ as <isic_id>.jpg; "
    "(2) write {root}/isic/metadata.csv with the columns image (or isic_id / image_name), benign_malignant "
    "(benign/malignant, or target 0/1), patch (or has_patch: 1 if a coloured patch is in the image, else 0, "
    "from a patch annotation of those images) and, optionally, split (train/val/test); "
    "the loader checks {root}/isic/metadata.csv, those columns, and {root}/isic/images/<image>"
)


# --------------------------------------------------------------------------- URLs


def resource_urls(resource: Resource, name: str, *, base_url: str | None = None) -> list[str]:
    """The URLs to try for ``resource`` of dataset ``name``: ``<base>/<filename>`` where a base is set, else the official ones."""
    base = base_url or os.environ.get(f"{MIRROR_ENV}_{name.upper()}") or os.environ.get(MIRROR_ENV)
    if base:
        return [base.rstrip("/") + "/" + urllib.parse.quote(resource.filename)]
    return list(resource.urls)


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"${TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


# --------------------------------------------------------------------------- fetch


def fetch(name: str, root: str | Path, *, base_url: str | None = None,
          checksums: Mapping[str, str | None] | None = None, progress: bool = True) -> Path:
    """Download dataset ``name`` into ``root``, verified, in its loader's layout.

    Does nothing (and writes nothing) when the dataset's files are already
    there. Otherwise every file is downloaded into a temporary folder inside
    ``root``, checked, unpacked there, and renamed into place only once the
    whole dataset is complete (see the module docstring).

    Args:
        name: a key of :data:`SOURCES`, or ``cifar100u`` (CIFAR-100's files), or ``isic``
            (which raises :class:`DatasetNotFound` with :data:`ISIC_STEPS`).
        root: the data root; created if needed.
        base_url: fetch file ``F`` from ``<base_url>/F`` instead of the official URLs
            (mirrors, and the tests' local server). Default: ``$SPREADCON_MIRROR_<NAME>``,
            else ``$SPREADCON_MIRROR``, else the official URLs.
        checksums: ``{filename: "md5:<hex>" | "sha256:<hex>" | None}``, replacing the
            published checksum of those files (for test fixtures; None checks no checksum).
        progress: show a progress bar on stderr (tqdm when installed).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``name`` has no source, or ``checksums`` names a file it does not have.
        DatasetNotFound: the network, the server or the root does not allow the download
            (the message says where to get the data by hand); always for ``isic``.
        CorruptDownload: a file arrived damaged (checksum, truncation, broken or incomplete archive).
    """
    root = Path(root).expanduser()
    if name == "isic":
        raise DatasetNotFound(ISIC_STEPS.format(root=root))
    key = _ALIASES.get(name, name)
    if key not in SOURCES:
        raise ValueError(f"name={name!r} cannot be downloaded; valid: {', '.join([*SOURCES, *_ALIASES])} (isic: by hand)")
    source = SOURCES[key]
    overrides = dict(checksums or {})
    unknown = sorted(set(overrides) - {r.filename for r in source.resources})
    if unknown:
        raise ValueError(f"checksums={unknown!r}: {key} has no such file; its files: {[r.filename for r in source.resources]}")
    for value in overrides.values():
        _parse_checksum(value)
    if _present(source, root):
        return root
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _not_found(source, root, f"cannot create {root} ({e.strerror or e})") from e
    try:
        with _lock(source, root):
            if not _present(source, root):  # another process may have fetched it while we waited
                _fetch_locked(source, root, base_url=base_url, overrides=overrides, progress=progress)
    except BaseException:
        if created:
            try:
                root.rmdir()  # only if empty: we leave no trace of a failed first fetch
            except OSError:
                pass
        raise
    return root


def _present(source: Source, root: Path) -> bool:
    return all((root / p).exists() for p in source.expect)


def _fetch_locked(source: Source, root: Path, *, base_url, overrides, progress) -> None:
    for stale in root.glob(f".spreadcon-{source.name}-*.partial"):
        if not _running(stale.name.split("-")[2]):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed fetch
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".spreadcon-{source.name}-{os.getpid()}-", suffix=".partial", dir=root))
    except OSError as e:
        raise _not_found(source, root, f"cannot write into {root} ({e.strerror or e})") from e
    try:
        for res in source.resources:
            dest = staging / res.dest
            dest.mkdir(parents=True, exist_ok=True)
            path, url = _download_any(source, res, dest, root, base_url=base_url,
                                      checksum=overrides.get(res.filename, res.checksum), progress=progress)
            _unpack(source, res, path, dest, url, root)
        missing = [p for p in source.expect if not (staging / p).exists()]
        if missing:
            raise CorruptDownload(f"{source.name}: the download lacks {missing[0]} ({len(missing)} expected path(s) "
                                  f"missing); nothing was written to {root}; {_manual(source, root)}")
        for rel in source.places:
            _place(staging / rel, root / rel)
    except DataError:
        raise
    except OSError as e:  # disk full, permissions: not the data's fault
        raise _not_found(source, root, f"cannot write into {root} ({e.strerror or e})") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _running(pid: str) -> bool:
    """Whether process ``pid`` (a temporary folder's writer) still runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


@contextmanager
def _lock(source: Source, root: Path) -> Iterator[None]:
    """Hold ``<root>/.spreadcon-<name>.lock`` exclusively (POSIX ``flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent fetches stay correct (atomic renames), only wasteful
        yield
        return
    path = root / f".spreadcon-{source.name}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _not_found(source, root, f"cannot write into {root} ({e.strerror or e})") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)


def _place(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``; where ``dst`` is already a folder, merge child by child."""
    if dst.is_dir() and src.is_dir() and not dst.is_symlink():
        for child in sorted(src.iterdir()):
            _place(child, dst / child.name)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


# --------------------------------------------------------------------------- one file


def _download_any(source: Source, res: Resource, dest: Path, root: Path, *, base_url, checksum, progress) -> tuple[Path, str]:
    """Download ``res`` into ``dest`` from the first URL that answers; the path and the URL used."""
    urls = resource_urls(res, source.name, base_url=base_url)
    failures = []
    for url in urls:
        try:
            return _download(source, res, url, dest, root, checksum=checksum, progress=progress), url
        except _Unreachable as e:
            failures.append(f"{url}: {e}")
    mirror = f"${MIRROR_ENV}_{source.name.upper()} / ${MIRROR_ENV}"
    raise _not_found(source, root, f"cannot download {res.filename} ({'; '.join(failures)}); "
                                   f"check the network or set a mirror ({mirror})")


class _Unreachable(Exception):
    """The server could not be reached or refused the file: try the next URL."""


def _download(source: Source, res: Resource, url: str, dest: Path, root: Path, *, checksum, progress) -> Path:
    """Stream ``url`` to ``dest/<filename>``, hashing as it goes; check its length and checksum."""
    if progress and status_lines_wanted():  # a terminal, never a published page (spreadcon.data.cache)
        print(f"downloading {source.name} from {url} into {root}", file=sys.stderr, flush=True)
    try:
        response = _open(url)
    except TimeoutError as e:
        raise _Unreachable(f"no answer within {_timeout():g} s (${TIMEOUT_ENV})") from e
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
        raise _Unreachable(_reason(e)) from e
    path = dest / res.filename
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        got = 0
        with open(path, "wb") as f, _bar(res.filename, expected, progress) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
                    got += len(getattr(e, "partial", b""))
                    why = "stalled" if isinstance(e, TimeoutError) else "the connection broke"
                    raise CorruptDownload(_corrupt(source, url, root, f"truncated: {why} after {got} of "
                                                                      f"{expected or 'unknown'} bytes")) from e
                if not chunk:
                    break
                f.write(chunk)
                for d in digests.values():
                    d.update(chunk)
                got += len(chunk)
                bar(len(chunk))
    if expected is not None and got != expected:
        raise CorruptDownload(_corrupt(source, url, root, f"truncated: {got} of {expected} bytes"))
    kind, want = _parse_checksum(checksum)
    if kind and digests[kind].hexdigest() != want:
        raise CorruptDownload(_corrupt(source, url, root, f"{kind} {digests[kind].hexdigest()} is not the expected {want}"))
    return path


def _open(url: str):
    """``urlopen`` with the timeout; a web page with a download-confirmation form (Google Drive's
    "can't scan this file for viruses" page) is answered once, any other web page is an error."""
    request = urllib.request.Request(url, headers={"User-Agent": "spreadcon"})
    response = urllib.request.urlopen(request, timeout=_timeout())
    if not response.headers.get_content_type() == "text/html":
        return response
    with response:
        page = response.read(1 << 20).decode("utf-8", "replace")
    confirm = _confirm_url(page, response.geturl())
    if confirm is None:
        raise _Unreachable(f"the server sent a web page instead of the file ({_page_title(page)})")
    response = urllib.request.urlopen(urllib.request.Request(confirm, headers={"User-Agent": "spreadcon"}), timeout=_timeout())
    if response.headers.get_content_type() == "text/html":
        with response:
            page = response.read(1 << 20).decode("utf-8", "replace")
        raise _Unreachable(f"the server sent a web page instead of the file ({_page_title(page)}; "
                           "Google Drive's daily quota may be used up: try later or fetch it by hand)")
    return response


def _confirm_url(page: str, base: str) -> str | None:
    """The URL that a page's download-confirmation ``<form>`` (with a hidden ``confirm`` input) submits to."""
    form = re.search(r"<form[^>]*\baction=\"([^\"]+)\"[^>]*>(.*?)</form>", page, re.S | re.I)
    if not form:
        return None
    inputs = dict(re.findall(r"<input[^>]*\bname=\"([^\"]+)\"[^>]*\bvalue=\"([^\"]*)\"", form.group(2), re.I))
    if "confirm" not in inputs:
        return None
    action = urllib.parse.urljoin(base, html.unescape(form.group(1)))
    query = urllib.parse.urlencode({k: html.unescape(v) for k, v in inputs.items()})
    return f"{action}{'&' if '?' in action else '?'}{query}"


def _page_title(page: str) -> str:
    title = re.search(r"<title>(.*?)</title>", page, re.S | re.I)
    return " ".join(html.unescape(title.group(1)).split())[:80] if title else "no title"


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", e)
    return " ".join(f"{type(reason).__name__}: {reason}".split())


def _parse_checksum(value: str | None) -> tuple[str, str]:
    if value is None:
        return ("", "")
    kind, _, hexdigest = str(value).partition(":")
    if kind not in ("md5", "sha256") or not re.fullmatch(r"[0-9a-f]+", hexdigest or "-"):
        raise ValueError(f"checksum {value!r} must be 'md5:<hex>' or 'sha256:<hex>' (lower case)")
    return kind, hexdigest


@contextmanager
def _bar(label: str, total: int | None, enabled: bool):
    """A progress callback ``bar(n_bytes)`` drawing to stderr: tqdm where installed, else a plain percentage."""
    if not (enabled and status_lines_wanted()):
        yield lambda n: None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                  leave=False) as t:
            yield t.update
        return
    state = {"done": 0, "shown": -1}

    def update(n: int) -> None:
        state["done"] += n
        step = state["done"] * 20 // total if total else state["done"] >> 26
        if step != state["shown"]:
            state["shown"] = step
            what = f"{state['done'] * 100 // total}%" if total else f"{state['done'] >> 20} MiB"
            print(f"\r{label}: {what}", end="", file=sys.stderr, flush=True)

    yield update
    print(file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- archives


def _unpack(source: Source, res: Resource, path: Path, dest: Path, url: str, root: Path) -> None:
    """Unpack (or, for ``verify-zip``, check) the downloaded ``path`` into ``dest``; damage is :class:`CorruptDownload`."""
    if res.unpack is None:
        return
    try:
        if res.unpack == "tar":
            with tarfile.open(path, "r:*") as tar:
                members = tar.getmembers()  # reads the whole archive: a truncated gzip fails here
                for m in members:
                    _check_member(m.name, source, url, root)
                    if not (m.isfile() or m.isdir()):
                        raise CorruptDownload(_corrupt(source, url, root, f"unexpected link or device {m.name!r}"))
                tar.extractall(dest, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        else:
            with zipfile.ZipFile(path) as z:
                for n in z.namelist():
                    _check_member(n, source, url, root)
                bad = z.testzip()  # reads every member and checks its CRC
                if bad is not None:
                    raise CorruptDownload(_corrupt(source, url, root, f"member {bad} fails its CRC check"))
                if res.unpack == "zip":
                    z.extractall(dest)
        if res.unpack != "verify-zip":
            path.unlink()
    except CorruptDownload:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, ValueError) as e:
        raise CorruptDownload(_corrupt(source, url, root, f"not a readable archive ({type(e).__name__}: {e})")) from e
    except OSError as e:
        if e.errno is None:  # gzip's "CRC check failed", "Not a gzipped file"
            raise CorruptDownload(_corrupt(source, url, root, f"not a readable archive ({e})")) from e
        raise


def _check_member(name: str, source: Source, url: str, root: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise CorruptDownload(_corrupt(source, url, root, f"archive member {name!r} points outside its folder"))


# --------------------------------------------------------------------------- messages


def _manual(source: Source, root: Path) -> str:
    return f"get it by hand from {source.homepage} and {source.manual.format(root=root)}"


def _not_found(source: Source, root: Path, what: str) -> DatasetNotFound:
    return DatasetNotFound(_line(f"{source.name}: {what}; nothing was written to {root}; "
                                 f"to fetch it without the network, {_manual(source, root)}"))


def _corrupt(source: Source, url: str, root: Path, what: str) -> str:
    return _line(f"{source.name}: the download from {url} is damaged ({what}); nothing was written to {root}; "
                 f"try again, or {_manual(source, root)}")


def _line(text: str) -> str:
    return " ".join(text.split())
