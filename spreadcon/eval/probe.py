"""Linear probes on frozen encoders, and a linear head by ERM or Group DRO.

| function | what it fits |
|---|---|
| :func:`linear_probe` | logistic regression by L-BFGS, or ridge in closed form, on fixed embeddings |
| :func:`linear_probe_augmented` | the paper's protocol: 100 epochs of AdamW 1e-3 on augmented training images |
| :func:`train_linear_head` | a head on fixed features by ERM or online Group DRO (GEORGE's last layer) |

Model selection never touches test data: the L2 strength and the probe epoch
are chosen on the validation arguments only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spreadcon.eval._checks import check_xy
from spreadcon.eval.embed import _iter_images, _labels_of, _only_images, _prepare, embed, encoder_out_dim
from spreadcon.train.dro_update import group_dro_step

__all__ = ["ProbeResult", "linear_probe", "linear_probe_augmented", "train_linear_head"]


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
    *,
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
    check_xy(train_x, train_y, "train")
    check_xy(test_x, test_y, "test")
    l2s = [float(l2)] if isinstance(l2, (int, float)) else [float(v) for v in l2]
    if not l2s or min(l2s) < 0:
        raise ValueError(f"l2 must be >= 0 (or a non-empty list of such), got {l2!r}")
    if len(l2s) > 1 and (val_x is None or val_y is None):
        raise ValueError("several l2 values need val_x and val_y to choose among them")
    if val_x is not None:
        check_xy(val_x, val_y, "val")
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
    *,
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
        test_x = embed(encoder, _only_images(test), normalize_fn, batch_size=batch_size, device=dev, amp=amp).to(dev)
        test_y = _labels_of(test, label).to(dev)
        val_x = val_y = None
        if val is not None:
            val_x = embed(encoder, _only_images(val), normalize_fn, batch_size=batch_size, device=dev,
                          amp=amp).to(dev)
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


def train_linear_head(
    x: Tensor,
    y: Tensor,
    groups: Tensor | None = None,
    method: str = "erm",
    *,
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
      the head takes a gradient step on ``Σ_g q_g ℓ_g``. That update is
      :func:`spreadcon.train.dro_update.group_dro_step`, the one the
      whole-network retraining uses too.

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
    check_xy(x, y, "x")
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
                    loss, q = group_dro_step(losses, groups[idx], q, eta)
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
