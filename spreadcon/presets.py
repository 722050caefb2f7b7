"""Experiment presets: ``smoke``, ``cpu``, ``colab``, ``paper`` and ``official``, as one typed config.

A preset is a :class:`Config`: one flat block of hyperparameters, read top to
bottom, each value with its unit and the reason for it. :func:`resolve` picks a
preset, applies the explicit per-dataset adjustments listed in
:data:`DATASET_ADJUSTMENTS`, then the caller's overrides. Overrides may only
name keys that exist; anything else is an error that lists the valid keys.

How the presets differ from the paper (Chen et al., ICML 2022):

* ``paper`` -- the official recipe: the paper's ViT (7 blocks, 3.72M parameters at
  32x32; see spreadcon.models.vit on the quoted 3.2M), AdamW at 3e-4,
  batch 128 x 2 views, tau = 0.5, alpha = 0.5, 600 epochs under cosine
  annealing that restarts every 100 epochs, bf16 autocast, and a 100-epoch
  linear probe (AdamW, lr 1e-3) trained on augmented images. The weight decay
  (1e-2, AdamW's default) is our choice; the paper does not state it. Needs a
  GPU. Its model compute for CIFAR-10 is about 91 PFLOP (390 GFLOP per
  128 x 2-view step, counted by spreadcon.models.vit_train_step_flops, x 391
  steps x 600 epochs); its wall time has not been measured here.
  Estimated cost (:mod:`spreadcon.runs.cost`, counted FLOPs at an *assumed* 50
  TFLOP/s sustained on one A100-class GPU; replaced by the measured figure
  once ``results/bench/gpu.json`` exists): CIFAR-10 ``supcon`` or ``spread``
  88 PFLOP, about 0.5 GPU-hours; ``autoencoder`` 391 PFLOP (the ResNet-18
  decoder costs 3.7 times the ViT per image), about 2.2 hours; ``thanos`` run
  alone about 2.7 hours, or 0.05 hours (its evaluation) when the ``spread``
  and ``autoencoder`` checkpoints of the same seed exist.
* ``official`` -- the official thanos-code's form: ``paper`` with
  ``reference_quirks=True``, so SupCon and cNCE are computed as the official
  code computes them (cross-view anchors, the norm taken at the candidate
  index, the one-positive denominator, the positive logit clamped at 1; see
  ``book/losses.md`` and CONTRACT section 1). That key is the only
  difference from ``paper``. This is the preset that the official README's
  CIFAR-10 table (SupCon 51.8, +cNCE 77.1, AE 71.7, Thanos 79.1) is compared
  against, and the one ``reproduce --paper`` runs. What this package does not
  know about the official training, and so leaves at ``paper``'s values
  (inferred, not verified against the official code): the AdamW weight
  decay, the numeric precision, and ``torch.compile`` (a speed switch only).
  One documented difference is not a config key and is not replicated: the
  official CIFAR-100-U draws its unbalanced subset unseeded, with
  replacement, and unbalances the test split too (``spreadcon.data``). Same
  cost as ``paper``.
* ``colab`` -- between ``cpu`` and ``paper``: about 30 minutes per
  ``supcon`` or ``spread`` run on a Colab T4, with the paper's protocol: all
  training images, the coarse labels, the paper's ViT and decoder, and the
  same probe (100-epoch AdamW on augmented images). Only the training length
  is cut: ``epochs`` per dataset (:data:`DATASET_ADJUSTMENTS`) are sized from
  the counted FLOPs of a ``spread`` run at an **assumed** sustained 10
  TFLOP/s on a T4 under fp16 autocast (about 15% of its 65 TFLOP/s
  fp16 tensor-core peak; :data:`spreadcon.runs.cost.ASSUMED`), with one cosine over
  the run instead of restarts every 100 epochs, and TinyImageNet at 32x32
  (its probe alone at 64x64 would take 70 minutes). CIFAR-10: 100 epochs,
  about 31 minutes for ``supcon``/``spread`` (of which 8 are the probe),
  about 1.9 hours for ``autoencoder`` (the ResNet-18 decoder), and 15
  minutes for ``thanos`` after its backbones. Checkpoints every 5 epochs, so
  a Colab disconnect loses a few minutes. An estimate until a T4 measures it.
* ``cpu`` -- real but small, sized for a 2-core CPU: a few thousand training
  images instead of all of them, a small CNN instead of the ViT, 5 epochs
  with one cosine instead of 600 with restarts, TinyImageNet resized to
  32x32, a larger learning rate (1e-3) because the run is short, and an
  L-BFGS probe on fixed (unaugmented) embeddings instead of a 100-epoch AdamW
  probe on augmented images. Measured on one thread of the 2-core machine,
  with other work alongside (the records' wall times): ce, supcon and spread
  about 2.5 minutes per run, autoencoder about 5.5, thanos (two backbones)
  about 8.5. The book's grid (4 datasets x 5 methods x 3 seeds) is about
  250 CPU-minutes: about 2.5 hours with ``reproduce --jobs 2``. Absolute
  accuracies are far below the paper's; whether the comparisons between
  methods carry over is what chapters 4-6 measure.
* ``cpu-long`` -- the cpu preset trained for 40 epochs instead of 5 (one
  cosine over the 40): the training-length study, which evaluates each run
  along its training (``--eval-epochs 1,2,5,10,20,40``, the record's
  ``metrics_by_epoch``) to see whether the lift over SupCon grows as SupCon
  collapses. MNIST and CIFAR-10 only.
* ``collapse`` -- the ``cpu`` preset where the paper's premise holds: temperature 0.1 (the
  SupCon paper's default), 1,000 training images, 100 epochs (one cosine). Fixed before any
  run, not tuned: the values are the SupCon paper's temperature and a small set trained long
  enough to approach a minimiser of the training loss. Its premise (SupCon collapses a class
  to a point) is read on the validation split (``val_within_class_cosine``). About 3-4
  minutes per ``supcon`` or ``spread`` run on 2 threads in bf16.
* ``smoke`` -- proves the pipeline end to end in seconds: a few hundred
  images, 1 epoch, the smallest CNN. Its numbers mean nothing.

Example:
    >>> from spreadcon.presets import resolve
    >>> cfg = resolve("smoke", "mnist", {"epochs": 2})
    >>> cfg.epochs, cfg.encoder
    (2, 'cnn')
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

__all__ = ["Config", "PRESETS", "DATASET_ADJUSTMENTS", "RULES", "Rule", "check_config", "resolve", "parse_value",
           "ENCODER_NAMES", "DECODER_NAMES"]


@dataclass(frozen=True)
class Config:
    """Every knob of one experiment. Defaults are the ``cpu`` preset's."""

    # ---- data -----------------------------------------------------------
    train_size: int = 4000        # images drawn from the train split (0 = all); CPU budget
    val_size: int = 1000          # images for model selection / probe selection (0 = all)
    test_size: int = 2000         # images for the reported test metrics (0 = all)
    views: int = 2                # augmented views per image; the paper uses 2
    image_size: int = 0           # resize images to this side in pixels at load time (0 = the loader's default)
    hierarchy: str = "wordnet"    # TinyImageNet's coarse map: "wordnet" (18 hypernyms) or "official" (thanos-code's)

    # ---- model ----------------------------------------------------------
    encoder: str = "cnn"          # spreadcon.models.build_encoder name; paper: "vit"
    decoder: str = "cnn"          # spreadcon.models.build_decoder name for reconstruction; paper: "resnet"

    # ---- objective (weights of the named loss terms; see spreadcon.methods) ----
    temperature: float = 0.5      # tau of SupCon / cNCE / SimCLR; paper: 0.5
    alpha: float = 0.5            # cNCE weight inside L_spread; paper: 0.5
    ce_weight: float = 1.0        # weight of cross-entropy on coarse labels (every method has it)
    contrastive_weight: float = 1.0  # weight of SupCon or L_spread
    recon_weight: float = 1.0     # weight of the autoencoder's mean-squared reconstruction error
    simclr_weight: float = 1.0    # weight of the SimCLR term in method "simclr"
    reference_quirks: bool = False  # True: the official thanos-code loss, artefacts included
    clamp: str = "auto"           # SupCon positive-logit clamp: "auto" (the switch set: none, or 1 with quirks), "none", or a number

    # ---- optimisation ---------------------------------------------------
    epochs: int = 5               # passes over the training subset
    batch_size: int = 128         # images per step (each seen in `views` views); paper: 128
    lr: float = 1e-3              # AdamW peak learning rate; short runs tolerate more than the paper's 3e-4
    weight_decay: float = 1e-2    # AdamW decoupled weight decay (torch default; not stated in the paper)
    warmup_epochs: float = 0.0    # linear warm-up from 0 to lr, in epochs (fractions allowed)
    cosine_period_epochs: int = 0  # 0 = one cosine over the run; k > 0 = restart every k epochs (official: 100)
    grad_clip: float = 0.0        # max global grad norm; 0 = off

    # ---- runtime --------------------------------------------------------
    amp: str = "auto"             # "auto" = bf16 autocast where the hardware has bf16 (CUDA; AMX / AVX-512 BF16 CPUs), else fp32 (fp16 on a T4); "bf16"; "off"
    compile: bool = False         # torch.compile the model (GPU runs; slow to warm up on CPU)
    checkpoint_every: int = 5     # epochs between checkpoints (plus one at the end)
    log_every: int = 20           # steps between host syncs for the progress bar
    select_on_val: bool = True    # keep the epoch with the best coarse val accuracy

    # ---- evaluation -----------------------------------------------------
    probe: str = "lbfgs"          # "lbfgs" on fixed embeddings (fast) or "adamw" on augmented images (paper)
    probe_epochs: int = 100       # epochs of the "adamw" probe; L-BFGS iterations for "lbfgs"
    probe_lr: float = 1e-3        # "adamw" probe learning rate; paper: 1e-3
    probe_weight_decay: float = 1e-4  # L2 penalty / weight decay of the probe
    eval_batch_size: int = 512    # images per forward pass when embedding a split
    knn_k: int = 20               # neighbours for the kNN accuracy
    dro_epochs: int = 100         # Group DRO head training epochs (robustness datasets)
    max_clusters: int = 4         # largest k tried per class by the silhouette search (GEORGE)
    subgroup_cluster: str = "umap-gmm"  # GEORGE's step 1: UMAP per class, then Gaussian mixtures;
                                  # "umap-kmeans", or "kmeans-raw" (k-means on the embedding, the first edition)
    dro_retrain: bool = True      # robustness: also retrain the whole network with Group DRO on the
                                  # inferred groups (GEORGE's step 2), cfg.epochs long: one more training per run

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain JSON-ready dict."""
        return dataclasses.asdict(self)


# The presets, each written out in full so it reads top to bottom.
PRESETS: dict[str, Config] = {
    "smoke": Config(
        train_size=512, val_size=256, test_size=256,  # a few batches: seconds per epoch
        encoder="cnn", decoder="cnn",
        epochs=1, batch_size=64, lr=1e-3,
        checkpoint_every=1, log_every=4,
        probe="lbfgs", probe_epochs=30,               # 30 L-BFGS iterations suffice on 256 points
        eval_batch_size=256, knn_k=10, dro_epochs=20, max_clusters=3,
    ),
    "cpu": Config(),  # the dataclass defaults above are the cpu preset
    "paper": Config(
        train_size=0, val_size=0, test_size=0,        # all data
        encoder="vit", decoder="resnet",              # the paper's ViT (3.72M) and ResNet-18 decoder
        temperature=0.5, alpha=0.5,
        epochs=600, batch_size=128, lr=3e-4, weight_decay=1e-2,
        warmup_epochs=0.0, cosine_period_epochs=100,  # official: cosine restarting every 100 epochs
        amp="auto", compile=True,
        checkpoint_every=10, log_every=50,
        probe="adamw", probe_epochs=100, probe_lr=1e-3,  # official probe protocol
        eval_batch_size=1024, knn_k=200, dro_epochs=300, max_clusters=5,
    ),
}

PRESETS["official"] = replace(
    PRESETS["paper"],
    reference_quirks=True,  # the official thanos-code loss, artefacts included (the only difference)
)
PRESETS["cpu-long"] = replace(
    PRESETS["cpu"],          # the cpu preset's data, model, probe and optimiser ...
    epochs=40,               # ... trained 8x longer: the training-length study (does the lift grow as SupCon collapses?)
    checkpoint_every=5,      # epochs; with --eval-epochs the run also keeps the snapshots it is evaluated at
)
PRESETS["collapse"] = replace(
    PRESETS["cpu"],          # the cpu preset's CNN, probe and optimiser, in the regime the paper's premise needs:
    temperature=0.1,         # the SupCon paper's default temperature (sharper: pulls a class together harder)
    train_size=1000,         # few images ...
    epochs=100,              # ... seen many times: the training loss is driven towards its minimiser
    checkpoint_every=10,     # epochs
)
PRESETS["colab"] = replace(
    PRESETS["paper"],        # the paper's data, model, probe and optimiser
    epochs=100,              # CIFAR-10: ~30 T4-minutes for spread; other datasets in DATASET_ADJUSTMENTS
    cosine_period_epochs=0,  # one cosine over the (short) run instead of restarts every 100 epochs
    checkpoint_every=5,      # epochs; ~1 T4-minute of CIFAR-10 training lost at most on a disconnect
)

# Explicit per-dataset changes on top of a preset, applied before overrides.
# The cpu preset is sized by measured cost. Measured (spread, 2 threads, on a
# shared and overloaded 2-core machine, so wall time was ~2-3x CPU time):
# mnist 4000 x 6 epochs took 308 CPU-s, cifar10 4000 x 5 epochs 396 CPU-s,
# training being ~90% of it. The sizes below cut that to ~250-300 CPU-s, about
# 2-3 minutes of wall time on an idle 2-core CPU. TinyImageNet's 64x64 images
# would cost 4x more per step, so the cpu preset resizes them to 32x32
# (image_size); the paper trains at 64x64.
DATASET_ADJUSTMENTS: dict[tuple[str, str], dict[str, Any]] = {
    ("cpu", "mnist"): {"train_size": 4000, "epochs": 5},
    ("cpu", "cifar10"): {"train_size": 3000, "epochs": 5},
    ("cpu", "tinyimagenet"): {"train_size": 3000, "epochs": 5, "image_size": 32},
    # mnist-cifar: 9,000 images x 8 epochs, so that the digit (the core feature) is learned and true-group
    # DRO can fix the worst group (chosen on the validation split: spreadcon.data.proxy; chapter 6 validates)
    ("cpu", "mnist-cifar"): {"train_size": 9000, "epochs": 8},
    ("cpu", "cifar-patch"): {"train_size": 3000, "epochs": 5},
    # cpu-long: the cpu preset's subsets, 40 epochs (the cpu entries' epochs would undo it)
    ("cpu-long", "mnist"): {"train_size": 4000},
    ("cpu-long", "cifar10"): {"train_size": 3000},
    # collapse: TinyImageNet at 32x32 like the cpu preset (1,000 images, 100 epochs for every dataset)
    ("collapse", "tinyimagenet"): {"image_size": 32},
    # colab: epochs sized so that a spread run costs ~30 minutes on a T4 at the
    # assumed 10 TFLOP/s (spreadcon.runs.cost; tests/test_presets.py checks the band).
    ("colab", "mnist"): {"epochs": 100},
    ("colab", "cifar-patch"): {"epochs": 120},    # 45,000 training images: CIFAR-10 with patches
    ("colab", "cifar10"): {"epochs": 100},
    ("colab", "cifar100"): {"epochs": 100},
    ("colab", "cifar100u"): {"epochs": 300},      # 17,100 training images
    ("colab", "tinyimagenet"): {"epochs": 30, "image_size": 32},  # 64x64 probe alone: ~70 T4-minutes
    ("colab", "waterbirds"): {"epochs": 250},     # 4,795 training images
    ("colab", "celeba"): {"epochs": 7},           # 162,770 training images at 64x64
    ("colab", "isic"): {"epochs": 80},            # size assumed (spreadcon.runs.cost.DATASET_SIZES)
}


#: :data:`spreadcon.models.ENCODERS` and ``DECODERS``, without importing them (they import torch);
#: ``tests/test_presets.py`` checks that they match
ENCODER_NAMES = ("vit", "resnet18", "cnn", "linear")
DECODER_NAMES = ("resnet", "cnn")


@dataclass(frozen=True)
class Rule:
    """What one config key accepts: a type, and a test of the value (which may read other keys).

    ``says`` completes "config KEY=VALUE must be ..." in the error message. Numbers must be
    finite; ``int`` keys take no floats or bools, ``float`` keys take ints (stored as floats).
    """

    kind: type
    says: str
    ok: Callable[[Any, "Config"], bool] = lambda value, cfg: True


def _int(low: int) -> Rule:
    return Rule(int, f"an integer >= {low}", lambda v, cfg: v >= low)


def _choice(*names: str) -> Rule:
    return Rule(str, f"one of {', '.join(names)}", lambda v, cfg: v in names)


_POSITIVE = Rule(float, "a finite number > 0", lambda v, cfg: v > 0)
_NON_NEGATIVE = Rule(float, "a finite number >= 0", lambda v, cfg: v >= 0)
_FLAG = Rule(bool, "true or false")

#: One rule per :class:`Config` key, checked by :func:`check_config` (``tests/test_presets.py``: every key has one).
RULES: dict[str, Rule] = {
    "train_size": Rule(int, "0 (all) or an integer >= 2", lambda v, cfg: v == 0 or v >= 2),
    "val_size": _int(0),
    "test_size": _int(0),
    "views": _int(2),
    "image_size": Rule(int, "0 (the loader's size) or an integer >= 8, a multiple of 4 for the vit encoder",
                       lambda v, cfg: v == 0 or (v >= 8 and (cfg.encoder != "vit" or v % 4 == 0))),
    "hierarchy": _choice("wordnet", "official"),
    "encoder": _choice(*ENCODER_NAMES),
    "decoder": _choice(*DECODER_NAMES),
    "temperature": _POSITIVE,
    "alpha": Rule(float, "a number from 0 to 1", lambda v, cfg: 0.0 <= v <= 1.0),
    "ce_weight": _NON_NEGATIVE,
    "contrastive_weight": _NON_NEGATIVE,
    "recon_weight": _NON_NEGATIVE,
    "simclr_weight": _NON_NEGATIVE,
    "reference_quirks": _FLAG,
    "clamp": Rule(str, "auto, none or a finite number", lambda v, cfg: _clamp_ok(v)),
    "epochs": _int(1),
    "batch_size": _int(2),
    "lr": _POSITIVE,
    "weight_decay": _NON_NEGATIVE,
    "warmup_epochs": Rule(float, "a number from 0 to epochs", lambda v, cfg: 0.0 <= v <= cfg.epochs),
    "cosine_period_epochs": _int(0),
    "grad_clip": _NON_NEGATIVE,
    "amp": _choice("auto", "bf16", "off"),
    "compile": _FLAG,
    "checkpoint_every": _int(1),
    "log_every": _int(1),
    "select_on_val": _FLAG,
    "probe": _choice("lbfgs", "adamw"),
    "probe_epochs": _int(1),
    "probe_lr": _POSITIVE,
    "probe_weight_decay": _NON_NEGATIVE,
    "eval_batch_size": _int(1),
    "knn_k": _int(1),
    "dro_epochs": _int(1),
    "max_clusters": _int(1),
    "subgroup_cluster": _choice("umap-gmm", "umap-kmeans", "kmeans-raw"),
    "dro_retrain": _FLAG,
}


def _has_kind(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is int:
        return isinstance(value, int)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def check_config(cfg: Config) -> None:
    """Check every key of ``cfg`` against :data:`RULES` (type, finiteness, range, choices).

    Raises:
        ValueError: one line, ``config KEY=VALUE must be ...``, for the first key that breaks its rule.

    Example:
        >>> check_config(replace(PRESETS["smoke"], probe_weight_decay=float("nan")))
        Traceback (most recent call last):
        ...
        ValueError: config probe_weight_decay=nan must be a finite number >= 0
    """
    for key, rule in RULES.items():
        value = getattr(cfg, key)
        if not (_has_kind(value, rule.kind) and rule.ok(value, cfg)):
            raise ValueError(f"config {key}={value!r} must be {rule.says}")


def parse_value(key: str, text: str) -> Any:
    """Convert a ``--set key=value`` string to the type of ``Config.key`` (:data:`RULES`).

    Raises:
        ValueError: unknown key, or a value that does not parse as that type.
    """
    if key not in RULES:
        raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(RULES))}")
    kind = RULES[key].kind
    try:
        if kind is bool:
            low = text.strip().lower()
            if low not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(text)
            return low in {"true", "1", "yes"}
        if kind in (int, float):
            return kind(text)
    except ValueError:
        raise ValueError(f"config {key}={text!r} must be {RULES[key].says}") from None
    return text


def _typed(key: str, value: Any) -> Any:
    """An override as the config stores it: strings parsed, numbers of a float key as floats."""
    if isinstance(value, str):
        return parse_value(key, value)
    if RULES[key].kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def resolve(preset: str, dataset: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build the config of one run: preset, then dataset adjustments, then overrides.

    Args:
        preset: one of ``PRESETS`` (``smoke``, ``cpu``, ``paper``, ``official``, ``colab``).
        dataset: dataset name; selects the matching ``DATASET_ADJUSTMENTS`` entry.
        overrides: ``{key: value}`` for existing ``Config`` fields only. String
            values are parsed to the field's type (so CLI ``--set`` works).

    Returns:
        The resolved config, every key checked by :func:`check_config`.

    Raises:
        ValueError: unknown preset or key, or a value that breaks its key's rule.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    cfg = replace(PRESETS[preset], **DATASET_ADJUSTMENTS.get((preset, dataset), {}))
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(RULES))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(RULES))}")
    cfg = replace(cfg, **{k: _typed(k, v) for k, v in overrides.items()})
    check_config(cfg)
    if cfg.hierarchy != "wordnet" and dataset is not None and dataset != "tinyimagenet":
        raise ValueError(f"config hierarchy={cfg.hierarchy!r} is for tinyimagenet only, not {dataset!r}")
    return cfg


def clamp_value(cfg: Config) -> float | None | str:
    """``cfg.clamp`` as :class:`spreadcon.losses.contrastive.SpreadLoss` takes it: ``"auto"``, None or a float."""
    return _clamp(cfg.clamp)


def _clamp(text: str) -> float | None | str:
    key = text.strip().lower()
    if key == "auto":
        return "auto"
    return None if key == "none" else float(key)


def _clamp_ok(text: str) -> bool:
    try:
        value = _clamp(text)
    except ValueError:
        return False
    return value in ("auto", None) or math.isfinite(value)
