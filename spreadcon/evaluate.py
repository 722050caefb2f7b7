"""Evaluation of frozen encoders: embeddings, probes, kNN, spread, AMI, worst group.

Everything here works on a *frozen* encoder: :func:`embed` runs it in eval
mode under ``no_grad`` and returns a ``(N, D)`` float32 CPU tensor, and the
metrics take such tensors. Only :func:`linear_probe_augmented` (the paper's
probe protocol) runs the encoder itself, on augmented training images.

Model selection never touches test data: where a function chooses anything
(the L2 strength of a probe, the probe epoch, the number of subgroups), it
chooses on the train or validation arguments only.

| function | what it measures |
|---|---|
| :func:`embed` | frozen embeddings of a split |
| :func:`linear_probe` | fast probe on fixed embeddings (L-BFGS logistic regression, or ridge closed form) |
| :func:`linear_probe_augmented` | the paper's probe: 100 epochs, AdamW 1e-3, augmented train images |
| :func:`knn_accuracy` | cosine k-nearest-neighbour accuracy |
| :func:`spread_metrics` | mean within-class cosine and ``1 - ||μ_y||²`` per class |
| :func:`subclass_ami` | per-coarse-class k-means against fine labels, AMI |
| :func:`infer_subgroups` | GEORGE step 1: per-class k-means, k by silhouette |
| :func:`train_linear_head` | ERM or Group DRO (Sagawa et al. 2020) linear head |
| :func:`worst_group` | GEORGE end to end: inferred groups → Group DRO → worst-group accuracy |

scikit-learn is imported inside the functions that need it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "embed",
    "ProbeResult",
    "linear_probe",
    "linear_probe_augmented",
    "knn_accuracy",
    "spread_metrics",
    "subclass_ami",
    "SubgroupResult",
    "infer_subgroups",
    "train_linear_head",
    "group_accuracies",
    "worst_group",
]


# ---------------------------------------------------------------- embeddings


def _default_normalize(x: Tensor) -> Tensor:
    return x.float() / 255.0


def _iter_images(
    source: Any,
    batch_size: int,
    label: str | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(uint8 images (b, C, H, W), labels (b,) or None)`` from many kinds of source.

    ``source`` may be a uint8 tensor, an ``(images, labels)`` tuple, a
    :class:`spreadcon.data.Split` (in memory or streaming), or any iterable of
    uint8 tensors, ``(images, labels)`` pairs or ``{"images": ..., label: ...}``
    dicts (such as :func:`spreadcon.data.batches`).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if isinstance(source, Tensor):
        source = (source, None)
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], Tensor):
        images, labels = source
        n = len(images)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for idx in order.split(int(batch_size)):
            yield images[idx.to(images.device)], None if labels is None else labels[idx.to(labels.device)]
        return
    if hasattr(source, "fine") and hasattr(source, "images"):  # a Split
        labels = getattr(source, label) if label is not None else None
        if source.images is not None:
            yield from _iter_images((source.images, labels), batch_size, None, shuffle, generator)
            return
        from spreadcon.data import batches

        for b in batches(source, batch_size, shuffle=shuffle, generator=generator):
            yield b["images"], (b[label] if label is not None else None)
        return
    if shuffle:
        raise ValueError("shuffle=True needs a tensor, a (images, labels) tuple or a Split as source")
    for item in source:
        if isinstance(item, dict):
            yield item["images"], (item[label] if label is not None else None)
        elif isinstance(item, (tuple, list)):
            yield item[0], item[1]
        else:
            yield item, None


def _prepare(encoder: nn.Module, device) -> tuple[torch.device, bool]:
    was_training = encoder.training
    encoder.eval()
    if device is None:
        p = next(encoder.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    return torch.device(device), was_training


@torch.no_grad()
def embed(
    encoder: nn.Module,
    split: Any,
    normalize_fn: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> Tensor:
    """Frozen embeddings of every image of a split, in order.

    The encoder runs in eval mode (its previous mode is restored afterwards)
    under ``torch.no_grad``.

    Args:
        encoder: maps float ``(b, C, H, W)`` to ``(b, D)``.
        split: a :class:`spreadcon.data.Split`, a uint8 ``(N, C, H, W)``
            tensor, or an iterable of uint8 batches / ``{"images": ...}`` dicts
            (e.g. ``spreadcon.data.batches(split, 512, shuffle=False)``).
        normalize_fn: uint8 ``(b, C, H, W)`` → float ``(b, C, H, W)``; usually
            ``TwoViewAugment.normalize``. Default ``x / 255``.
        batch_size: images per forward pass (ignored for iterables).
        device: where the encoder runs; default: the encoder's device.
        amp: run under bf16 autocast (CUDA only; ignored on CPU).

    Returns:
        float32 ``(N, D)`` tensor on the CPU.

    Example:
        >>> enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
        >>> embed(enc, torch.zeros(5, 3, 2, 2, dtype=torch.uint8)).shape
        torch.Size([5, 4])
    """
    normalize_fn = normalize_fn or _default_normalize
    dev, was_training = _prepare(encoder, device)
    out = []
    try:
        for x, _ in _iter_images(split, batch_size):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
                z = encoder(normalize_fn(x.to(dev, non_blocking=True)))
            out.append(z.float().cpu())
    finally:
        encoder.train(was_training)
    if not out:
        raise ValueError("split is empty: no images to embed")
    return torch.cat(out)


# ------------------------------------------------------------------- probes


@dataclass
class ProbeResult:
    """What a linear probe returns.

    Attributes:
        accuracy: test accuracy, a fraction in [0, 1].
        predictions: int64 ``(N_test,)`` predicted classes.
        train_accuracy: accuracy on the probe's own training data.
        l2: the L2 strength used (chosen on validation data when several were given).
        val_accuracy: validation accuracy at the chosen setting, or None.
        details: extra information (e.g. the epoch chosen).
    """

    accuracy: float
    predictions: Tensor
    train_accuracy: float
    l2: float
    val_accuracy: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _check_xy(x: Tensor, y: Tensor, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name}_x must be 2-D (N, D), got shape {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{name}_y must have shape ({len(x)},), got {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}_x contains non-finite values")


def _standardizer(x: Tensor) -> Callable[[Tensor], Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    return lambda a: (a - mean) / std


def _fit_lbfgs(x: Tensor, y: Tensor, n_classes: int, l2: float, max_iter: int) -> nn.Linear:
    """Multinomial logistic regression, ``mean CE + l2/2 ||W||²``, full-batch L-BFGS."""
    head = nn.Linear(x.shape[1], n_classes).to(x.device, x.dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
        tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head


def _fit_closed_form(x: Tensor, y: Tensor, n_classes: int, l2: float) -> nn.Linear:
    """Ridge regression onto one-hot targets: ``W = (XᵀX + l2·N·I)⁻¹ XᵀY``."""
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], 1)
    target = F.one_hot(y, n_classes).to(x.dtype)
    reg = l2 * n * torch.eye(d + 1, dtype=x.dtype, device=x.device)
    reg[-1, -1] = 0.0  # no penalty on the bias
    w = torch.linalg.solve(xb.T @ xb + reg, xb.T @ target)
    head = nn.Linear(d, n_classes).to(x.device, x.dtype)
    with torch.no_grad():
        head.weight.copy_(w[:-1].T)
        head.bias.copy_(w[-1])
    return head


@torch.no_grad()
def _accuracy(head: nn.Module, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
    pred = head(x).argmax(1)
    return (pred == y).double().mean().item(), pred


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    method: str = "lbfgs",
    l2: float | Iterable[float] = 1e-4,
    max_iter: int = 100,
    val_x: Tensor | None = None,
    val_y: Tensor | None = None,
    n_classes: int | None = None,
) -> ProbeResult:
    """Linear probe on fixed embeddings (the fast alternative for CPU presets).

    Features are standardised with the *training* mean and standard deviation.

    * ``method="lbfgs"``: multinomial logistic regression minimising
      ``mean_i CE(W x_i + b, y_i) + l2/2 · ||W||²_F`` with full-batch L-BFGS
      (strong-Wolfe line search, ``max_iter`` iterations), in float64.
    * ``method="closed_form"``: ridge regression onto one-hot targets,
      ``[W; b] = (X̃ᵀX̃ + l2·N·I)⁻¹ X̃ᵀ Y`` (bias unpenalised), predict by argmax.

    If ``l2`` is a list, each value is fitted on train and the one with the
    best accuracy on ``(val_x, val_y)`` is used (ties: the first); test data
    never enter the choice.

    Args:
        train_x, test_x: float ``(N, D)`` embeddings.
        train_y, test_y: int64 ``(N,)`` labels.
        method: ``"lbfgs"`` or ``"closed_form"``.
        l2: L2 strength, or a list of them to choose from on validation data.
        max_iter: L-BFGS iterations.
        val_x, val_y: validation embeddings and labels (needed when ``l2`` is a list).
        n_classes: number of classes (default: ``max label + 1`` over train and test).

    Returns:
        :class:`ProbeResult`.

    Example:
        >>> x = torch.randn(40, 3); y = (x[:, 0] > 0).long()
        >>> linear_probe(x, y, x, y).accuracy
        1.0
    """
    if method not in {"lbfgs", "closed_form"}:
        raise ValueError(f"method must be 'lbfgs' or 'closed_form', got {method!r}")
    _check_xy(train_x, train_y, "train")
    _check_xy(test_x, test_y, "test")
    l2s = [float(l2)] if isinstance(l2, (int, float)) else [float(v) for v in l2]
    if not l2s or min(l2s) < 0:
        raise ValueError(f"l2 must be >= 0 (or a non-empty list of such), got {l2!r}")
    if len(l2s) > 1 and (val_x is None or val_y is None):
        raise ValueError("several l2 values need val_x and val_y to choose among them")
    if val_x is not None:
        _check_xy(val_x, val_y, "val")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
    labels = [train_y, test_y] + ([val_y] if val_y is not None else [])
    k = n_classes or int(max(int(t.max()) for t in labels)) + 1

    scale = _standardizer(train_x.double())
    xtr, xte = scale(train_x.double()), scale(test_x.double())
    xva = scale(val_x.double()) if val_x is not None else None
    best = None
    for lam in l2s:
        if method == "lbfgs":
            head = _fit_lbfgs(xtr, train_y, k, lam, max_iter)
        else:
            head = _fit_closed_form(xtr, train_y, k, lam)
        val_acc = _accuracy(head, xva, val_y)[0] if xva is not None else None
        if best is None or (val_acc is not None and val_acc > best[1]):
            best = (head, val_acc, lam)
    head, val_acc, lam = best
    train_acc = _accuracy(head, xtr, train_y)[0]
    acc, pred = _accuracy(head, xte, test_y)
    return ProbeResult(acc, pred.cpu(), train_acc, lam, val_acc, {"method": method, "n_classes": k})


def linear_probe_augmented(
    encoder: nn.Module,
    train: Any,
    test: Any,
    augment: Callable[..., Tensor],
    normalize_fn: Callable[[Tensor], Tensor],
    n_classes: int,
    label: str = "fine",
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    val: Any = None,
    device: str | torch.device | None = None,
    generator: torch.Generator | None = None,
    amp: bool = False,
) -> ProbeResult:
    """The paper's linear-probe protocol on a frozen encoder.

    For ``epochs`` epochs, every shuffled batch of *training* images gets one
    fresh augmented view (``augment(x, views=1)``), goes through the frozen
    encoder (eval mode, no gradients) and trains a linear head with AdamW
    (``lr``, ``weight_decay``) on cross-entropy. Official values: 100 epochs,
    lr 1e-3. If ``val`` is given, the head of the epoch with the best
    validation accuracy (unaugmented images) is kept; otherwise the last.
    Test images are embedded once, unaugmented, and used only for the
    reported accuracy.

    Args:
        encoder: frozen encoder, float ``(b, C, H, W)`` → ``(b, D)``.
        train, test, val: :class:`spreadcon.data.Split` objects, or
            ``(uint8 images, labels)`` tuples.
        augment: ``augment(x_uint8, views=1, generator=...)`` → float
            ``(b, 1, C, H, W)``, e.g. :class:`spreadcon.data.augment.TwoViewAugment`.
        normalize_fn: uint8 → float without augmentation (evaluation images).
        n_classes: number of classes of ``label``.
        label: which labels of a Split to probe (``"fine"`` or ``"coarse"``).
        generator: seeds the shuffling and augmentation.

    Returns:
        :class:`ProbeResult` (``l2`` holds the weight decay; ``details["epoch"]``
        the kept epoch, 1-based).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    dev, was_training = _prepare(encoder, device)
    try:
        test_x = embed(encoder, _only_images(test), normalize_fn, batch_size, dev, amp).to(dev)
        test_y = _labels_of(test, label).to(dev)
        val_x = val_y = None
        if val is not None:
            val_x = embed(encoder, _only_images(val), normalize_fn, batch_size, dev, amp).to(dev)
            val_y = _labels_of(val, label).to(dev)
        head = nn.Linear(encoder_out_dim(encoder, test_x), n_classes).to(dev)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        best_state, best_val, best_epoch = None, -1.0, epochs
        for epoch in range(1, epochs + 1):
            encoder.eval()
            for x, y in _iter_images(train, batch_size, label, shuffle=True, generator=generator):
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with torch.no_grad():
                    view = augment(x, views=1, generator=generator)[:, 0]
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
                        z = encoder(view)
                loss = F.cross_entropy(head(z.float()), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if val_x is not None:
                acc = _accuracy(head, val_x, val_y)[0]
                if acc > best_val:
                    best_val, best_epoch = acc, epoch
                    best_state = {k: v.clone() for k, v in head.state_dict().items()}
        if best_state is not None:
            head.load_state_dict(best_state)
    finally:
        encoder.train(was_training)
    acc, pred = _accuracy(head, test_x, test_y)
    val_acc = best_val if val_x is not None else None
    details = {"method": "adamw_augmented", "epoch": best_epoch, "epochs": epochs, "lr": lr}
    return ProbeResult(acc, pred.cpu(), float("nan"), weight_decay, val_acc, details)


def encoder_out_dim(encoder: nn.Module, sample: Tensor) -> int:
    """``encoder.out_dim`` if it has one, else the width of ``sample`` embeddings."""
    return int(getattr(encoder, "out_dim", sample.shape[1]))


def _only_images(source: Any) -> Any:
    return source[0] if isinstance(source, tuple) else source


def _labels_of(source: Any, label: str) -> Tensor:
    if isinstance(source, tuple):
        return source[1]
    return getattr(source, label)


# ----------------------------------------------------------------------- kNN


@torch.no_grad()
def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    k: int = 20,
    batch_size: int = 1024,
) -> float:
    """Cosine k-nearest-neighbour accuracy.

    Each test point takes the majority label of its ``k`` most cosine-similar
    training points; a tie goes to the tied class with the larger summed
    similarity (``score = count + Σ sim / (k + 1)``, which never overturns a
    strict majority because ``|Σ sim| ≤ k``).

    Args:
        train_x, test_x: float ``(N, D)``; train_y, test_y: int64 ``(N,)``.
        k: neighbours (capped at the number of training points).
        batch_size: test points per similarity block.

    Returns:
        Accuracy in [0, 1].

    Example:
        >>> x = torch.tensor([[1., 0], [0, 1], [1, .1], [.1, 1]]); y = torch.tensor([0, 1, 0, 1])
        >>> knn_accuracy(x, y, x, y, k=1)
        1.0
    """
    _check_xy(train_x, train_y, "train")
    _check_xy(test_x, test_y, "test")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    k = min(k, len(train_x))
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    tr = F.normalize(train_x.float(), dim=1)
    correct = 0
    for xs, ys in zip(test_x.split(batch_size), test_y.split(batch_size)):
        sim = F.normalize(xs.float(), dim=1) @ tr.T
        top, idx = sim.topk(k, dim=1)
        neigh = train_y[idx]
        score = torch.zeros(len(xs), n_classes)
        score.scatter_add_(1, neigh, torch.ones_like(top))
        score.scatter_add_(1, neigh, top / (k + 1))
        correct += (score.argmax(1) == ys).sum().item()
    return correct / len(test_x)


