"""One loader per benchmark, all returning the same :class:`Dataset`.

A :class:`Dataset` holds three :class:`Split` objects (``train``, ``val``,
``test``) with int64 ``fine`` / ``coarse`` / ``group`` labels. Small-image
datasets hold their images as one uint8 tensor ``(N, C, H, W)`` (so training
can keep them on the device); large-image datasets (waterbirds, celeba, isic)
hold file paths and stream them, decoded and resized to a fixed square size,
through a ``torch.utils.data.DataLoader``. :func:`batches` gives the same dict
format for both.

Splits (all seeded by ``seed``, default 0):

* ``val`` is a hold-out of the official training set, stratified by fine
  label: ``round(val_fraction * n_c)`` (half up) images of each class ``c``
  (``val_fraction`` default 0.1). So train + val = the official training set.
  Waterbirds and CelebA have official validation splits, which are used as is.
* ``test`` is the official test set. TinyImageNet has no public test labels,
  so its official ``val`` set is the test set.
* ``cifar100u`` (CIFAR-100, unbalanced): in each superclass the five classes,
  in an order drawn with ``seed``, keep 500, 250, 100, 50, 50 images of the
  official training set, drawn without replacement with ``seed``; each class's
  draw is then split into train/val by ``val_fraction`` (so 450+50, 225+25,
  90+10, 45+5, 45+5). The test set is the official, balanced CIFAR-100 test
  set. (The official thanos-code draws unseeded, with replacement, and also
  unbalances the test split; we do neither.)
* ``isic`` uses the ``split`` column of its metadata if present, else a
  hold-out stratified by group: ``val_fraction`` for val, ``test_fraction``
  (default 0.2) for test.

Labels: for robustness datasets ``coarse`` is the target and ``group`` the
group; ``fine`` is the group too (there is no finer label), except
``mnist-cifar``, whose fine label is the digit.

Order: in-memory splits keep the order of their source, so an index means
a different image on different copies of one dataset. In particular the
offline CIFAR-10 copy ``cifar10-jpeg.zip`` records only each image's rank
within its class (``train/<class>/NNNN.jpg``), so :func:`load_cifar10` returns
its images grouped by class (all airplanes, then all automobiles, ...), while
the official pickles ``cifar-10-batches-py`` give the official interleaved
order. The two paths hold the same images with the same labels, but image
``i`` and the seeded validation hold-out (which draws positions within each
class) differ between them.

Caches: decoded small-image datasets are saved once under
:func:`spreadcon.data.cache.cache_dir` (``$SPREADCON_CACHE``, else
``$XDG_CACHE_HOME/spreadcon/decoded``, else ``~/.cache/spreadcon/decoded``),
never in the data root unless the user names it as the cache; see
:mod:`spreadcon.data.cache`. The data root is written only when a download
is asked for (``download=True``) and the dataset is missing; the download is
:func:`spreadcon.data.download.fetch` (official archives, checksums, atomic).

Errors: every loader raises :class:`DatasetNotFound`, :class:`CorruptDataset`
or :class:`UnreadableDataset` (:mod:`spreadcon.data.errors`) with one line
that names the file and the fix.

Example:
    >>> from spreadcon.data import load
    >>> ds = load("mnist", root="/work/shared/data")          # doctest: +SKIP
    >>> ds.splits["train"].images.shape, ds.n_coarse          # doctest: +SKIP
    (torch.Size([54000, 1, 28, 28]), 2)
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import hierarchy
from . import hierarchy as hierarchy_module  # load_tinyimagenet has an argument named hierarchy
from .cache import cached
from .errors import CorruptDataset, DatasetNotFound, UnreadableDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

URLS = {
    "mnist": "the four *-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ (or http://yann.lecun.com/exdb/mnist/)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "tinyimagenet": "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    "waterbirds": "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz",
    "celeba": "img_align_celeba.zip, list_attr_celeba.txt, list_eval_partition.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    "isic": "ISIC archive images (https://challenge.isic-archive.com/data/) plus patch labels, "
    "written as isic/metadata.csv with columns image,benign_malignant,patch[,split]",
}


def default_root() -> Path:
    """The data root: ``$SPREADCON_DATA``, else ``~/.cache/spreadcon``."""
    env = os.environ.get("SPREADCON_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spreadcon"


# --------------------------------------------------------------------------- types


class ImageReader:
    """Decode one image file to uint8 ``(3, size, size)``: RGB, shorter side resized, centre-cropped.

    Picklable, so DataLoader workers can use it.
    """

    def __init__(self, root: str | Path, size: int):
        if int(size) <= 0:
            raise ValueError(f"image_size={size!r} must be a positive int")
        self.root, self.size = Path(root), int(size)

    def __call__(self, relpath: str) -> torch.Tensor:
        from PIL import Image

        path = self.root / relpath
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = self.size / min(w, h)
                nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
                im = im.resize((nw, nh), Image.BILINEAR)
                left, top = (nw - self.size) // 2, (nh - self.size) // 2
                im = im.crop((left, top, left + self.size, top + self.size))
                arr = np.asarray(im, dtype=np.uint8).copy()
        except FileNotFoundError as e:
            raise DatasetNotFound(f"image file {path} is missing") from e
        except PermissionError as e:
            raise unreadable("image", e, path) from e
        except OSError as e:
            raise CorruptDataset(f"cannot decode image {path}: {e}") from e
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


@dataclass
class Split:
    """One split: labels plus either in-memory images or files to stream.

    Attributes:
        fine, coarse: int64 ``(N,)``.
        group: int64 ``(N,)`` or None (transfer datasets).
        images: uint8 ``(N, C, H, W)``, or None for streaming datasets.
        files: paths (relative to ``reader.root``) for streaming datasets.
        reader: an :class:`ImageReader` for streaming datasets.
    """

    fine: torch.Tensor
    coarse: torch.Tensor
    group: torch.Tensor | None = None
    images: torch.Tensor | None = None
    files: list[str] | None = None
    reader: Callable[[str], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        n = len(self.fine)
        sizes = {"coarse": len(self.coarse)}
        if self.group is not None:
            sizes["group"] = len(self.group)
        if self.images is not None:
            sizes["images"] = len(self.images)
        if self.files is not None:
            sizes["files"] = len(self.files)
        for key, m in sizes.items():
            if m != n:
                raise ValueError(f"{key} has {m} entries but fine has {n}")
        if self.images is None and (self.files is None or self.reader is None):
            raise ValueError("a Split needs images, or files and a reader")

    def __len__(self) -> int:
        return len(self.fine)

    @property
    def streaming(self) -> bool:
        return self.images is None

    def subset(self, indices) -> "Split":
        """The split restricted to ``indices`` (a sequence, int tensor or bool mask)."""
        idx = torch.as_tensor(indices)
        if idx.dtype == torch.bool:
            if len(idx) != len(self):
                raise ValueError(f"indices: bool mask of length {len(idx)} for a split of {len(self)}")
            idx = idx.nonzero().flatten()
        idx = idx.long().flatten()
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices out of range [0, {len(self)})")
        cpu = idx.cpu()
        return Split(
            fine=self.fine[cpu],
            coarse=self.coarse[cpu],
            group=None if self.group is None else self.group[cpu],
            images=None if self.images is None else self.images[idx.to(self.images.device)],
            files=None if self.files is None else [self.files[i] for i in cpu.tolist()],
            reader=self.reader,
        )

    def to(self, device) -> "Split":
        """Move in-memory images to ``device`` (labels stay on the CPU)."""
        if self.images is None:
            return self
        return replace(self, images=self.images.to(device))


@dataclass
class Dataset:
    """A benchmark: three splits plus everything needed to train on it."""

    name: str
    task: str  # "transfer" | "robustness"
    image_shape: tuple[int, int, int]
    fine_names: list[str]
    coarse_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    grayscale_aug: bool
    splits: dict[str, Split]
    group_names: list[str] = field(default_factory=list)
    description: str = ""
    proxy: bool = False
    #: the dataset's own changes to the default augmentation (keyword arguments of
    #: :class:`spreadcon.data.augment.TwoViewAugment`), e.g. milder crops that keep a proxy's core feature
    augment: dict = field(default_factory=dict)

    @property
    def n_fine(self) -> int:
        return len(self.fine_names)

    @property
    def n_coarse(self) -> int:
        return len(self.coarse_names)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)


# --------------------------------------------------------------------------- batches


class _FileDataset(torch.utils.data.Dataset):
    def __init__(self, files: list[str], reader: Callable[[str], torch.Tensor]):
        self.files, self.reader = files, reader

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.reader(self.files[i])


def batches(
    split: Split,
    batch_size: int,
    shuffle: bool = True,
    *,
    generator: torch.Generator | None = None,
    device="cpu",
    drop_last: bool = False,
    num_workers: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{"images": uint8 (b, C, H, W), "fine", "coarse", ["group"], "index"}`` on ``device``.

    In-memory and streaming splits give the same format; streaming splits
    decode through a DataLoader with ``num_workers`` workers.

    Example:
        >>> b = next(batches(ds.splits["train"], 128))  # doctest: +SKIP
        >>> b["images"].dtype, b["fine"].dtype            # doctest: +SKIP
        (torch.uint8, torch.int64)
    """
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    # Indices and labels go to where the images are once per call (per epoch), so that no
    # batch copies indices or labels between host and device.
    where = torch.device("cpu") if split.streaming else split.images.device
    order = order.to(where)
    chunks = list(order.split(int(batch_size)))
    if drop_last and chunks and len(chunks[-1]) < batch_size:
        chunks = chunks[:-1]
    device = torch.device(device)
    columns = {"fine": split.fine, "coarse": split.coarse}
    if split.group is not None:
        columns["group"] = split.group
    columns = {k: v.to(where) for k, v in columns.items()}

    def labels(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {k: v[idx] for k, v in columns.items()}
        out["index"] = idx
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}

    if not split.streaming:
        for idx in chunks:
            images = split.images[idx].to(device, non_blocking=True)
            yield {"images": images, **labels(idx)}
        return
    loader = torch.utils.data.DataLoader(
        _FileDataset(split.files, split.reader),
        batch_sampler=[c.tolist() for c in chunks],
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    for idx, images in zip(chunks, loader):
        yield {"images": images.to(device, non_blocking=True), **labels(idx)}


# --------------------------------------------------------------------------- helpers


DOWNLOADABLE = ("mnist", "cifar10", "cifar100", "cifar100u", "tinyimagenet", "waterbirds", "celeba")


_REFETCH = {name: f"fetch it again ({how})" for name, how in URLS.items()}


def unreadable(what: str, error: OSError, path: str | Path | None = None) -> UnreadableDataset:
    """The one-line :class:`UnreadableDataset` for a ``PermissionError`` on ``path`` (default ``error.filename``)."""
    where = Path(path if path is not None else (error.filename or "?"))
    fix = "chmod a+rx" if where.is_dir() else "chmod a+r"
    return UnreadableDataset(
        f"{what}: cannot read {where} (permission denied); make it readable for this user "
        f"(`{fix} {where}`, and a+x on the folders above it) or point --root at a readable copy"
    )


def _check_labels(labels: torch.Tensor, n: int, what: str, path: Path) -> torch.Tensor:
    """``labels`` (int64) if every one is in ``[0, n)``; else :class:`CorruptDataset` naming the first bad one."""
    bad = ((labels < 0) | (labels >= n)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise CorruptDataset(
            f"{what}: {path} holds label {int(labels[i])} at position {i} ({len(bad)} such), but the labels are "
            f"0-{n - 1}: the file is damaged; {_REFETCH[what]}"
        )
    return labels


def _missing(name: str, path: Path, hint: str = "") -> DatasetNotFound:
    extra = f" {hint}" if hint else ""
    how = "; or load(..., download=True) / `data summary --download`" if name in DOWNLOADABLE else ""
    return DatasetNotFound(f"{name}: expected {path}; get it with {URLS[name]}{extra}{how}")


def _holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified seeded hold-out: ``round(fraction * n_c)`` (half up) of each label go to the second index set."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction={fraction!r} must be in [0, 1)")
    gen = torch.Generator().manual_seed(int(seed))
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = int(fraction * len(idx) + 0.5)  # round half up
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def _transfer_splits(a: dict, coarse_of: list[int], val_fraction: float, seed: int, image_size: int | None = None) -> dict:
    """train/val/test Splits from ``a = {"train_images", "train_fine", "test_images", "test_fine"}``.

    val is the seeded stratified hold-out of train; labels get coarse ids from
    ``coarse_of``; images are resized to ``image_size`` when it is given.
    """
    cmap = torch.tensor(coarse_of, dtype=torch.long)

    def split(images, fine):
        fine = fine.long()
        return Split(fine=fine, coarse=cmap[fine], images=_resize_images(images, image_size))

    tr, va = _holdout(a["train_fine"], val_fraction, seed)
    return {
        "train": split(a["train_images"][tr], a["train_fine"][tr]),
        "val": split(a["train_images"][va], a["train_fine"][va]),
        "test": split(a["test_images"], a["test_fine"]),
    }


def _resize_images(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` to ``size × size`` (bilinear, antialiased), in chunks."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = []
    for chunk in images.split(4096):
        x = torch.nn.functional.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _decode_jpegs(blobs: list[bytes], what: str, names: list[str] | None = None) -> torch.Tensor:
    """Decode JPEG/PNG bytes to uint8 ``(N, 3, H, W)`` (greyscale → RGB); all must share one size."""
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_image

    out = []
    for k, blob in enumerate(blobs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                out.append(decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB))
        except RuntimeError as e:
            where = names[k] if names else f"#{k}"
            raise CorruptDataset(f"{what}: cannot decode image {where}: {e}") from e
    try:
        return torch.stack(out)
    except RuntimeError as e:
        raise CorruptDataset(f"{what}: images of different sizes: {e}") from e


def _download(name: str, root: Path) -> None:
    """Fetch ``name`` into ``root`` with :func:`spreadcon.data.download.fetch` (verified, atomic, with a progress bar).

    Called by a loader only when ``download=True`` and its files are missing, so
    a root that holds the data is never written. Raises ``DatasetNotFound``
    (no network; for ``isic`` the manual steps) or ``CorruptDownload`` (a
    ``CorruptDataset``: the download arrived damaged), each one line.
    """
    from .download import fetch

    fetch(name, root)


def _dataset_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``(N, C, H, W)`` in [0, 1], exactly, from 256-bin histograms."""
    values = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        m = (counts * values).sum() / counts.sum()
        v = (counts * (values - m) ** 2).sum() / counts.sum()
        mean.append(round(float(m), 4))
        std.append(round(float(v.sqrt()), 4))
    return tuple(mean), tuple(std)


# --------------------------------------------------------------------------- MNIST


def _read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (MNIST's format, optionally gzipped) into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except PermissionError as e:
        raise unreadable("mnist", e, path) from e
    except (OSError, EOFError) as e:
        raise CorruptDataset(f"mnist: cannot read {path} ({e}); {_REFETCH['mnist']}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise CorruptDataset(f"mnist: {path} is not an unsigned-byte idx file (bad magic number); {_REFETCH['mnist']}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise CorruptDataset(f"mnist: {path}: header says {dims} but holds {len(body)} bytes (truncated?); {_REFETCH['mnist']}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _mnist_file(raw: Path, stem: str) -> Path:
    for p in (raw / stem, raw / f"{stem}.gz"):
        if p.is_file():
            return p
    raise _missing("mnist", raw / stem)


def load_mnist(root: Path, *, seed=0, val_fraction=0.1, image_size=None, download=False, cache=None) -> Dataset:
    """MNIST from ``<root>/MNIST/raw`` (torchvision layout, idx files, optionally ``.gz``)."""
    raw = root / "MNIST" / "raw"
    if download and not (raw / "train-images-idx3-ubyte").exists() and not (raw / "train-images-idx3-ubyte.gz").exists():
        _download("mnist", root)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    files = [_mnist_file(raw, s) for s in stems]
    tr_x, tr_y, te_x, te_y = (_read_idx(p) for p in files)
    if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise CorruptDataset(f"mnist: image and label counts differ under {raw}; {_REFETCH['mnist']}")
    tr_y, te_y = (_check_labels(y.long(), 10, "mnist", p) for y, p in ((tr_y, files[1]), (te_y, files[3])))
    a = {"train_images": tr_x[:, None], "train_fine": tr_y, "test_images": te_x[:, None], "test_fine": te_y}
    coarse_of, coarse_names = hierarchy.mnist_coarse()
    splits = _transfer_splits(a, coarse_of, val_fraction, seed, image_size)
    return Dataset(
        name="mnist", task="transfer", image_shape=tuple(splits["train"].images.shape[1:]),
        fine_names=list(hierarchy.MNIST_FINE), coarse_names=coarse_names,
        mean=(0.1307,), std=(0.3081,), grayscale_aug=False, splits=splits,
        description="MNIST digits; coarse = digit < 5 vs >= 5",
    )


# --------------------------------------------------------------------------- CIFAR-10


def _read_zip_tree(zpath: Path, what: str) -> tuple[zipfile.ZipFile, list[str]]:
    try:
        z = zipfile.ZipFile(zpath)
        return z, z.namelist()
    except PermissionError as e:
        raise unreadable(what, e, zpath) from e
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptDataset(f"{what}: {zpath} is not a readable zip archive ({e}); delete it and fetch it again") from e


def _read_members(z: zipfile.ZipFile, names: list[str], what: str) -> list[bytes]:
    try:
        return [z.read(n) for n in names]
    except PermissionError as e:
        raise unreadable(what, e, z.filename) from e
    except (zipfile.BadZipFile, OSError, KeyError, EOFError) as e:
        raise CorruptDataset(f"{what}: {z.filename} is damaged ({e}); delete it and fetch it again") from e


def _cifar10_from_zip(zpath: Path) -> dict:
    z, names = _read_zip_tree(zpath, "cifar10")
    classes = hierarchy.CIFAR10_FINE
    out = {}
    with z:
        for split in ("train", "test"):
            members, labels = [], []
            for c, cls in enumerate(classes):
                mine = sorted(n for n in names if n.startswith(f"{split}/{cls}/") and n.lower().endswith((".jpg", ".jpeg", ".png")))
                members += mine
                labels += [c] * len(mine)
            if not members:
                raise CorruptDataset(f"cifar10: {zpath} has no {split}/<class>/*.jpg images")
            out[f"{split}_images"] = _decode_jpegs(_read_members(z, members, "cifar10"), "cifar10", members)
            out[f"{split}_fine"] = torch.tensor(labels, dtype=torch.long)
    return out


class _DataUnpickler(pickle.Unpickler):
    """Unpickles the official CIFAR batches, which hold only dicts, lists,
    strings, bytes and numpy arrays; any other global is refused, so a
    tampered file cannot execute code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _unpickle(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except PermissionError as e:
        raise unreadable(what, e, path) from e
    except Exception as e:
        raise CorruptDataset(f"{what}: cannot unpickle {path} ({type(e).__name__}: {e}); {_REFETCH[what]}") from e


def _cifar_images(d: dict, path: Path, what: str) -> torch.Tensor:
    try:
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    except (KeyError, ValueError) as e:
        raise CorruptDataset(f"{what}: {path} has no (N, 3072) 'data' array ({e}); {_REFETCH[what]}") from e
    return torch.from_numpy(data.copy())


def _cifar10_from_pickles(folder: Path) -> dict:
    out = {}
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        imgs, labels = [], []
        for name in files:
            d = _unpickle(folder / name, "cifar10")
            imgs.append(_cifar_images(d, folder / name, "cifar10"))
            labels.append(_check_labels(torch.tensor(d.get("labels", []), dtype=torch.long), 10, "cifar10", folder / name))
            if len(labels[-1]) != len(imgs[-1]):
                raise CorruptDataset(f"cifar10: {folder / name} has {len(imgs[-1])} images but {len(labels[-1])} labels")
        out[f"{split}_images"] = torch.cat(imgs)
        out[f"{split}_fine"] = torch.cat(labels)
    return out


def _cifar10_arrays(root: Path, download: bool, cache: Path | None) -> dict:
    zpath, folder = root / "cifar10-jpeg.zip", root / "cifar-10-batches-py"
    if not zpath.is_file() and not (folder / "test_batch").is_file() and download:
        _download("cifar10", root)
    if zpath.is_file():
        return cached("cifar10-jpeg", [zpath], lambda: _cifar10_from_zip(zpath), cache, dataset="cifar10")
    if (folder / "test_batch").is_file():
        sources = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
        return cached("cifar10-py", sources, lambda: _cifar10_from_pickles(folder), cache, dataset="cifar10")
    raise _missing("cifar10", zpath, f"(or the official pickles in {folder})")


def load_cifar10(root: Path, *, seed=0, val_fraction=0.1, image_size=None, download=False, cache=None) -> Dataset:
    """CIFAR-10 from ``<root>/cifar10-jpeg.zip`` (offline JPEG copy) or ``<root>/cifar-10-batches-py``."""
    a = _cifar10_arrays(root, download, cache)
    coarse_of, coarse_names = hierarchy.cifar10_coarse()
    splits = _transfer_splits(a, coarse_of, val_fraction, seed, image_size)
    return Dataset(
        name="cifar10", task="transfer", image_shape=tuple(splits["train"].images.shape[1:]),
        fine_names=list(hierarchy.CIFAR10_FINE), coarse_names=coarse_names,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), grayscale_aug=True, splits=splits,
        description="CIFAR-10; coarse = vehicles {airplane, automobile, ship, truck} vs animals",
    )


# --------------------------------------------------------------------------- CIFAR-100


def _cifar100_arrays(root: Path, download: bool, cache: Path | None) -> dict:
    folder = root / "cifar-100-python"
    if not (folder / "test").is_file() and download:
        _download("cifar100", root)
    for name in ("train", "test", "meta"):
        if not (folder / name).is_file():
            raise _missing("cifar100", folder / name)

    def build() -> dict:
        out = {}
        meta = _unpickle(folder / "meta", "cifar100")
        for split in ("train", "test"):
            d = _unpickle(folder / split, "cifar100")
            if "fine_labels" not in d or "coarse_labels" not in d:
                raise CorruptDataset(f"cifar100: {folder / split} lacks fine_labels/coarse_labels; {_REFETCH['cifar100']}")
            out[f"{split}_images"] = _cifar_images(d, folder / split, "cifar100")
            for key, n in (("fine", 100), ("coarse", 20)):
                labels = torch.tensor(d[f"{key}_labels"], dtype=torch.long)
                out[f"{split}_{key}"] = _check_labels(labels, n, "cifar100", folder / split)
        out["fine_names"] = list(meta["fine_label_names"])
        out["coarse_names"] = list(meta["coarse_label_names"])
        return out

    return cached("cifar100", [folder / "train", folder / "test", folder / "meta"], build, cache)


def _cifar100_coarse_of(a: dict) -> list[int]:
    """fine→coarse from the pickles' own (fine, coarse) pairs; each fine id must have one coarse id."""
    n_fine = len(a["fine_names"])
    coarse_of = [-1] * n_fine
    pairs = torch.unique(torch.stack([a["train_fine"], a["train_coarse"]], 1), dim=0).tolist()
    for f, c in pairs:
        if coarse_of[f] not in (-1, c):
            raise CorruptDataset(f"cifar100: fine class {f} appears with two coarse labels")
        coarse_of[f] = c
    fallback, _ = hierarchy.cifar100_coarse()
    return [fallback[f] if c == -1 else c for f, c in enumerate(coarse_of)]


def _cifar100_dataset(name: str, splits: dict, a: dict, description: str) -> Dataset:
    return Dataset(
        name=name, task="transfer", image_shape=tuple(splits["train"].images.shape[1:]),
        fine_names=a["fine_names"], coarse_names=a["coarse_names"],
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), grayscale_aug=True, splits=splits,
        description=description,
    )


def load_cifar100(root: Path, *, seed=0, val_fraction=0.1, image_size=None, download=False, cache=None) -> Dataset:
    """CIFAR-100 from the official pickles ``<root>/cifar-100-python/{train,test,meta}``."""
    a = _cifar100_arrays(root, download, cache)
    splits = _transfer_splits(a, _cifar100_coarse_of(a), val_fraction, seed, image_size)
    return _cifar100_dataset("cifar100", splits, a, "CIFAR-100; coarse = the 20 official superclasses")


CIFAR100U_COUNTS = (500, 250, 100, 50, 50)


def load_cifar100u(root: Path, *, seed=0, val_fraction=0.1, image_size=None, download=False, cache=None) -> Dataset:
    """CIFAR-100-U: per superclass, its 5 classes keep 500/250/100/50/50 official training images (seeded)."""
    a = _cifar100_arrays(root, download, cache)
    coarse_of = _cifar100_coarse_of(a)
    gen = torch.Generator().manual_seed(int(seed))
    fine = a["train_fine"]
    chosen = []
    for c in range(len(a["coarse_names"])):
        members = [f for f in range(len(coarse_of)) if coarse_of[f] == c]
        order = [members[i] for i in torch.randperm(len(members), generator=gen).tolist()]
        for f, count in zip(order, CIFAR100U_COUNTS * (len(order) // 5 + 1)):
            idx = (fine == f).nonzero().flatten()
            chosen.append(idx[torch.randperm(len(idx), generator=gen)[: min(count, len(idx))]])
    keep = torch.cat(chosen).sort().values
    unbalanced = {**a, "train_images": a["train_images"][keep], "train_fine": fine[keep]}
    splits = _transfer_splits(unbalanced, coarse_of, val_fraction, seed, image_size)
    return _cifar100_dataset(
        "cifar100u", splits, a, "CIFAR-100 unbalanced: 500/250/100/50/50 training images per superclass's classes (seeded)"
    )


# --------------------------------------------------------------------------- TinyImageNet


class _Tree:
    """Read files of the ``tiny-imagenet-200/`` layout from a zip or a folder."""

    def __init__(self, root: Path):
        self.zip = None
        for zname in ("tiny-imagenet-200-subset.zip", "tiny-imagenet-200.zip"):
            if (root / zname).is_file():
                self.source = root / zname
                self.zip, names = _read_zip_tree(self.source, "tinyimagenet")
                hits = [n for n in names if n.endswith("wnids.txt")]
                if not hits:
                    raise CorruptDataset(f"tinyimagenet: {self.source} has no wnids.txt")
                self.prefix = hits[0][: -len("wnids.txt")]
                self.names = [n[len(self.prefix) :] for n in names if n.startswith(self.prefix)]
                return
        folder = root / "tiny-imagenet-200"
        if (folder / "wnids.txt").is_file():
            self.source = folder / "wnids.txt"
            self.folder = folder
            self.names = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
            return
        raise _missing("tinyimagenet", root / "tiny-imagenet-200.zip", f"(or the extracted folder {folder})")

    def read(self, names: list[str]) -> list[bytes]:
        if self.zip is not None:
            return _read_members(self.zip, [self.prefix + n for n in names], "tinyimagenet")
        return [(self.folder / n).read_bytes() for n in names]

    def text(self, name: str) -> str:
        return self.read([name])[0].decode("utf-8")


def _tinyimagenet_build(tree: _Tree) -> dict:
    wnids = tree.text("wnids.txt").split()
    index = {w: i for i, w in enumerate(wnids)}
    train = sorted(n for n in tree.names if n.startswith("train/") and "/images/" in n and n.endswith(".JPEG"))
    stray = sorted({n.split("/")[1] for n in train} - set(index))
    if stray:
        raise CorruptDataset(f"tinyimagenet: {tree.source} has train/{stray[0]}/ but wnids.txt does not list {stray[0]}")
    train_y = [index[n.split("/")[1]] for n in train]
    val_rows = []
    for n, line in enumerate(tree.text("val/val_annotations.txt").splitlines(), 1):
        r = line.split("\t")
        if line.strip() and (len(r) < 2 or r[1] not in index):
            raise CorruptDataset(f"tinyimagenet: {tree.source}: val/val_annotations.txt line {n} is {line!r}; "
                                 "it needs 'val_<k>.JPEG<TAB><a wnid listed in wnids.txt>'")
        if line.strip():
            val_rows.append(r)
    val = [f"val/images/{r[0]}" for r in val_rows]
    val_y = [index[r[1]] for r in val_rows]
    words = {}
    if "words.txt" in tree.names:
        words = dict(line.split("\t", 1) for line in tree.text("words.txt").splitlines() if "\t" in line)
    return {
        "train_images": _decode_jpegs(tree.read(train), "tinyimagenet", train),
        "train_fine": torch.tensor(train_y, dtype=torch.long),
        "test_images": _decode_jpegs(tree.read(val), "tinyimagenet", val),
        "test_fine": torch.tensor(val_y, dtype=torch.long),
        "wnids": wnids,
        "fine_names": [words.get(w, w).split(",")[0].strip() for w in wnids],
    }


def load_tinyimagenet(root: Path, *, seed=0, val_fraction=0.1, image_size=None, download=False, cache=None,
                      hierarchy: str = "wordnet") -> Dataset:
    """TinyImageNet-200 from ``<root>/tiny-imagenet-200[-subset].zip`` or the extracted folder.

    The official ``val`` set (50 per class) is the test set. Coarse classes come
    from a committed table (``hierarchy.tinyimagenet_coarse``): ``hierarchy="wordnet"``
    (default) the book's 18 WordNet hypernyms, ``"official"`` the official thanos-code's
    map (52 coarse classes used).
    """
    if hierarchy not in hierarchy_module.TINYIMAGENET_HIERARCHIES:  # before any file is read
        raise ValueError(f"hierarchy={hierarchy!r} is not a TinyImageNet coarse map; valid: "
                         f"{', '.join(hierarchy_module.TINYIMAGENET_HIERARCHIES)}")
    if download and not any((root / n).exists() for n in ("tiny-imagenet-200-subset.zip", "tiny-imagenet-200.zip", "tiny-imagenet-200")):
        _download("tinyimagenet", root)
    tree = _Tree(root)
    a = cached("tinyimagenet", [tree.source], lambda: _tinyimagenet_build(tree), cache)
    coarse_of, coarse_names = hierarchy_module.tinyimagenet_coarse(a["wnids"], hierarchy)
    splits = _transfer_splits(a, coarse_of, val_fraction, seed, image_size)
    coarse_text = ("the official thanos-code's coarse ids (tinyimagenet_coarse_official.tsv)" if hierarchy == "official"
                   else "WordNet hypernym classes (tinyimagenet_coarse.tsv)")
    return Dataset(
        name="tinyimagenet", task="transfer", image_shape=tuple(splits["train"].images.shape[1:]),
        fine_names=a["fine_names"], coarse_names=coarse_names,
        mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821), grayscale_aug=True, splits=splits,
        description=f"TinyImageNet-200; coarse = {coarse_text}; test = official val",
    )


# --------------------------------------------------------------------------- streaming datasets


def _read_csv(path: Path, name: str, required: list[list[str]]) -> tuple[list[dict], list[str]]:
    """Rows of a CSV; ``required`` lists alternatives per needed column. Returns rows and the chosen names."""
    if not path.is_file():
        raise _missing(name, path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames or []
    chosen = []
    for options in required:
        hit = next((o for o in options if o in header), None)
        if hit is None:
            raise CorruptDataset(f"{name}: {path} needs a column {' or '.join(options)}; it has {header}")
        chosen.append(hit)
    return rows, chosen


def _streaming_dataset(name, split_rows, root, image_size, *, coarse_names, group_names, description) -> Dataset:
    reader = ImageReader(root, image_size)
    splits = {}
    for split, rows in split_rows.items():
        files = [r[0] for r in rows]
        coarse = torch.tensor([r[1] for r in rows], dtype=torch.long)
        group = torch.tensor([r[2] for r in rows], dtype=torch.long)
        splits[split] = Split(fine=group.clone(), coarse=coarse, group=group, files=files, reader=reader)
    return Dataset(
        name=name, task="robustness", image_shape=(3, image_size, image_size),
        fine_names=list(group_names), coarse_names=list(coarse_names), group_names=list(group_names),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, grayscale_aug=True, splits=splits, description=description,
    )


def load_waterbirds(root: Path, *, seed=0, val_fraction=0.1, image_size=64, download=False, cache=None) -> Dataset:
    """Waterbirds from ``<root>/waterbird_complete95_forest2water2/metadata.csv`` (official splits 0/1/2).

    Columns used: ``img_filename``, ``y`` (0 landbird, 1 waterbird), ``split``
    (0 train, 1 val, 2 test), ``place`` (0 land, 1 water). group = 2 y + place.
    """
    folder = root / "waterbird_complete95_forest2water2"
    if download and not (folder / "metadata.csv").is_file():
        _download("waterbirds", root)
    rows, (fn, y, sp, pl) = _read_csv(folder / "metadata.csv", "waterbirds", [["img_filename"], ["y"], ["split"], ["place"]])
    split_rows = {"train": [], "val": [], "test": []}
    names = {0: "train", 1: "val", 2: "test"}
    try:
        for r in rows:
            t, p = int(r[y]), int(r[pl])
            split_rows[names[int(r[sp])]].append((r[fn], t, 2 * t + p))
    except (ValueError, KeyError) as e:
        raise CorruptDataset(f"waterbirds: bad value in {folder / 'metadata.csv'} ({e})") from e
    return _streaming_dataset(
        "waterbirds", split_rows, folder, image_size, coarse_names=["landbird", "waterbird"],
        group_names=["landbird on land", "landbird on water", "waterbird on land", "waterbird on water"],
        description="Waterbirds (Sagawa et al. 2020); target = bird type, groups = bird x background",
    )


def load_celeba(root: Path, *, seed=0, val_fraction=0.1, image_size=64, download=False, cache=None) -> Dataset:
    """CelebA in the torchvision layout: ``<root>/celeba/{list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/}``.

    target = ``Blond_Hair``; group = 2 Blond_Hair + Male. Official partitions 0/1/2 = train/val/test.
    """
    folder = root / "celeba"
    if download and not (folder / "list_attr_celeba.txt").is_file():
        _download("celeba", root)
    attr_path, part_path = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
    for p in (attr_path, part_path):
        if not p.is_file():
            raise _missing("celeba", p)
    try:
        lines = attr_path.read_text().splitlines()
        header = lines[1].split()
        blond, male = header.index("Blond_Hair"), header.index("Male")
        attrs = {}
        for line in lines[2:]:
            parts = line.split()
            if parts:
                attrs[parts[0]] = (int(parts[1 + blond]) > 0, int(parts[1 + male]) > 0)
        part = dict(line.split() for line in part_path.read_text().splitlines() if line.strip())
    except (IndexError, ValueError) as e:
        raise CorruptDataset(f"celeba: cannot parse {attr_path} / {part_path} ({e})") from e
    split_rows = {"train": [], "val": [], "test": []}
    names = {"0": "train", "1": "val", "2": "test"}
    for fname, (b, m) in attrs.items():
        if fname not in part:
            raise CorruptDataset(f"celeba: {fname} has attributes but no partition in {part_path}")
        split_rows[names[part[fname]]].append((f"img_align_celeba/{fname}", int(b), 2 * int(b) + int(m)))
    return _streaming_dataset(
        "celeba", split_rows, folder, image_size, coarse_names=["not blond", "blond"],
        group_names=["not blond, female", "not blond, male", "blond, female", "blond, male"],
        description="CelebA; target = Blond_Hair, groups = Blond_Hair x Male",
    )


def load_isic(root: Path, *, seed=0, val_fraction=0.1, test_fraction=0.2, image_size=64, download=False, cache=None) -> Dataset:
    """ISIC skin lesions from ``<root>/isic/metadata.csv`` and ``<root>/isic/images/``.

    Expected columns (first matching name is used):

    * ``image`` | ``isic_id`` | ``image_name``: file name under ``images/``
      (``.jpg`` is appended when it has no extension);
    * ``benign_malignant`` (``benign``/``malignant``) | ``target`` (0/1);
    * ``patch`` | ``has_patch`` (0/1: a coloured patch is in the image);
    * optional ``split`` (``train``/``val``/``test``); without it a seeded
      hold-out stratified by group gives val (``val_fraction``) and test
      (``test_fraction``).

    target = malignant; groups: 0 benign with patch, 1 benign without patch, 2 malignant.
    There is no automatic download (the patch labels are not in the ISIC archive):
    ``download=True`` raises :class:`DatasetNotFound` with the manual steps
    (:data:`spreadcon.data.download.ISIC_STEPS`).
    """
    folder = root / "isic"
    if download and not (folder / "metadata.csv").is_file():
        _download("isic", root)
    rows, (im, tg, pa) = _read_csv(
        folder / "metadata.csv", "isic",
        [["image", "isic_id", "image_name"], ["benign_malignant", "target"], ["patch", "has_patch"]],
    )
    records = []
    try:
        for r in rows:
            t = r[tg].strip().lower()
            target = {"benign": 0, "malignant": 1}.get(t, None)
            target = int(t) if target is None else target
            if target not in (0, 1):
                raise ValueError(f"target {t!r}")
            patch = int(float(r[pa]))
            group = 2 if target == 1 else (0 if patch else 1)
            fname = r[im] if os.path.splitext(r[im])[1] else r[im] + ".jpg"
            records.append((f"images/{fname}", target, group, (r.get("split") or "").strip().lower()))
    except (ValueError, KeyError) as e:
        raise CorruptDataset(f"isic: bad value in {folder / 'metadata.csv'} ({e})") from e
    split_rows = {"train": [], "val": [], "test": []}
    if records and all(r[3] in split_rows for r in records):
        for r in records:
            split_rows[r[3]].append(r[:3])
    else:
        groups = torch.tensor([r[2] for r in records], dtype=torch.long)
        rest, test = _holdout(groups, test_fraction, seed)
        tr, va = _holdout(groups[rest], val_fraction / max(1e-12, 1 - test_fraction), seed + 1)
        for name, idx in (("train", rest[tr]), ("val", rest[va]), ("test", test)):
            split_rows[name] = [records[i][:3] for i in idx.tolist()]
    return _streaming_dataset(
        "isic", split_rows, folder, image_size, coarse_names=["benign", "malignant"],
        group_names=["benign with patch", "benign without patch", "malignant"],
        description="ISIC skin lesions; target = malignant, groups = benign+patch / benign / malignant",
    )


# --------------------------------------------------------------------------- folder


def load_folder(root: Path, *, seed=0, val_fraction=0.1, image_size=32, download=False, cache=None, mapping=None) -> Dataset:
    """Your own hierarchy: ``<root>/{train,test}[/val]/<fine class>/<image>`` plus a mapping file.

    ``mapping`` (default ``<root>/hierarchy.tsv``) has lines ``fine<TAB>coarse``
    (see :func:`hierarchy.read_mapping`). The mapping and the folders must
    agree: every ``train/<fine class>/`` is listed, every listed fine class has
    a ``train/`` folder with at least one image (``.jpg .jpeg .png .bmp .webp
    .gif``), and ``test/`` and ``val/`` hold no class that ``train/`` lacks;
    anything else raises :class:`CorruptDataset` naming the file and the fix.
    Images are decoded, resized to ``image_size`` (shorter side, centre crop)
    and held in memory (no cache).
    """
    mpath = Path(mapping) if mapping is not None else root / "hierarchy.tsv"
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DatasetNotFound(f"folder: expected an ImageFolder tree {root}/train/<class>/ and {root}/test/<class>/")
    if not mpath.is_file():
        raise DatasetNotFound(f"folder: expected a mapping file {mpath} with lines 'fine<TAB>coarse'")
    fmap = hierarchy.read_mapping(mpath)
    fine_names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not fine_names:
        raise CorruptDataset(f"folder: {root / 'train'} has no class folders; put each fine class's images in train/<class>/")
    unmapped = [f for f in fine_names if f not in fmap]
    if unmapped:
        raise CorruptDataset(
            f"folder: {mpath} does not list the fine class(es) {', '.join(map(repr, unmapped[:5]))} "
            f"(folders in {root / 'train'}); add a line '{unmapped[0]}<TAB><coarse class>' for each"
        )
    folderless = [f for f in fmap if f not in fine_names]
    if folderless:
        raise CorruptDataset(
            f"folder: {mpath} names the fine class {folderless[0]!r}, but {root / 'train' / folderless[0]} does not "
            f"exist; add that folder with its images, or remove the line"
        )
    for split in ("test", "val"):
        where = root / split
        stray = sorted(p.name for p in where.iterdir() if p.is_dir() and p.name not in fmap) if where.is_dir() else []
        if stray:
            raise CorruptDataset(
                f"folder: {root / split / stray[0]} is not a class of {root / 'train'} or {mpath}; "
                "rename it to a training class or add it to both"
            )
    coarse_names = sorted({fmap[f] for f in fine_names})
    coarse_of = [coarse_names.index(fmap[f]) for f in fine_names]
    reader = ImageReader(root, image_size)
    exts = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")

    def read(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        files, labels = [], []
        for c, name in enumerate(fine_names):
            folder = root / split / name
            mine = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts) if folder.is_dir() else []
            files += [str(p.relative_to(root)) for p in mine]
            labels += [c] * len(mine)
        images = torch.stack([reader(f) for f in files]) if files else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
        return images, torch.tensor(labels, dtype=torch.long)

    (tr_x, tr_y), (te_x, te_y) = read("train"), read("test")
    empty = [name for c, name in enumerate(fine_names) if not (tr_y == c).any()]
    if empty:
        raise CorruptDataset(
            f"folder: {root / 'train' / empty[0]} has no images ({' '.join(exts)})"
            + ("" if len(empty) == 1 else ", nor does 1 other class folder" if len(empty) == 2
               else f", nor do {len(empty) - 1} other class folders")
            + f"; add images, or remove the folder and its line in {mpath}"
        )
    if not len(te_y):
        raise CorruptDataset(f"folder: {root / 'test'} holds no images ({' '.join(exts)}) in its class folders; add some")
    a = {"train_images": tr_x, "train_fine": tr_y, "test_images": te_x, "test_fine": te_y}
    has_val = (root / "val").is_dir()
    splits = _transfer_splits(a, coarse_of, 0.0 if has_val else val_fraction, seed)
    if has_val:
        va_x, va_y = read("val")
        splits["val"] = Split(fine=va_y, coarse=torch.tensor(coarse_of, dtype=torch.long)[va_y], images=va_x)
    mean, std = _dataset_stats(splits["train"].images)
    return Dataset(
        name="folder", task="transfer", image_shape=(3, image_size, image_size),
        fine_names=fine_names, coarse_names=coarse_names, mean=mean, std=std, grayscale_aug=True,
        splits=splits, description=f"ImageFolder tree {root} with mapping {mpath}",
    )
