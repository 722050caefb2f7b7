"""The real offline copies under the data root (MNIST, CIFAR-10 JPEG zip, TinyImageNet subset).

These need the data folder (the `data_root` fixture skips without it). The
first load decodes the archives (CIFAR-10: 60,000 JPEGs) and writes a cache
under `spreadcon.data.cache_dir()` (never the data root); later runs read the
cache in about a second.
Each dataset is loaded once per module.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from spreadcon.data import EXIT_MISSING_DATA, hierarchy, load, proxy
from spreadcon.data.cli import main as data_cli

pytestmark = pytest.mark.data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(data_root):
    return load("mnist", data_root)


@pytest.fixture(scope="module")
def cifar10(data_root):
    return load("cifar10", data_root)


@pytest.fixture(scope="module")
def tinyimagenet(data_root):
    return load("tinyimagenet", data_root)


def _fine_counts(ds, *splits):
    return torch.bincount(torch.cat([ds.splits[s].fine for s in splits]), minlength=ds.n_fine).tolist()


def _coarse_from_fine(fine_counts, coarse_of, n_coarse):
    out = [0] * n_coarse
    for f, n in enumerate(fine_counts):
        out[coarse_of[f]] += n
    return out


def test_mnist_counts(mnist):
    assert len(mnist.splits["train"]) + len(mnist.splits["val"]) == 60000
    assert len(mnist.splits["test"]) == 10000
    assert _fine_counts(mnist, "train", "val") == MNIST_TRAIN_COUNTS
    assert _fine_counts(mnist, "test") == MNIST_TEST_COUNTS
    assert _fine_counts(mnist, "val") == [int(0.1 * n + 0.5) for n in MNIST_TRAIN_COUNTS]
    coarse_of, _ = hierarchy.mnist_coarse()
    for s in ("train", "val", "test"):
        split = mnist.splits[s]
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert torch.bincount(split.coarse, minlength=2).tolist() == _coarse_from_fine(_fine_counts(mnist, s), coarse_of, 2)
    # the pixels are MNIST's: its published mean and std
    x = torch.cat([mnist.splits["train"].images, mnist.splits["val"].images]).float() / 255
    assert abs(x.mean().item() - 0.1307) < 1e-3 and abs(x.std().item() - 0.3081) < 1e-3


def test_mnist_validation_is_seeded(mnist, data_root):
    other = load("mnist", data_root, seed=1)
    assert not torch.equal(other.splits["val"].images, mnist.splits["val"].images)
    same = load("mnist", data_root, seed=0)
    assert torch.equal(same.splits["val"].images, mnist.splits["val"].images)


def test_cifar10_counts(cifar10):
    assert _fine_counts(cifar10, "train", "val") == [5000] * 10
    assert _fine_counts(cifar10, "test") == [1000] * 10
    assert cifar10.image_shape == (3, 32, 32)
    coarse_of, _ = hierarchy.cifar10_coarse()
    assert torch.bincount(cifar10.splits["test"].coarse).tolist() == [4000, 6000]
    for s in ("train", "val", "test"):
        split = cifar10.splits[s]
        assert torch.equal(split.coarse, torch.tensor(coarse_of)[split.fine])
    # real photographs: per-channel means near CIFAR-10's (0.491, 0.482, 0.447)
    mean = cifar10.splits["test"].images.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.01)


def test_tinyimagenet_subset_counts(tinyimagenet):
    assert tinyimagenet.n_fine == 200 and tinyimagenet.image_shape == (3, 64, 64)
    assert _fine_counts(tinyimagenet, "train", "val") == [100] * 200
    assert _fine_counts(tinyimagenet, "val") == [10] * 200
    assert _fine_counts(tinyimagenet, "test") == [50] * 200
    coarse_of, names = hierarchy.tinyimagenet_coarse()
    assert tinyimagenet.coarse_names == names
    test = tinyimagenet.splits["test"]
    want = _coarse_from_fine([50] * 200, coarse_of, len(names))
    assert torch.bincount(test.coarse, minlength=len(names)).tolist() == want
    assert tinyimagenet.fine_names[0] == "Egyptian cat"  # words.txt name of wnids.txt's first id


def test_mnist_cifar_proxy(data_root):
    ds = load("mnist-cifar", data_root)
    assert ds.proxy and "PROXY" in ds.description and ds.task == "robustness"
    assert ds.image_shape == (3, 32, 32) and ds.n_groups == 4
    for s, p in (("train", 0.95), ("val", 0.5), ("test", 0.5)):
        split = ds.splits[s]
        background = split.group % 2
        agree = (background == split.coarse).float().mean().item()
        n = len(split)
        assert abs(agree - p) < 4 * (p * (1 - p) / n) ** 0.5, (s, agree)
        assert torch.equal(split.group // 2, split.coarse)
        assert torch.equal(split.coarse, (split.fine >= 5).long())
    # the digit is painted on: the stroke centre is brighter than the border on average
    x = ds.splits["test"].images.float()
    assert x[:, :, 12:20, 12:20].mean() > x[:, :, :4, :].mean() + 20


def test_cifar_patch_proxy(data_root):
    ds = load("cifar-patch", data_root)
    assert ds.proxy and "PROXY" in ds.description and ds.task == "robustness"
    assert ds.image_shape == (3, 32, 32) and ds.n_groups == 4 and ds.coarse_names == ["vehicle", "animal"]
    colour = torch.tensor(proxy.PATCH_COLOUR, dtype=torch.uint8).view(1, 3, 1, 1)
    k = proxy.PATCH_SIZE
    for s, p in (("train", 0.95), ("val", 0.5), ("test", 0.5)):
        split = ds.splits[s]
        patch = split.group % 2
        agree = (patch == split.coarse).float().mean().item()
        assert abs(agree - p) < 4 * (p * (1 - p) / len(split)) ** 0.5, (s, agree)
        assert torch.equal(split.group // 2, split.coarse)
        # the patch is there exactly when the group says so: a k x k block of its colour
        is_colour = (split.images[:500] == colour).all(1).float().unsqueeze(1)
        has_block = torch.nn.functional.avg_pool2d(is_colour, k, stride=1).amax((1, 2, 3)) == 1
        assert torch.equal(has_block, patch[:500].bool()), s
    # the images underneath are CIFAR-10's own
    cifar = load("cifar10", data_root).splits["test"]
    test = ds.splits["test"]
    assert torch.equal(test.fine, cifar.fine)
    plain = test.group % 2 == 0
    assert torch.equal(test.images[plain], cifar.images[plain])


def test_proxy_pieces_by_hand():
    d = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    d[:, 0, 0, 0] = 255
    bg = torch.tensor([0, 100, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 32, 32).contiguous()
    full, half = proxy.composite(d, bg, 1.0), proxy.composite(d, bg, 0.5)
    assert full[0, :, 2, 2].tolist() == [255, 255, 255] and full[0, :, 0, 0].tolist() == [0, 100, 255]
    assert half[0, :, 0, 0].tolist() == [64, 114, 192]  # 128 + 0.5 (bg - 128), rounded half to even
    with pytest.raises(ValueError, match="contrast"):
        proxy.composite(d, bg, 1.5)
    imgs = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    out = proxy.paint_patches(imgs, torch.tensor([True, False, True]), torch.Generator().manual_seed(0), size=3)
    painted = (out == torch.tensor(proxy.PATCH_COLOUR, dtype=torch.uint8).view(1, 3, 1, 1)).all(1)
    assert painted.sum((1, 2)).tolist() == [9, 0, 9] and imgs.sum() == 0  # the input is not changed


def test_cli_summary_mnist(data_root, capsys):
    assert data_cli(["summary", "mnist", "--root", str(data_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object: json.loads refuses anything after it
    assert out["name"] == "mnist" and (out["n_fine"], out["n_coarse"]) == (10, 2)
    assert set(out["splits"]) == {"train", "val", "test"}
    test = out["splits"]["test"]
    assert test["n"] == 10000 and test["image_shape"] == [1, 28, 28]
    assert test["fine_counts"] == MNIST_TEST_COUNTS
    assert test["coarse_counts"] == [sum(MNIST_TEST_COUNTS[:5]), sum(MNIST_TEST_COUNTS[5:])]
    # without --json: a table for people, one column per split, the same numbers
    assert data_cli(["summary", "mnist", "--root", str(data_root)]) == 0
    table = capsys.readouterr().out
    header, *body = table.splitlines()[3:]
    assert header.split() == ["train", "val", "test"]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in body)}
    assert rows["images"] == [str(out["splits"][s]["n"]) for s in ("train", "val", "test")]
    assert rows["coarse digit<5"][2] == str(sum(MNIST_TEST_COUNTS[:5]))


def test_cli_missing_dataset_is_one_line(tmp_path, capsys):
    assert data_cli(["summary", "cifar100", "--root", str(tmp_path)]) == EXIT_MISSING_DATA == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "cifar-100-python" in captured.err
    assert data_cli(["summary", "nope", "--root", str(tmp_path)]) == 2
