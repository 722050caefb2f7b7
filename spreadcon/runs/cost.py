"""What a run costs: counted model FLOPs, and GPU-hours at a stated throughput.

The count is the package's own: :func:`spreadcon.models.vit_train_step_flops`
for the ViT's training step, and the same counter
(:class:`torch.utils.flop_counter.FlopCounterMode` on the ``meta`` device, so
nothing is allocated or computed) for every other encoder, decoder and forward
pass. It covers matmuls, convolutions and attention at 2 FLOPs per
multiply-add. Element-wise work, the loss (a ``BV x BV`` similarity matrix:
0.03 GFLOP per step against 390 GFLOP for the ViT), the optimiser, the probe
head, kNN, k-means and Group DRO on fixed embeddings are not counted; each is
below 1% of a run.

One run of ``(dataset, method, preset)`` costs:

* **training**, per backbone: ``epochs x steps x batch x views`` images through
  the encoder forward and backward (and the decoder, for methods that
  reconstruct), with ``steps = train_images // batch`` (the engine drops the
  last partial batch), plus one forward of the validation images per epoch
  (model selection on the coarse val accuracy). ``thanos`` trains two
  backbones (``spread`` and ``autoencoder``), the width-matched controls
  ``supcon-pair`` and ``spread-pair`` two of their method, and ``random-init``
  none;
* **evaluation**: the train, val and test images embedded once; for the
  ``adamw`` probe (the paper's), ``probe_epochs`` passes over the training
  images through the frozen encoder for each of the fine and the coarse
  probe, and val and test embedded again for each; a single backbone's coarse
  head is also scored on the test images. A concatenated encoder costs the sum
  of its parts.

``thanos`` concatenates backbones that are trained exactly like the ``spread``
and ``autoencoder`` runs of the same seed (the official Thanos concatenates
separately trained backbones), so when those runs' checkpoints exist its
**marginal** cost is its evaluation only (:meth:`RunCost.marginal_flops`);
run alone it costs both trainings too (:attr:`RunCost.total_flops`).

The dataset sizes (:data:`DATASET_SIZES`) are the official splits with the
loaders' 10% validation hold-out (``spreadcon.data``), so nothing is loaded to
plan a run.

Throughput turns FLOPs into time (:func:`throughput`). It is **measured**
where a GPU measurement exists: ``results/bench/gpu.json``, written by
``.ci/gpu_check.sh`` or ``python -m spreadcon bench --json --device cuda
--out results/bench/gpu.json``, whose ``gpu`` section gives the encoder FLOPs
of a timed ``paper``-preset training epoch and its seconds. Otherwise it is an
**assumption**, labelled so wherever it is printed (:data:`ASSUMED`).

Example:
    >>> from spreadcon.runs.cost import run_cost, throughput
    >>> c = run_cost("cifar10", "spread", "paper")
    >>> round(c.train_flops / 1e15)  # PFLOP: 600 epochs x (351 steps x 390 GFLOP + 5,000 val images)
    84
    >>> throughput("t4").label in {"measured", "assumed"}
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Collection

__all__ = [
    "DatasetSize", "DATASET_SIZES", "Throughput", "ASSUMED", "GPU_BENCH", "RunCost",
    "backbones_of", "encoder_train_flops", "encoder_forward_flops", "decoder_train_flops",
    "image_shape_of", "run_cost", "measured_throughput", "throughput", "gpu_hours",
]


@dataclass(frozen=True)
class DatasetSize:
    """Split sizes and image shape of a dataset as the loaders return it.

    Attributes:
        task: ``transfer`` or ``robustness``.
        train, val, test: images per split (train + val = the official training set,
            except Waterbirds and CelebA, which have official val splits).
        image_shape: ``(C, H, W)`` at the loader's default size.
        source: where the numbers come from; ``assumed`` where they are not known.
    """

    task: str
    train: int
    val: int
    test: int
    image_shape: tuple[int, int, int]
    source: str = "official splits"


DATASET_SIZES: dict[str, DatasetSize] = {
    "mnist": DatasetSize("transfer", 54000, 6000, 10000, (1, 28, 28), "official 60k/10k, 10% val hold-out"),
    "cifar10": DatasetSize("transfer", 45000, 5000, 10000, (3, 32, 32), "official 50k/10k, 10% val hold-out"),
    "cifar100": DatasetSize("transfer", 45000, 5000, 10000, (3, 32, 32), "official 50k/10k, 10% val hold-out"),
    # 20 superclasses x (500 + 250 + 100 + 50 + 50) images, each class split 90/10
    "cifar100u": DatasetSize("transfer", 17100, 1900, 10000, (3, 32, 32), "20 x 950 drawn, 10% val hold-out"),
    "tinyimagenet": DatasetSize("transfer", 90000, 10000, 10000, (3, 64, 64),
                                "official 100k train, 10% val hold-out; official val = test"),
    "waterbirds": DatasetSize("robustness", 4795, 1199, 5794, (3, 64, 64), "official splits"),
    "celeba": DatasetSize("robustness", 162770, 19867, 19962, (3, 64, 64), "official partitions"),
    "mnist-cifar": DatasetSize("robustness", 54000, 6000, 10000, (3, 32, 32),
                               "MNIST's splits, each digit drawn on a CIFAR-10 image (spreadcon.data.proxy)"),
    "cifar-patch": DatasetSize("robustness", 45000, 5000, 10000, (3, 32, 32),
                               "CIFAR-10's splits, a coloured patch on most animals (spreadcon.data.proxy)"),
    # ISIC has no fixed public split with the patch labels: its size is whatever
    # metadata.csv the reader assembles (spreadcon.data.load_isic). Assumed.
    "isic": DatasetSize("robustness", 14000, 2000, 4000, (3, 64, 64),
                        "assumed: 20k images, 70/10/20 (depends on the metadata.csv assembled)"),
}


@dataclass(frozen=True)
class Throughput:
    """Sustained model FLOP/s of one GPU on this package's training.

    Attributes:
        flops_per_s: counted FLOPs (the convention above) per second.
        device: the GPU it applies to.
        label: ``measured`` or ``assumed``.
        source: the file it was measured in, or the reason for the assumption.
    """

    flops_per_s: float
    device: str
    label: str
    source: str

    def describe(self) -> str:
        """``"assumed: 10 TFLOP/s on Tesla T4 (...)"``: what every printed cost carries."""
        return f"{self.label}: {self.flops_per_s / 1e12:.3g} TFLOP/s on {self.device} ({self.source})"


#: The assumptions used where no measurement exists. Achieved model FLOP/s of a
#: 3.7M-parameter ViT (width 256, 65 tokens at 32x32) stays far below a GPU's
#: peak: its matmuls are small and its element-wise work is memory-bound.
ASSUMED: dict[str, Throughput] = {
    "reference": Throughput(50e12, "one A100-class GPU", "assumed",
                            "bf16 autocast, about 16% of the A100's 312 TFLOP/s dense bf16 peak; not measured"),
    "t4": Throughput(10e12, "Tesla T4", "assumed",
                     "fp16 autocast, about 15% of the T4's 65 TFLOP/s fp16 tensor-core peak; not measured"),
}

#: Where a GPU measurement is looked for (absent until a GPU run writes it).
GPU_BENCH = Path(__file__).resolve().parents[2] / "results" / "bench" / "gpu.json"


def backbones_of(method: str) -> tuple[str, ...]:
    """The single-backbone trainings a run of ``method`` needs, in order.

    ``thanos``: ``("spread", "autoencoder")``; ``supcon-pair`` / ``spread-pair``:
    two of their method (different seeds); ``random-init``: none; any other
    method in :data:`spreadcon.methods.METHODS`: itself.

    Raises:
        ValueError: an unknown method.
    """
    controls = {"random-init": (), "supcon-pair": ("supcon", "supcon"), "spread-pair": ("spread", "spread")}
    if method in controls:
        return controls[method]
    from spreadcon.methods import get_method

    m = get_method(method)
    return tuple(m.backbones) or (m.name,)


def _needs_decoder(backbone: str) -> bool:
    from spreadcon.methods import get_method

    return get_method(backbone).needs_decoder


def image_shape_of(dataset: str, image_size: int = 0) -> tuple[int, int, int]:
    """The ``(C, H, W)`` a run sees: the loader's default, or ``image_size`` square."""
    c, h, w = _size(dataset).image_shape
    return (c, image_size, image_size) if image_size else (c, h, w)


