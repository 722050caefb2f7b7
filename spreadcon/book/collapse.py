"""Measuring class collapse of a real encoder: the numbers chapters 1 and 2 follow.

On the L2-normalised embedding that the losses act on, a collapsed class has
mean within-class cosine 1, and ``K`` collapsed classes on a regular simplex
have between-class cosine ``-1/(K-1)`` (chapter 1's theorem). Beside the two
cosines, a linear probe on the *fine* label says how much of what collapse
erases is still there, and one on the coarse label that the encoder still
separates its training classes.

Example:
    >>> import torch
    >>> z = torch.tensor([[1.0, 0.0]] * 4 + [[-1.0, 0.0]] * 4)   # two collapsed classes
    >>> coarse = torch.tensor([0] * 4 + [1] * 4)
    >>> class Split:  # anything with .coarse and .fine labels
    ...     def __init__(self, coarse, fine): self.coarse, self.fine = coarse, fine
    >>> s = Split(coarse, torch.tensor([0, 1] * 4))
    >>> m = embedding_metrics(z, s, z, s)
    >>> round(m["within_train"], 3), round(m["between_train"], 3), m["coarse_acc"], m["fine_acc"]
    (1.0, -1.0, 1.0, 0.5)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from spreadcon.book.markup import escape_md
from spreadcon.eval.embed import embed
from spreadcon.eval.probe import linear_probe
from spreadcon.theory import model as theory

#: L2 penalty of the probes (L-BFGS logistic regression on standardised embeddings).
PROBE_L2 = 1e-3


def mnist_subset(cfg, data_root: str | None = None):
    """MNIST shrunk to ``cfg``'s split sizes: the same images for every method and seed.

    Args:
        cfg: a resolved :class:`spreadcon.presets.Config` (its ``train_size``,
            ``val_size``, ``test_size``; 0 keeps a split whole).
        data_root: the data root; ``None`` means ``$SPREADCON_DATA``, else
            ``~/.cache/spreadcon``.
    """
    from spreadcon.data import load
    from spreadcon.runs.experiment import subset_dataset

    return subset_dataset(load("mnist", root=data_root, download=True), cfg)  # Colab: fetched on first use


def embedding_metrics(ztr: torch.Tensor, train_split: Any, zte: torch.Tensor, test_split: Any) -> dict[str, float]:
    """Cosines of unit embeddings (train and test) and probe accuracies (test).

    Args:
        ztr, zte: ``(N, D)`` embeddings of the training and test images.
        train_split, test_split: objects with int64 ``coarse`` and ``fine``
            label tensors aligned with ``ztr`` and ``zte``.

    Returns:
        ``within_train``, ``between_train``, ``within_test``, ``between_test``:
        the mean within-class and between-class cosine over the coarse classes
        (:func:`spreadcon.theory.model.class_cosines`); ``fine_acc`` and
        ``coarse_acc``: the test accuracy (a fraction) of a linear probe
        fitted on ``ztr`` for each label.
    """
    w_tr, b_tr = theory.class_cosines(ztr, train_split.coarse)
    w_te, b_te = theory.class_cosines(zte, test_split.coarse)
    probe = lambda label: linear_probe(  # noqa: E731
        ztr, getattr(train_split, label), zte, getattr(test_split, label), l2=PROBE_L2).accuracy
    return {
        "within_train": w_tr, "between_train": b_tr, "within_test": w_te, "between_test": b_te,
        "fine_acc": probe("fine"), "coarse_acc": probe("coarse"),
    }


def frozen_metrics(encoder: torch.nn.Module, ds: Any, aug: Any) -> dict[str, float]:
    """:func:`embedding_metrics` of a frozen image encoder on ``ds``'s train and test splits.

    Args:
        encoder: maps normalised images to ``(N, D)`` embeddings.
        ds: a dataset with ``splits["train"]`` and ``splits["test"]``.
        aug: the dataset's :class:`spreadcon.data.augment.TwoViewAugment`
            (its ``normalize`` is applied before the encoder, as in training).
    """
    tr, te = ds.splits["train"], ds.splits["test"]
    ztr = embed(encoder, tr, normalize_fn=aug.normalize)
    zte = embed(encoder, te, normalize_fn=aug.normalize)
    return embedding_metrics(ztr, tr, zte, te)


def spread_run_metrics(seed: int, overrides: Mapping[str, Any], data_root: str | None = None, *,
                       method: str = "spread", preset: str = "smoke") -> dict[str, float]:
    """Train ``method`` on MNIST's coarse labels (``preset`` with ``overrides``, seed ``seed``) and measure it.

    One run of chapter 2's sweep: :func:`mnist_subset`, then
    :func:`spreadcon.train.loop.train`, then :func:`frozen_metrics` of the
    selected encoder.
    """
    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.presets import resolve
    from spreadcon.train.loop import train

    cfg = resolve(preset, "mnist", dict(overrides))
    ds = mnist_subset(cfg, data_root)
    result = train(method, ds, cfg, seed=seed, progress=False)
    return frozen_metrics(result.model.encoder, ds, TwoViewAugment.for_dataset(ds))


def alpha_sweep(seeds: Sequence[int], alphas: Sequence[float], overrides: Mapping[str, Any],
                data_root: str | None = None, *, workers: int | None = 1) -> dict[tuple[int, float], dict[str, float]]:
    """:func:`spread_run_metrics` at every (seed, alpha): ``{(seed, alpha): metrics}``, the records of :func:`sweep_stats`.

    Args:
        seeds, alphas: the grid; ``alpha`` overrides ``overrides["alpha"]``.
        overrides: config overrides of the smoke preset on MNIST, shared by every run.
        data_root: the data root (see :func:`mnist_subset`).
        workers: processes that share the runs (:func:`spreadcon.util.parallel.run_jobs`;
            ``None``: one per core). Each run seeds itself and trains on one
            torch thread, so the records are the same, bit for bit, with any
            number of workers.
    """
    from spreadcon.util.parallel import run_jobs

    grid = [(s, a) for s in seeds for a in alphas]
    jobs = [(s, {**overrides, "alpha": a}, data_root) for s, a in grid]
    return dict(zip(grid, run_jobs(spread_run_metrics, jobs, workers=workers)))


def sweep_stats(records: Mapping[tuple[int, float], Mapping[str, float]], seeds: Sequence[int],
                alphas: Sequence[float], split: str = "test") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and seed spread, at each weight, of a sweep of :func:`embedding_metrics` records.

    Beside every key of the records it adds, from ``within_<split>`` and
    ``between_<split>`` of each run, the gap and the spread ratio of
    :func:`spreadcon.theory.model.separation` as ``gap_<split>`` and
    ``ratio_<split>`` (computed per run, then averaged).

    Args:
        records: ``records[seed, alpha]`` is one run's metrics dict.
        seeds, alphas: the grid, in the order of the returned arrays.
        split: ``"test"`` or ``"train"``: whose cosines give the gap and ratio.

    Returns:
        ``{key: (mean, std)}``, two float arrays of ``len(alphas)``: the mean
        over seeds and the sample standard deviation (``ddof=1``; zeros with
        a single seed).

    Example:
        >>> rec = {(s, a): {"within_test": 0.5 + s * 0.1, "between_test": 0.0} for s in (0, 1) for a in (0.0, 1.0)}
        >>> st = sweep_stats(rec, [0, 1], [0.0, 1.0])
        >>> [round(float(v), 3) for v in st["gap_test"][0]], round(float(st["ratio_test"][0][0]), 3)
        ([0.55, 0.55], 0.45)
    """
    if not seeds or not alphas:
        raise ValueError(f"seeds and alphas must be non-empty, got seeds={list(seeds)} alphas={list(alphas)}")
    rows = {}
    for s in seeds:
        for a in alphas:
            r = dict(records[s, a])
            sep = theory.separation(r[f"within_{split}"], r[f"between_{split}"])
            r[f"gap_{split}"], r[f"ratio_{split}"] = sep.gap, sep.ratio
            rows[s, a] = r
    out = {}
    for key in rows[seeds[0], alphas[0]]:
        v = np.array([[rows[s, a][key] for a in alphas] for s in seeds], dtype=float)
        out[key] = (v.mean(0), v.std(0, ddof=1) if len(seeds) > 1 else np.zeros(len(alphas)))
    return out


def metrics_markdown(rows: Sequence[Mapping[str, float]], digits: int = 3) -> str:
    """A Markdown table of measurement rows (one dict each), columns in first-seen key order.

    Floats are rounded to ``digits`` decimals, whole numbers print as integers
    and a key missing from a row leaves its cell empty. Headers read the keys
    with spaces for underscores, so a narrow column can wrap its header.

    Example:
        >>> print(metrics_markdown([{"epoch": 0, "within_test": 0.71234},
        ...                         {"epoch": 1, "supcon_loss": 4.0, "within_test": 0.9}]))
        | epoch | within test | supcon loss |
        |---:|---:|---:|
        | 0 | 0.712 |  |
        | 1 | 0.9 | 4 |
    """
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]

    def cell(v) -> str:
        if v is None:
            return ""
        v = round(float(v), digits)
        return str(int(v)) if v.is_integer() else str(v)

    lines = ["| " + " | ".join(escape_md(k.replace("_", " ")) for k in keys) + " |", "|" + "---:|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    return "\n".join(lines)
