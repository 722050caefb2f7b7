"""Batched two-view augmentation against per-image torchvision.

Deterministic pieces (crop-and-resize, each colour op, the per-image op order,
grayscale, normalisation) must equal torchvision's functional transforms.
The random pipeline as a whole must match torchvision's per-image pipeline in
distribution: two-sample KS tests on per-view statistics, with fixed seeds so
the test is deterministic. The same test rejects a mis-specified pipeline,
which shows it has the power to fail.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from spreadcon.data import augment as A
from spreadcon.data.augment import TwoViewAugment

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread is faster, and far faster on a shared, oversubscribed CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n=12, size=(24, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g)


def test_resized_crop_matches_torchvision():
    x = _images()
    g = torch.Generator().manual_seed(1)
    boxes = A.sample_crop_boxes(len(x), 24, 32, generator=g)
    flip = torch.rand(len(x), generator=g) < 0.5
    for size in [(24, 32), (16, 16), (40, 28)]:
        out = A.resized_crop(x, boxes, size, flip)
        ref = []
        for i in range(len(x)):
            y = TF.resized_crop(x[i], *boxes[i].tolist(), list(size), antialias=False)
            ref.append(TF.hflip(y) if flip[i] else y)
        assert torch.allclose(out, torch.stack(ref), atol=1e-5), size


@pytest.mark.parametrize(
    "ours,theirs,lo,hi",
    [
        (A.adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
        (A.adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
        (A.adjust_saturation, TF.adjust_saturation, 0.6, 1.4),
        (A.adjust_hue, TF.adjust_hue, -0.1, 0.1),
        (A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_match_torchvision(ours, theirs, lo, hi):
    x = _images(16)
    x[0] = 0.5  # grey: hue undefined
    x[1, 1] = x[1, 0]  # ties between channels
    x[2] = 0.0
    f = lo + (hi - lo) * torch.rand(16, generator=torch.Generator().manual_seed(2))
    ref = torch.stack([theirs(x[i], float(f[i])) for i in range(16)])
    assert torch.allclose(ours(x, f), ref, atol=1e-5)


@pytest.mark.parametrize("sync_free", [False, True])
def test_colour_jitter_uses_each_images_own_order(sync_free):
    x = _images(40)
    g = torch.Generator().manual_seed(3)
    factors = torch.stack([0.6 + 0.8 * torch.rand(40, generator=g) for _ in range(3)] + [0.2 * torch.rand(40, generator=g) - 0.1], 1)
    order = torch.rand(40, 4, generator=g).argsort(1)
    apply = torch.rand(40, generator=g) < 0.8
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    ref = []
    for i in range(40):
        y = x[i]
        if apply[i]:
            for op in order[i].tolist():
                y = ops[op](y, float(factors[i, op]))
        ref.append(y)
    out = A.color_jitter(x, factors, order, apply, sync_free=sync_free)
    assert torch.allclose(out, torch.stack(ref), atol=1e-5)
    assert torch.equal(out[~apply], x[~apply])


def test_grayscale_and_normalize():
    x = _images(4)
    assert torch.allclose(A.rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)
    aug = TwoViewAugment((24, 32), MEAN, STD)
    xu = (x * 255).round().to(torch.uint8)
    ref = TF.normalize(xu.float() / 255, MEAN, STD)
    assert torch.allclose(aug.normalize(xu), ref, atol=1e-5)
    assert aug.normalize(xu).dtype == torch.float32


def test_crop_boxes_match_torchvision_distribution():
    from scipy.stats import ks_2samp

    n = 2000
    for height, width in [(32, 32), (20, 60)]:  # a wide image exercises the rejection rule
        ours = A.sample_crop_boxes(n, height, width, generator=torch.Generator().manual_seed(4)).float()
        torch.manual_seed(5)
        img = torch.zeros(1, height, width)
        ref = torch.tensor([T.RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]).float()
        for k in range(4):  # top, left, h, w
            assert ks_2samp(ours[:, k], ref[:, k]).pvalue > 1e-3, (height, width, k)
        assert ((ours[:, 0] + ours[:, 2]) <= height).all() and ((ours[:, 1] + ours[:, 3]) <= width).all()


def _scene(size=32):
    """An image whose statistics reveal crop position and scale, flips and colour changes."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([xx, yy, 1 - xx * yy])
    img[:, : size // 4, : size // 4] = torch.tensor([1.0, 0.1, 0.1]).view(3, 1, 1)  # red patch top-left
    return (img * 255).round().to(torch.uint8)


def _view_stats(v: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) → per-view statistics: channel means, overall std, left-right and top-bottom contrast, saturation."""
    w = v.shape[-1]
    return torch.stack(
        [
            *v.mean((2, 3)).T,
            v.flatten(1).std(1),
            v[..., : w // 2].mean((1, 2, 3)) - v[..., w // 2 :].mean((1, 2, 3)),
            v[..., : w // 2, :].mean((1, 2, 3)) - v[..., w // 2 :, :].mean((1, 2, 3)),
            (v.max(1).values - v.min(1).values).mean((1, 2)),
        ],
        1,
    )


@functools.lru_cache(maxsize=None)
def _torchvision_stats(n=400) -> torch.Tensor:
    """Statistics of n per-image torchvision views of the scene (the reference, computed once)."""
    reference = A.torchvision_pipeline(TwoViewAugment((32, 32), MEAN, STD))
    torch.manual_seed(7)
    pil = TF.to_pil_image(_scene())
    return _view_stats(torch.stack([reference(pil) for _ in range(n)]))


def _compare(aug: TwoViewAugment, n=400):
    """KS p-values of each statistic: ``aug``'s batched views vs the torchvision reference."""
    from scipy.stats import ks_2samp

    img = _scene().unsqueeze(0).expand(n // 2, -1, -1, -1).contiguous()
    ours = _view_stats(aug(img, views=2, generator=torch.Generator().manual_seed(6)).flatten(0, 1))
    theirs = _torchvision_stats(n)
    return [ks_2samp(ours[:, k], theirs[:, k]).pvalue for k in range(ours.shape[1])]


def test_pipeline_matches_torchvision_in_distribution():
    pvalues = _compare(TwoViewAugment((32, 32), MEAN, STD))
    assert min(pvalues) > 1e-3, pvalues


def test_distribution_test_rejects_a_wrong_pipeline():
    """The KS check above has power: narrower crops, or no colour jitter, are caught."""
    for wrong in (TwoViewAugment((32, 32), MEAN, STD, scale=(0.8, 1.0)), TwoViewAugment((32, 32), MEAN, STD, jitter_p=0.0)):
        assert min(_compare(wrong)) < 1e-3


def test_views_shapes_devices_and_seeds():
    x = _scene().unsqueeze(0).repeat(5, 1, 1, 1)
    aug = TwoViewAugment((28, 28), MEAN, STD)
    v = aug(x, views=3, generator=torch.Generator().manual_seed(0))
    assert v.shape == (5, 3, 3, 28, 28) and v.dtype == torch.float32 and v.device == x.device
    again = aug(x, views=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(v, again)
    assert not torch.allclose(v[:, 0], v[:, 1])  # views are independent draws


def test_mnist_single_channel():
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    aug = TwoViewAugment((28, 28), (0.1307,), (0.3081,), grayscale=False)
    v = aug(x, generator=torch.Generator().manual_seed(0))
    assert v.shape == (6, 2, 1, 28, 28) and torch.isfinite(v).all()


class _FakeDataset:
    image_shape = (3, 16, 20)
    mean, std = MEAN, STD
    grayscale_aug = False


def test_for_dataset_and_bad_input():
    aug = TwoViewAugment.for_dataset(_FakeDataset())
    assert aug.image_size == (16, 20) and aug.grayscale is False and aug.mean == MEAN
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 16, 20))
    with pytest.raises(ValueError, match="channels"):
        aug(torch.zeros(2, 1, 16, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="views"):
        aug(torch.zeros(2, 3, 16, 20, dtype=torch.uint8), views=0)
    with pytest.raises(ValueError, match="scale"):
        TwoViewAugment((8, 8), MEAN, STD, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="std"):
        TwoViewAugment((8, 8), MEAN, (0.1, 0.0, 0.1))


def test_benchmark_reports_consistent_numbers():
    """Only the bookkeeping is checked (timings are not asserted): the ratio is the two throughputs' ratio."""
    from spreadcon.bench import benchmark_augment

    r = benchmark_augment(n=8, repeats=1, image_size=16)
    assert r["augment_speedup_vs_pil"] == pytest.approx(r["batched_images_per_s"] / r["pil_images_per_s"])
    assert r["n"] == 8 and r["views"] == 2 and r["threads"] == 1


def test_sync_free_augmentation_reads_nothing_back_and_matches_the_grouped_one():
    """With ``sync_free=True`` a whole two-view call makes no host-syncing call
    (what a GPU step needs); the default CPU path does make them, which shows the
    detector can see them, and both give the same views for the same generator."""
    from spreadcon.util.syncs import HostSyncs

    x = (_images(16) * 255).to(torch.uint8)
    fast = TwoViewAugment(image_size=(16, 16), mean=(0.5,) * 3, std=(0.25,) * 3, sync_free=True)
    fast(x, generator=torch.Generator().manual_seed(0))  # warm-up: normalisation constants copied once
    with HostSyncs() as syncs:
        a = fast(x, generator=torch.Generator().manual_seed(5))
    assert syncs.calls == []
    grouped = TwoViewAugment(image_size=(16, 16), mean=(0.5,) * 3, std=(0.25,) * 3, sync_free=False)
    with HostSyncs() as syncs:
        b = grouped(x, generator=torch.Generator().manual_seed(5))
    assert any("tolist" in c for c in syncs.calls), syncs.calls
    assert torch.allclose(a, b, atol=1e-5)
