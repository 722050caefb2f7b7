"""The real loaders on tiny files fabricated in each dataset's official on-disk format.

CIFAR-100(-U), Waterbirds, CelebA and ISIC are not available offline, so each
test writes a few images plus the metadata files exactly as the official
release lays them out, then reads them through `spreadcon.data.load`.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spreadcon.data import CorruptDataset, DatasetNotFound, Split, batches, hierarchy, load
from spreadcon.data import cache as C
from spreadcon.data import datasets as D

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def _solid(path: Path, rgb, size=(40, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(rgb)).save(path, format=fmt)


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


# --------------------------------------------------------------------------- CIFAR-100


def write_cifar100(root: Path, per_class: dict[int, int], n_test_per_class: int = 2) -> dict:
    """Official `cifar-100-python/{train,test,meta}` pickles (latin1 str keys, as torchvision reads them)."""
    coarse_of, coarse_names = hierarchy.cifar100_coarse()
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, counts in (("train", per_class), ("test", {c: n_test_per_class for c in per_class})):
        fine = [c for c, k in counts.items() for _ in range(k)]
        data = _cifar_rows(len(fine), seed=len(split))
        blob = {
            "filenames": [f"img_{i}.png" for i in range(len(fine))],
            "batch_label": f"{split} batch",
            "fine_labels": fine,
            "coarse_labels": [coarse_of[f] for f in fine],
            "data": data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(blob, f)
        out[split] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": hierarchy.CIFAR100_FINE, "coarse_label_names": coarse_names}, f)
    return out


def test_cifar100_reads_official_pickles(tmp_path):
    written = write_cifar100(tmp_path, {c: 10 for c in range(100)})
    ds = load("cifar100", tmp_path, cache=tmp_path / "cache")
    assert (ds.n_fine, ds.n_coarse, ds.image_shape) == (100, 20, (3, 32, 32))
    tr, va, te = (ds.splits[s] for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (900, 100, 200)
    assert torch.bincount(va.fine, minlength=100).tolist() == [1] * 100
    coarse_of = torch.tensor(hierarchy.cifar100_coarse()[0])
    assert torch.equal(tr.coarse, coarse_of[tr.fine])
    # test keeps the official order; the pixel layout is (3, 32, 32) from the 3072-byte rows
    data, fine = written["test"]
    assert torch.equal(te.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert te.fine.tolist() == fine
    assert ds.coarse_names[0] == "aquatic_mammals" and ds.fine_names[0] == "apple"


def test_cifar100u_keeps_500_250_100_50_50(tmp_path):
    # superclass 0 (aquatic_mammals) gets 500 images per class; one class of superclass 1 gets 30
    coarse_of, _ = hierarchy.cifar100_coarse()
    members0 = [f for f in range(100) if coarse_of[f] == 0]
    fish = [f for f in range(100) if coarse_of[f] == 1]
    write_cifar100(tmp_path, {**{f: 500 for f in members0}, fish[0]: 30})
    drawn = {}
    for seed in (0, 1):
        ds = load("cifar100u", tmp_path, seed=seed, cache=tmp_path / "cache")
        tr, va = ds.splits["train"], ds.splits["val"]
        total = torch.bincount(torch.cat([tr.fine, va.fine]), minlength=100)
        assert sorted(total[members0].tolist(), reverse=True) == [500, 250, 100, 50, 50]
        assert torch.bincount(va.fine, minlength=100)[members0].sum() == 95  # 10% of each class
        assert total[fish[0]] <= 30  # never more than the class has
        drawn[seed] = tr.images
        again = load("cifar100u", tmp_path, seed=seed, cache=tmp_path / "cache")
        assert torch.equal(again.splits["train"].images, tr.images)  # seeded: same draw
    assert not torch.equal(drawn[0], drawn[1])  # another seed draws other images
    assert len(ds.splits["test"]) == 2 * 6  # the official test set, untouched


# --------------------------------------------------------------------------- CIFAR-10 / MNIST / TinyImageNet formats


def test_cifar10_official_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [(i + j) % 10 for j in range(20)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": _cifar_rows(20, i), "labels": labels, "batch_label": name}, f)
    ds = load("cifar10", tmp_path, cache=tmp_path / "cache")
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 100 and len(ds.splits["test"]) == 20
    assert ds.coarse_names == ["vehicle", "animal"]


def write_cifar10_zip(root: Path, n_train: int = 3, n_test: int = 1) -> None:
    """``cifar10-jpeg.zip``: ``{train,test}/<class>/NNNN.jpg``, each image one colour that encodes its class."""
    with zipfile.ZipFile(root / "cifar10-jpeg.zip", "w") as z:
        for split, k in (("train", n_train), ("test", n_test)):
            for c, cls in enumerate(hierarchy.CIFAR10_FINE):
                for n in range(k):
                    buf = io.BytesIO()
                    Image.new("RGB", (32, 32), (c * 20, 255 - c * 20, 128)).save(buf, format="JPEG", quality=95)
                    z.writestr(f"{split}/{cls}/{n:04d}.jpg", buf.getvalue())


def test_cifar10_jpeg_zip_layout(tmp_path):
    write_cifar10_zip(tmp_path)
    ds = load("cifar10", tmp_path, cache=tmp_path / "cache", val_fraction=0.0)
    tr, te = ds.splits["train"], ds.splits["test"]
    assert torch.bincount(tr.fine).tolist() == [3] * 10 and torch.bincount(te.fine).tolist() == [1] * 10
    # label c really is the folder of class c (colour encodes the class)
    red = te.images[:, 0].float().mean((1, 2))
    assert torch.allclose(red, torch.arange(10).float() * 20, atol=3)


def _idx(path: Path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``MNIST/raw/*-ubyte.gz``: 50 random training images (labels 0-9 in turn, or ``labels``), the first 20 as test."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tr_x, tr_y = rng.integers(0, 256, (50, 28, 28)), np.arange(50) % 10 if labels is None else labels
    _idx(raw / "train-images-idx3-ubyte.gz", tr_x)
    _idx(raw / "train-labels-idx1-ubyte.gz", tr_y)
    _idx(raw / "t10k-images-idx3-ubyte.gz", tr_x[:20])
    _idx(raw / "t10k-labels-idx1-ubyte.gz", tr_y[:20])
    return tr_x, tr_y


def test_mnist_gzipped_idx(tmp_path):
    tr_x, tr_y = write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    ds = load("mnist", tmp_path)
    te = ds.splits["test"]
    assert te.images.shape == (20, 1, 28, 28)
    assert torch.equal(te.images[:, 0], torch.from_numpy(tr_x[:20].astype(np.uint8)))
    assert te.coarse.tolist() == [int(d >= 5) for d in tr_y[:20]]
    assert len(ds.splits["val"]) == 10  # round(0.1 * 5) = 1 per class (half up)
    # a truncated file is reported, not half-read
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 20, 28, 28) + b"\0" * 100)
    with pytest.raises(CorruptDataset, match="truncated"):
        load("mnist", tmp_path)


def write_tinyimagenet(root: Path, wnids: list[str], n_train=5, n_val=3) -> None:
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as z:
        pre = "tiny-imagenet-200/"
        z.writestr(pre + "wnids.txt", "\n".join(wnids) + "\n")
        z.writestr(pre + "words.txt", "".join(f"{w}\tthing {w}, other name\n" for w in wnids))
        rows = []
        for c, w in enumerate(wnids):
            for k in range(n_train):
                buf = io.BytesIO()
                mode = "L" if k == 0 else "RGB"  # some TinyImageNet JPEGs are greyscale
                Image.new(mode, (64, 64), 100 if mode == "L" else (c * 50, 0, 0)).save(buf, format="JPEG")
                z.writestr(f"{pre}train/{w}/images/{w}_{k}.JPEG", buf.getvalue())
            z.writestr(f"{pre}train/{w}/{w}_boxes.txt", "")
            for k in range(n_val):
                n = c * n_val + k
                buf = io.BytesIO()
                Image.new("RGB", (64, 64), (c * 50, 0, 0)).save(buf, format="JPEG")
                z.writestr(f"{pre}val/images/val_{n}.JPEG", buf.getvalue())
                rows.append(f"val_{n}.JPEG\t{w}\t0\t0\t63\t63")
        z.writestr(pre + "val/val_annotations.txt", "\n".join(rows) + "\n")


def test_tinyimagenet_zip_layout_and_greyscale(tmp_path):
    rows = hierarchy.tinyimagenet_table()
    wnids = [rows[0][0], rows[1][0], rows[2][0]]
    write_tinyimagenet(tmp_path, wnids, n_train=10)
    ds = load("tinyimagenet", tmp_path, cache=tmp_path / "cache")
    tr, va, te = ds.splits["train"], ds.splits["val"], ds.splits["test"]
    assert (len(tr), len(va), len(te)) == (27, 3, 9)
    assert ds.image_shape == (3, 64, 64) and ds.fine_names[0] == f"thing {wnids[0]}"
    full, names = hierarchy.tinyimagenet_coarse()
    assert te.coarse.tolist() == [full[c] for c in te.fine.tolist()]
    assert ds.coarse_names == names
    grey = torch.cat([tr.images, va.images])[(torch.cat([tr.images, va.images]).float().std(1) < 1).flatten(1).all(1)]
    assert len(grey) >= 3  # the greyscale JPEGs came back as RGB with equal channels


def test_corrupt_zip_is_reported(tmp_path):
    (tmp_path / "cifar10-jpeg.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(CorruptDataset, match="not a readable zip"):
        load("cifar10", tmp_path, cache=tmp_path / "cache")


def test_corrupt_jpeg_inside_zip_is_reported(tmp_path):
    with zipfile.ZipFile(tmp_path / "cifar10-jpeg.zip", "w") as z:
        for cls in hierarchy.CIFAR10_FINE:
            z.writestr(f"train/{cls}/0000.jpg", b"\xff\xd8 broken")
            z.writestr(f"test/{cls}/0000.jpg", b"\xff\xd8 broken")
    with pytest.raises(CorruptDataset, match="cannot decode"):
        load("cifar10", tmp_path, cache=tmp_path / "cache")


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "cifar100u", "tinyimagenet", "waterbirds", "celeba", "isic"])
def test_missing_dataset_names_path_and_source(tmp_path, name):
    with pytest.raises(DatasetNotFound) as info:
        load(name, tmp_path / "empty", cache=tmp_path / "cache")
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "empty") in msg
    assert "http" in msg or "torchvision" in msg


def test_unknown_name():
    with pytest.raises(ValueError, match="name='imagenet'"):
        load("imagenet")


# --------------------------------------------------------------------------- streaming datasets


def write_waterbirds(root: Path) -> list[tuple]:
    folder = root / "waterbird_complete95_forest2water2"
    rows = []
    rng = np.random.default_rng(0)
    for i in range(24):
        y, place, split = i % 2, (i // 2) % 2, [0, 0, 1, 2][i % 4] if i < 20 else 0
        fname = f"{['001.Black_footed_Albatross', '045.Northern_Fulmar'][y]}/img_{i:03d}.jpg"
        colour = rng.integers(0, 256, 3)
        _solid(folder / fname, colour, size=(48, 36))
        rows.append((i + 1, fname, y, split, place, f"forest/f_{i}.jpg", colour))
    with open(folder / "metadata.csv", "w") as f:
        f.write("img_id,img_filename,y,split,place,place_filename\n")
        for r in rows:
            f.write(",".join(str(v) for v in r[:6]) + "\n")
    return rows


def test_waterbirds_metadata_and_streaming(tmp_path):
    rows = write_waterbirds(tmp_path)
    ds = load("waterbirds", tmp_path, image_size=16)
    assert ds.task == "robustness" and ds.n_groups == 4 and ds.image_shape == (3, 16, 16)
    want = Counter(s for _, _, _, s, *_ in rows)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [want[0], want[1], want[2]]
    tr = ds.splits["train"]
    assert tr.images is None and tr.streaming
    train_rows = [r for r in rows if r[3] == 0]
    assert tr.group.tolist() == [2 * r[2] + r[4] for r in train_rows]
    assert tr.coarse.tolist() == [r[2] for r in train_rows]
    batch = next(batches(tr, 5, shuffle=False))
    assert batch["images"].shape == (5, 3, 16, 16) and batch["images"].dtype == torch.uint8
    assert set(batch) == {"images", "fine", "coarse", "group", "index"}
    colours = torch.tensor(np.stack([r[6] for r in train_rows[:5]])).float()
    assert torch.allclose(batch["images"].float().mean((2, 3)), colours, atol=6)  # JPEG error only


def test_celeba_torchvision_layout(tmp_path):
    folder = tmp_path / "celeba"
    rng = np.random.default_rng(1)
    names = [f"{i:06d}.jpg" for i in range(1, 13)]
    attrs = rng.choice([-1, 1], size=(12, 40))
    blond, male = CELEBA_ATTRS.index("Blond_Hair"), CELEBA_ATTRS.index("Male")
    for n in names:
        _solid(folder / "img_align_celeba" / n, (200, 180, 160), size=(178, 218))
    lines = ["12", " ".join(CELEBA_ATTRS)] + [n + " " + " ".join(f"{v:2d}" for v in a) for n, a in zip(names, attrs)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = [0] * 6 + [1] * 3 + [2] * 3
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    ds = load("celeba", tmp_path, image_size=24)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    te = ds.splits["test"]
    b, m = (attrs[9:, blond] > 0).astype(int), (attrs[9:, male] > 0).astype(int)
    assert te.coarse.tolist() == b.tolist() and te.group.tolist() == (2 * b + m).tolist()
    batch = next(batches(te, 3, shuffle=False))
    assert batch["images"].shape == (3, 3, 24, 24)


#: The (Blond_Hair, Male) group sizes of the official CelebA release, per official partition, as the
#: robustness literature reports them (Sagawa et al. 2020, Table 4 / appendix; e.g. 1,387 blond men in train).
CELEBA_GROUP_COUNTS = {
    "train": {"not blond, female": 71629, "not blond, male": 66874, "blond, female": 22880, "blond, male": 1387},
    "val": {"not blond, female": 8535, "not blond, male": 8276, "blond, female": 2874, "blond, male": 182},
    "test": {"not blond, female": 9767, "not blond, male": 7535, "blond, female": 2480, "blond, male": 180},
}


def _group_counts(ds) -> dict[str, dict[str, int]]:
    return {s: {ds.group_names[g]: n for g, n in sorted(Counter(ds.splits[s].group.tolist()).items())}
            for s in ("train", "val", "test")}


def test_celeba_familiar_group_counts_at_official_size(tmp_path):
    """An attribute file of the official size (202,599 rows, 40 attributes, shuffled rows, the other 38
    attributes random) whose Blond_Hair x Male cells hold the familiar counts: the loader must give them back."""
    rng = np.random.default_rng(0)
    blond, male = CELEBA_ATTRS.index("Blond_Hair"), CELEBA_ATTRS.index("Male")
    part_of = {"train": 0, "val": 1, "test": 2}
    cells = []  # (partition, blond, male) per image
    for split, counts in CELEBA_GROUP_COUNTS.items():
        for g, name in enumerate(["not blond, female", "not blond, male", "blond, female", "blond, male"]):
            cells += [(part_of[split], g // 2, g % 2)] * counts[name]
    assert len(cells) == 202599
    cells = [cells[i] for i in rng.permutation(len(cells))]
    attrs = rng.choice(np.array([-1, 1]), size=(len(cells), 40))
    folder = tmp_path / "celeba"
    folder.mkdir()
    names = [f"{i + 1:06d}.jpg" for i in range(len(cells))]
    lines = [str(len(cells)), " ".join(CELEBA_ATTRS)]
    for n, a, (_, b, m) in zip(names, attrs, cells):
        a[blond], a[male] = 2 * b - 1, 2 * m - 1
        lines.append(n + " " + " ".join(f"{v:2d}" for v in a))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, (p, _, _) in zip(names, cells)))
    ds = load("celeba", tmp_path, image_size=64)
    assert _group_counts(ds) == CELEBA_GROUP_COUNTS
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [162770, 19867, 19962]


def test_celeba_official_attribute_file_has_familiar_counts():
    """On the real release, when it is present (``SPREADCON_DATA/celeba``): the same counts."""
    import os
    root = Path(os.environ.get("SPREADCON_DATA", "../shared/data"))
    if not (root / "celeba" / "list_attr_celeba.txt").is_file():
        pytest.skip(f"the official CelebA attribute file is not under {root}/celeba (online only)")
    assert _group_counts(load("celeba", root, image_size=64)) == CELEBA_GROUP_COUNTS


def write_isic(root: Path, with_split: bool) -> list[tuple]:
    folder = root / "isic"
    rows = []
    for i in range(60):
        target = "malignant" if i % 3 == 0 else "benign"
        patch = int(target == "benign" and i % 2 == 0)
        split = ["train", "val", "test"][i % 3] if with_split else ""
        _solid(folder / "images" / f"ISIC_{i:07d}.jpg", (i * 4, 50, 50), size=(30, 30))
        rows.append((f"ISIC_{i:07d}", target, patch, split))
    header = "image,benign_malignant,patch" + (",split" if with_split else "")
    body = [",".join(str(v) for v in (r if with_split else r[:3])) for r in rows]
    (folder / "metadata.csv").write_text("\n".join([header] + body) + "\n")
    return rows


def test_isic_metadata_groups_and_seeded_split(tmp_path):
    rows = write_isic(tmp_path, with_split=False)
    ds = load("isic", tmp_path, image_size=8)
    assert ds.group_names == ["benign with patch", "benign without patch", "malignant"]
    n = {s: len(ds.splits[s]) for s in ds.splits}
    assert sum(n.values()) == 60 and n["test"] == 12 and n["val"] == 6
    groups = Counter(2 if t == "malignant" else (0 if p else 1) for _, t, p, _ in rows)
    got = Counter(torch.cat([ds.splits[s].group for s in ds.splits]).tolist())
    assert got == groups
    for s in ds.splits.values():
        assert torch.equal(s.coarse, (s.group == 2).long())
    again = load("isic", tmp_path, image_size=8)
    assert again.splits["test"].files == ds.splits["test"].files
    other = load("isic", tmp_path, image_size=8, seed=3)
    assert other.splits["test"].files != ds.splits["test"].files


def test_isic_split_column_and_bad_columns(tmp_path):
    write_isic(tmp_path, with_split=True)
    ds = load("isic", tmp_path, image_size=8)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [20, 20, 20]
    (tmp_path / "isic" / "metadata.csv").write_text("name,label\nx,1\n")
    with pytest.raises(CorruptDataset, match="image or isic_id"):
        load("isic", tmp_path)


def write_folder(root: Path, classes=("cat", "dog", "oak"), n_train: int = 10, n_test: int = 2) -> None:
    """A ``folder`` tree ``{train,test}/<class>/<n>.png`` plus ``hierarchy.tsv`` (cat, dog -> animal; oak -> plant)."""
    for split, k in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(classes):
            for n in range(k):
                _solid(root / split / cls / f"{n}.png", (c * 100, 0, 0), size=(20, 24))
    coarse = {"cat": "animal", "dog": "animal", "oak": "plant"}
    (root / "hierarchy.tsv").write_text("".join(f"{c}\t{coarse.get(c, 'other')}\n" for c in classes))


def test_folder_with_user_mapping(tmp_path):
    write_folder(tmp_path)
    ds = load("folder", tmp_path, image_size=12)
    assert ds.fine_names == ["cat", "dog", "oak"] and ds.coarse_names == ["animal", "plant"]
    assert ds.image_shape == (3, 12, 12) and ds.splits["train"].images.shape[1:] == (3, 12, 12)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [27, 3, 6]
    assert ds.splits["test"].coarse.tolist() == [0, 0, 0, 0, 1, 1]
    (tmp_path / "hierarchy.tsv").write_text("cat\tanimal\n")
    with pytest.raises(ValueError, match="dog"):
        load("folder", tmp_path)


# --------------------------------------------------------------------------- batches, subset, caches


def _toy_split(n=10) -> Split:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    fine = torch.arange(n) % 3
    return Split(fine=fine, coarse=fine % 2, images=images)


def test_batches_cover_each_index_once_and_are_seeded():
    split = _toy_split(10)
    out = list(batches(split, 4, generator=torch.Generator().manual_seed(0)))
    assert [len(b["index"]) for b in out] == [4, 4, 2]
    idx = torch.cat([b["index"] for b in out])
    assert sorted(idx.tolist()) == list(range(10))
    for b in out:
        assert torch.equal(b["images"][:, 0, 0, 0].long(), b["index"])  # images travel with their labels
        assert torch.equal(b["fine"], b["index"] % 3)
        assert "group" not in b
    again = torch.cat([b["index"] for b in batches(split, 4, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(idx, again)
    assert [len(b["index"]) for b in batches(split, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(split, 0))


def test_subset():
    split = _toy_split(10)
    sub = split.subset([7, 2])
    assert sub.images[:, 0, 0, 0].tolist() == [7, 2] and sub.fine.tolist() == [1, 2]
    assert len(split.subset(split.fine == 0)) == 4
    with pytest.raises(ValueError, match="out of range"):
        split.subset([10])


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c" / "x.pt"
    C.save_atomic({"a": torch.arange(3)}, path)
    assert torch.equal(C.load_cache(path)["a"], torch.arange(3))

    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"half a cache")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        C.save_atomic({"a": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(C.load_cache(path)["a"], torch.arange(3))  # the old cache is intact
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]  # no temp file left behind
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(torch, "save", crash)
        C.save_atomic({"a": torch.zeros(3)}, tmp_path / "new.pt")
    assert not (tmp_path / "new.pt").exists()


def test_damaged_cache_is_rebuilt(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.ones(2)}

    first = C.cached("toy", [src], build, tmp_path / "cache")
    second = C.cached("toy", [src], build, tmp_path / "cache")
    assert len(calls) == 1 and torch.equal(first["x"], second["x"])
    (cache_file,) = (tmp_path / "cache").glob("*.pt")
    cache_file.write_bytes(b"garbage")
    C.cached("toy", [src], build, tmp_path / "cache")
    assert len(calls) == 2


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SPREADCON_DATA", str(tmp_path))
    assert D.default_root() == tmp_path
    monkeypatch.delenv("SPREADCON_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert C.cache_dir() == Path.home() / ".cache" / "spreadcon" / "decoded"  # never the data root
    monkeypatch.delenv("SPREADCON_DATA")
    assert D.default_root() == Path.home() / ".cache" / "spreadcon"