def _size(dataset: str) -> DatasetSize:
    if dataset not in DATASET_SIZES:
        raise ValueError(f"no size known for dataset {dataset!r}; known: {', '.join(DATASET_SIZES)}")
    return DATASET_SIZES[dataset]


@lru_cache(maxsize=None)
def _counted(name: str, image_shape: tuple[int, int, int], backward: bool, decoder: str | None = None) -> float:
    """FLOPs per image of encoder ``name`` (or of ``decoder`` on its embedding), counted on the meta device.

    Counted at batch 2 and halved: every counted op is linear in the batch.
    A decoder's input requires a gradient (it flows back to the encoder).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from spreadcon.models import build_decoder, build_encoder

    with torch.device("meta"):
        encoder = build_encoder(name, image_shape=image_shape)
        if decoder is None:
            model, x = encoder, torch.empty(2, *image_shape)
        else:
            model = build_decoder(decoder, latent_dim=encoder.out_dim, image_shape=image_shape)
            x = torch.empty(2, encoder.out_dim, requires_grad=True)
    model.train(backward)
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x)
        if backward:
            out.sum().backward()
    return counter.get_total_flops() / 2


@lru_cache(maxsize=None)
def encoder_train_flops(encoder: str, image_shape: tuple[int, int, int]) -> float:
    """Forward + backward FLOPs per image (view) of ``encoder`` in training."""
    if encoder == "vit":
        from spreadcon.models import vit_train_step_flops

        return vit_train_step_flops(2, tuple(image_shape)) / 2
    return _counted(encoder, tuple(image_shape), True)


def encoder_forward_flops(encoder: str, image_shape: tuple[int, int, int]) -> float:
    """Forward FLOPs per image of ``encoder`` (embedding, probing)."""
    return _counted(encoder, tuple(image_shape), False)


def decoder_train_flops(decoder: str, encoder: str, image_shape: tuple[int, int, int]) -> float:
    """Forward + backward FLOPs per image (view) of ``decoder`` on ``encoder``'s embedding."""
    return _counted(encoder, tuple(image_shape), True, decoder)