# -------------------------------------------------------------------- spread


@torch.no_grad()
def spread_metrics(z: Tensor, labels: Tensor) -> dict[str, Any]:
    """Within-class spread of L2-normalised embeddings.

    With ``u_i = z_i / ||z_i||`` and ``n_y`` points in class ``y``:

    * ``within_cosine[y] = 1/(n_y(n_y-1)) Σ_{i≠j, y_i=y_j=y} <u_i, u_j>``
      (1 for a collapsed class; needs ``n_y ≥ 2``, else NaN);
    * ``spread[y] = 1 - ||μ_y||²`` with ``μ_y = mean_{i: y_i=y} u_i``
      (0 for a collapsed class, ``1 - 1/n_y`` for orthogonal points).

    They are tied by ``||μ_y||² = 1/n_y + (1 - 1/n_y)·within_cosine[y]``.
    Both are computed from the class sums ``s_y = Σ u_i``:
    ``Σ_{i≠j} <u_i,u_j> = ||s_y||² - n_y``.

    Args:
        z: float ``(N, D)`` embeddings (raw; normalised here).
        labels: int64 ``(N,)`` class ids.

    Returns:
        ``{"within_cosine": float, "spread": float, "classes": int64 (K,),
        "within_cosine_per_class": (K,), "spread_per_class": (K,),
        "count_per_class": (K,)}``; the averages are unweighted means over the
        classes present (NaN entries skipped).

    Example:
        >>> m = spread_metrics(torch.eye(3), torch.zeros(3, dtype=torch.long))
        >>> round(m["within_cosine"], 6), round(m["spread"], 6)
        (0.0, 0.666667)
    """
    _check_xy(z, labels, "z")
    u = F.normalize(z.double(), dim=1)
    classes, inv = labels.unique(return_inverse=True)
    n = torch.bincount(inv, minlength=len(classes)).double()
    sums = torch.zeros(len(classes), u.shape[1], dtype=u.dtype).index_add_(0, inv, u)
    sq = sums.pow(2).sum(1)
    pairs = n * (n - 1)
    within = torch.where(pairs > 0, (sq - n) / pairs.clamp_min(1), torch.full_like(n, float("nan")))
    spread = 1.0 - sq / n.pow(2)
    ok = ~torch.isnan(within)
    return {
        "within_cosine": within[ok].mean().item() if ok.any() else float("nan"),
        "spread": spread.mean().item(),
        "classes": classes,
        "within_cosine_per_class": within.float(),
        "spread_per_class": spread.float(),
        "count_per_class": n.long(),
    }


# ------------------------------------------------------ clustering and groups


def _kmeans(x, k: int, seed: int, n_init: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


def subclass_ami(
    z: Tensor, coarse: Tensor, fine: Tensor, seed: int = 0, n_init: int = 10, normalize: bool = True
) -> dict[str, Any]:
    """Subclass recovery: per-coarse-class k-means scored against fine labels by AMI.

    For each coarse class ``c`` with ``k_c ≥ 2`` distinct fine labels among its
    points, k-means with ``k = k_c`` clusters runs on that class's embeddings
    (L2-normalised first when ``normalize``), and the clustering is compared
    to the fine labels with the adjusted mutual information (1: perfect
    recovery, ≈0: chance). Coarse classes with one fine label are skipped.

    Args:
        z: float ``(N, D)``; coarse, fine: int64 ``(N,)``.
        seed: k-means ``random_state``.
        n_init: k-means restarts.
        normalize: cluster ``z / ||z||`` (the geometry the losses act on).

    Returns:
        ``{"ami": mean over scored coarse classes, "per_class": {c: ami}}``.
    """
    from sklearn.metrics import adjusted_mutual_info_score

    _check_xy(z, coarse, "z")
    if fine.shape != coarse.shape:
        raise ValueError(f"fine must have shape {tuple(coarse.shape)}, got {tuple(fine.shape)}")
    x = F.normalize(z.double(), dim=1) if normalize else z.double()
    per_class = {}
    for c in coarse.unique().tolist():
        m = coarse == c
        f = fine[m]
        k = len(f.unique())
        if k < 2 or m.sum() <= k:
            continue
        pred = _kmeans(x[m].numpy(), k, seed, n_init)
        per_class[int(c)] = float(adjusted_mutual_info_score(f.numpy(), pred))
    ami = sum(per_class.values()) / len(per_class) if per_class else float("nan")
    return {"ami": ami, "per_class": per_class}


@dataclass
class SubgroupResult:
    """Subgroups inferred per class (GEORGE step 1).

    Attributes:
        groups: int64 ``(N,)`` global subgroup ids; class ``y``'s clusters get
            consecutive ids starting at ``offset[y]``.
        n_groups: total number of inferred subgroups.
        k_per_class: chosen number of clusters per class.
        silhouette_per_class: ``{y: {k: silhouette}}`` for every k tried.
        centers: ``{y: (k, D) float}`` cluster centres (in the clustered space),
            so new points can be assigned with :meth:`assign`.
        normalize: whether the embeddings were L2-normalised before clustering.
    """

    groups: Tensor
    n_groups: int
    k_per_class: dict[int, int]
    silhouette_per_class: dict[int, dict[int, float]]
    centers: dict[int, Tensor]
    offset: dict[int, int]
    normalize: bool = True

    def assign(self, z: Tensor, labels: Tensor) -> Tensor:
        """Subgroup ids for new points: nearest centre within their class."""
        x = F.normalize(z.double(), dim=1) if self.normalize else z.double()
        out = torch.empty(len(z), dtype=torch.long)
        for y, c in self.centers.items():
            m = labels == y
            if m.any():
                out[m] = torch.cdist(x[m], c).argmin(1) + self.offset[y]
        return out


def infer_subgroups(
    z: Tensor,
    labels: Tensor,
    max_k: int = 4,
    min_silhouette: float = 0.1,
    seed: int = 0,
    n_init: int = 10,
    normalize: bool = True,
    silhouette_sample: int = 2000,
) -> SubgroupResult:
    """GEORGE step 1: cluster each class's embeddings, choosing k by silhouette.

    For each class, k-means runs for every ``k`` in ``2..max_k`` and the ``k``
    with the largest silhouette score is kept. The silhouette is undefined for
    one cluster, so ``k = 1`` (no subgroups) is chosen instead when even the
    best silhouette is below ``min_silhouette`` (default 0.1: "no substantial
    structure" in Kaufman & Rousseeuw's reading of silhouette widths is below
    0.25; we use a laxer bar because high-dimensional clusters score low).
    Sohoni et al. (2020) cluster a UMAP projection with Gaussian mixtures; we
    cluster the (L2-normalised) embeddings directly with k-means, which keeps
    the dependency to scikit-learn.

    Args:
        z: float ``(N, D)`` embeddings; labels: int64 ``(N,)`` classes.
        max_k: largest number of clusters tried per class (``≥ 1``).
        min_silhouette: below this best silhouette a class stays one group.
        seed: k-means and silhouette-subsample ``random_state``.
        n_init: k-means restarts.
        normalize: cluster ``z / ||z||``.
        silhouette_sample: at most this many points per silhouette score.

    Returns:
        :class:`SubgroupResult`.
    """
    from sklearn.metrics import silhouette_score

    _check_xy(z, labels, "z")
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k!r}")
    x = F.normalize(z.double(), dim=1) if normalize else z.double()
    groups = torch.empty(len(z), dtype=torch.long)
    k_per_class, sil, centers, offset = {}, {}, {}, {}
    next_id = 0
    for y in labels.unique().tolist():
        m = labels == y
        xy = x[m]
        xn = xy.numpy()
        best_k, best_assign, scores = 1, torch.zeros(len(xy), dtype=torch.long), {}
        best_score = -math.inf
        for k in range(2, min(max_k, len(xy) - 1) + 1):
            a = _kmeans(xn, k, seed, n_init)
            if len(set(a.tolist())) < 2:
                continue
            s = float(silhouette_score(xn, a, sample_size=min(silhouette_sample, len(xn)), random_state=seed))
            scores[k] = s
            if s > best_score:
                best_score, best_k, best_assign = s, k, torch.as_tensor(a, dtype=torch.long)
        if best_score < min_silhouette:
            best_k, best_assign = 1, torch.zeros(len(xy), dtype=torch.long)
        # relabel to 0..k-1 and compute centres in the clustered space
        uniq, best_assign = best_assign.unique(return_inverse=True)
        best_k = len(uniq)
        centers[int(y)] = torch.stack([xy[best_assign == j].mean(0) for j in range(best_k)])
        groups[m] = best_assign + next_id
        offset[int(y)] = next_id
        k_per_class[int(y)] = best_k
        sil[int(y)] = scores
        next_id += best_k
    return SubgroupResult(groups, next_id, k_per_class, sil, centers, offset, normalize)