@dataclass(frozen=True)
class RunCost:
    """Counted FLOPs of one run.

    Attributes:
        dataset, method, preset: the run.
        backbone_flops: ``(backbone, FLOPs)`` per training, in order.
        eval_flops: embedding and probing.
    """

    dataset: str
    method: str
    preset: str
    backbone_flops: tuple[tuple[str, float], ...]
    eval_flops: float

    @property
    def train_flops(self) -> float:
        return sum(f for _, f in self.backbone_flops)

    @property
    def total_flops(self) -> float:
        """The stand-alone cost: every backbone trained, then the evaluation."""
        return self.train_flops + self.eval_flops

    def marginal_flops(self, reused: Collection[str] = ()) -> float:
        """The cost when the backbones named in ``reused`` are already trained (checkpoints exist).

        Each name excuses one training of that name: a pair control reuses at
        most the run of its own seed, and trains its second backbone.
        """
        left = list(reused)
        cost = self.eval_flops
        for name, flops in self.backbone_flops:
            if name in left:
                left.remove(name)
            else:
                cost += flops
        return cost


def run_cost(dataset: str, method: str, preset: str, overrides: dict[str, Any] | None = None) -> RunCost:
    """Counted FLOPs of one ``(dataset, method, preset)`` run (see the module docstring).

    Args:
        dataset: a name in :data:`DATASET_SIZES`.
        method: a method name (see :func:`backbones_of`).
        preset: a name in :data:`spreadcon.presets.PRESETS`; its dataset
            adjustments apply.
        overrides: config overrides, as for :func:`spreadcon.presets.resolve`.

    Raises:
        ValueError: an unknown dataset, method, preset or key.
    """
    from spreadcon.presets import resolve

    size = _size(dataset)
    backbones = backbones_of(method)
    cfg = resolve(preset, dataset, overrides)
    shape = image_shape_of(dataset, cfg.image_size)
    n_tr = min(cfg.train_size, size.train) if cfg.train_size else size.train
    n_va = min(cfg.val_size, size.val) if cfg.val_size else size.val
    n_te = min(cfg.test_size, size.test) if cfg.test_size else size.test
    steps = n_tr // cfg.batch_size if n_tr >= cfg.batch_size else 1
    fwd = encoder_forward_flops(cfg.encoder, shape)

    def training(backbone: str) -> float:
        per_view = encoder_train_flops(cfg.encoder, shape)
        if _needs_decoder(backbone):
            per_view += decoder_train_flops(cfg.decoder, cfg.encoder, shape)
        per_epoch = steps * cfg.batch_size * cfg.views * per_view + n_va * fwd
        return cfg.epochs * per_epoch

    width = max(1, len(backbones))  # random-init: one untrained encoder
    fwd_all = width * fwd
    evaluation = (n_tr + n_va + n_te) * fwd_all
    if size.task == "transfer" and cfg.probe == "adamw":
        evaluation += 2 * (cfg.probe_epochs * n_tr + n_va + n_te) * fwd_all  # fine and coarse probes
    if len(backbones) == 1:
        evaluation += n_te * fwd  # the coarse head's test accuracy
    return RunCost(dataset, method, preset, tuple((b, training(b)) for b in backbones), evaluation)