# ------------------------------------------------------- ERM and Group DRO


def train_linear_head(
    x: Tensor,
    y: Tensor,
    groups: Tensor | None = None,
    method: str = "erm",
    n_classes: int | None = None,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 512,
    eta: float = 0.01,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """A linear head on fixed features, by ERM or online Group DRO.

    Features are standardised with their own mean and standard deviation (the
    returned head includes that map, so apply it to raw features).

    * ``method="erm"``: minimise the mean cross-entropy.
    * ``method="group_dro"`` (Sagawa et al. 2020, Algorithm 1): keep group
      weights ``q`` on the simplex, start uniform. Each step, with ``ℓ_g`` the
      mean loss of group ``g`` in the minibatch,
      ``q_g ← q_g · exp(η · ℓ_g)`` for the groups present, ``q ← q / Σq``, and
      the head takes a gradient step on ``Σ_g q_g ℓ_g``.

    Optimiser: AdamW (``lr``, ``weight_decay``) on shuffled minibatches.

    Args:
        x: float ``(N, D)``; y: int64 ``(N,)`` labels.
        groups: int64 ``(N,)`` group ids (needed for Group DRO).
        method: ``"erm"`` or ``"group_dro"``.
        n_classes: default ``max(y) + 1``.
        epochs, lr, weight_decay, batch_size: optimisation.
        eta: the exponentiated-gradient step size of ``q``.
        seed: shuffling and initialisation.

    Returns:
        ``(head, info)``: ``head`` maps raw ``(N, D)`` features to logits;
        ``info["q"]`` is the final group-weight vector (Group DRO).
    """
    if method not in {"erm", "group_dro"}:
        raise ValueError(f"method must be 'erm' or 'group_dro', got {method!r}")
    _check_xy(x, y, "x")
    if method == "group_dro":
        if groups is None or groups.shape != y.shape:
            raise ValueError("method='group_dro' needs groups with the same shape as y")
        if eta <= 0:
            raise ValueError(f"eta must be > 0, got {eta!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    gen = torch.Generator().manual_seed(seed)
    k = n_classes or int(y.max()) + 1
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    xs = (x.float() - mean) / std
    linear = nn.Linear(x.shape[1], k)
    with torch.no_grad():
        linear.weight.normal_(0.0, 0.01, generator=gen)
        linear.bias.zero_()
    opt = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
    n_groups = int(groups.max()) + 1 if groups is not None else 1
    q = torch.full((n_groups,), 1.0 / n_groups)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(xs), generator=gen).split(batch_size):
                losses = F.cross_entropy(linear(xs[idx]), y[idx], reduction="none")
                if method == "erm":
                    loss = losses.mean()
                else:
                    g = groups[idx]
                    sums = torch.zeros(n_groups).index_add(0, g, losses)
                    counts = torch.bincount(g, minlength=n_groups).float()
                    present = counts > 0
                    group_loss = sums / counts.clamp_min(1)
                    with torch.no_grad():
                        q = torch.where(present, q * torch.exp(eta * group_loss.detach()), q)
                        q = q / q.sum()
                    loss = (q * group_loss).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    head = nn.Sequential(_Standardize(mean, std), linear).eval()
    return head, {"q": q, "method": method}


class _Standardize(nn.Module):
    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


@torch.no_grad()
def group_accuracies(pred: Tensor, y: Tensor, groups: Tensor) -> dict[str, Any]:
    """Per-group, worst-group and average accuracy.

    Returns:
        ``{"worst_group_acc": min over groups present, "avg_acc": accuracy over
        all points, "group_mean_acc": unweighted mean over groups,
        "per_group": {g: acc}, "group_counts": {g: n}}``.
    """
    correct = (pred == y).double()
    per, counts = {}, {}
    for g in groups.unique().tolist():
        m = groups == g
        per[int(g)] = correct[m].mean().item()
        counts[int(g)] = int(m.sum())
    return {
        "worst_group_acc": min(per.values()),
        "avg_acc": correct.mean().item(),
        "group_mean_acc": sum(per.values()) / len(per),
        "per_group": per,
        "group_counts": counts,
    }


def _agreement(inferred: Tensor, true: Tensor, labels: Tensor) -> dict[str, Any]:
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    ami, ari = {}, {}
    for y in labels.unique().tolist():
        m = labels == y
        a, b = inferred[m].numpy(), true[m].numpy()
        ami[int(y)] = float(adjusted_mutual_info_score(b, a))
        ari[int(y)] = float(adjusted_rand_score(b, a))
    return {
        "group_ami": sum(ami.values()) / len(ami),
        "group_ari": sum(ari.values()) / len(ari),
        "group_ami_per_class": ami,
        "group_ari_per_class": ari,
    }


def worst_group(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    test_groups: Tensor,
    train_groups: Tensor | None = None,
    groups: str = "inferred",
    max_k: int = 4,
    min_silhouette: float = 0.1,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 512,
    eta: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """Worst-group robustness as in GEORGE (Sohoni et al. 2020).

    1. ``groups="inferred"``: cluster each class's training embeddings
       (:func:`infer_subgroups`, k by silhouette up to ``max_k``);
       ``"true"``: use ``train_groups`` (the oracle);
       ``"none"``: no groups, plain ERM (the baseline).
    2. Train a linear head on the frozen training embeddings with Group DRO on
       those groups (:func:`train_linear_head`).
    3. Score it on the test set's TRUE groups: worst-group accuracy and
       average accuracy (over all test points).

    The true training groups, when given, are used only to report how well the
    inferred groups match them (``group_ami``/``group_ari``, per class) unless
    ``groups="true"``. Test labels and groups are used only for scoring.

    Returns:
        ``{"worst_group_acc", "avg_acc", "group_mean_acc", "per_group",
        "group_counts", "groups", "n_groups", "k_per_class", ...}`` plus
        ``group_ami``/``group_ari`` when ``train_groups`` is given and groups
        were inferred.

    Example:
        See ``tests/test_evaluate.py::test_group_dro_beats_erm_on_spurious_features``.
    """
    if groups not in {"inferred", "true", "none"}:
        raise ValueError(f"groups must be 'inferred', 'true' or 'none', got {groups!r}")
    _check_xy(train_x, train_y, "train")
    _check_xy(test_x, test_y, "test")
    if test_groups.shape != test_y.shape:
        raise ValueError(f"test_groups must have shape {tuple(test_y.shape)}, got {tuple(test_groups.shape)}")
    if groups == "true" and train_groups is None:
        raise ValueError("groups='true' needs train_groups")
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    info: dict[str, Any] = {"groups": groups}
    if groups == "none":
        head, fit = train_linear_head(train_x, train_y, None, "erm", n_classes, epochs, lr,
                                      weight_decay, batch_size, eta, seed)
    else:
        if groups == "inferred":
            sub = infer_subgroups(train_x, train_y, max_k=max_k, min_silhouette=min_silhouette, seed=seed)
            g = sub.groups
            info.update(n_groups=sub.n_groups, k_per_class=sub.k_per_class,
                        silhouette_per_class=sub.silhouette_per_class)
            if train_groups is not None:
                info.update(_agreement(g, train_groups, train_y))
        else:
            g = train_groups.unique(return_inverse=True)[1]
            info.update(n_groups=int(g.max()) + 1)
        head, fit = train_linear_head(train_x, train_y, g, "group_dro", n_classes, epochs, lr,
                                      weight_decay, batch_size, eta, seed)
        info["q"] = fit["q"].tolist()
    with torch.no_grad():
        pred = head(test_x).argmax(1)
    return {**group_accuracies(pred, test_y, test_groups), **info}