def measured_throughput(path: str | Path | None = None) -> Throughput | None:
    """The throughput measured in a GPU bench file, or None if there is none (or it holds no figure).

    Reads the ``gpu`` section of ``path`` (default :data:`GPU_BENCH`):
    ``gpu_encoder_flops_per_epoch / gpu_epoch_s`` on ``gpu_device``.
    """
    path = Path(GPU_BENCH if path is None else path)
    try:
        gpu = json.loads(path.read_text()).get("gpu") or {}
        flops, seconds = float(gpu["gpu_encoder_flops_per_epoch"]), float(gpu["gpu_epoch_s"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (flops > 0 and seconds > 0):
        return None
    return Throughput(flops / seconds, str(gpu.get("gpu_device", "GPU")), "measured",
                      f"{path.name}: a {gpu.get('gpu_preset', 'paper')}-preset epoch of {gpu.get('gpu_method', '?')}")


def throughput(gpu: str = "reference", bench: str | Path | None = None) -> Throughput:
    """The throughput to price runs at: measured if a measurement exists, else :data:`ASSUMED`.

    Args:
        gpu: ``reference`` (any measured GPU, else the assumed A100-class GPU)
            or ``t4`` (a measurement only if it was taken on a T4).
        bench: the GPU bench file (default :data:`GPU_BENCH`).
    """
    if gpu not in ASSUMED:
        raise ValueError(f"gpu={gpu!r}; valid: {', '.join(ASSUMED)}")
    measured = measured_throughput(bench)
    if measured is not None and (gpu == "reference" or "t4" in measured.device.lower()):
        return measured
    return ASSUMED[gpu]


def gpu_hours(flops: float, at: Throughput) -> float:
    """``flops`` at ``at``'s sustained throughput, in hours."""
    return flops / at.flops_per_s / 3600.0
