"""Chapter 3's experiment: which symmetry breaker makes an L_spread encoder keep latent subclasses.

The losses of chapter 3 are invariant under any label-preserving bijection
``pi`` of the inputs that commutes with the augmentation kernel, so an
unconstrained encoder has no reason to keep the subclasses: ``f`` and
``f o pi`` are equally good. Each *setting* below breaks one hypothesis of
that statement, on the synthetic data of ``spreadcon.theory.model.make_subclass_data``
(training sees the coarse label only):

============  ==========================  ===========================================
setting       encoder / extra term        views
============  ==========================  ===========================================
baseline      MLP                         the sample itself, twice (no augmentation)
linear        one linear map              the sample itself, twice
autoencoder   MLP + class-conditional     the sample itself, twice
              decoder ``g(u, onehot(y))``
noise         MLP                         ``x + s * eps``, ``eps ~ N(0, I)`` per view
mask          MLP                         ``x * m / (1 - p)``, ``m_k ~ Bernoulli(1-p)``
oracle        MLP                         ``centre[fine] + noise * eps``: reads the fine
                                          label, an **upper bound**, not a method
============  ==========================  ===========================================

*Class-conditional autoencoder* (the definition used here): the decoder
sees the normalised embedding ``u = z / ||z||`` **and** the class, as the
concatenation ``[u, onehot(y)]``, and reconstructs ``x`` under mean squared
error weighted by ``recon_weight``. Feeding ``u`` (not ``z``) ties the
reconstruction to the geometry the losses act on; the class input lets the
decoder spend ``u`` on the within-class position instead of the class.
``autoencoder-z`` is the same with a decoder that sees ``u`` only.

Evaluation is on the normalised test embeddings: per-class k-means AMI
against the fine labels (``spreadcon.eval.geometry.subclass_ami``), a fine-label
linear probe, the coarse probe (the classes must stay separable) and the
within-class cosine. The reference is the raw input: the same AMI of k-means
on ``x`` itself (``raw_input_ami``).

Nothing here is imported by ``import spreadcon``; it needs scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spreadcon.theory.model import MECHANISMS, SubclassData, _subclass_views_at, make_subclass_data, mlp

__all__ = [
    "train_synthetic",
    "SETTINGS",
    "UPPER_BOUNDS",
    "ClassConditionalDecoder",
    "noise_views",
    "mask_views",
    "train_setting",
    "embedding_scores",
    "raw_input_ami",
    "StudyConfig",
    "Study",
    "run_study",
]

SETTINGS = ("baseline", "linear", "autoencoder", "autoencoder-z", "noise", "mask", "oracle")
#: settings whose views read the fine label: reported as labelled upper bounds, never as methods.
UPPER_BOUNDS = ("oracle",)


class ClassConditionalDecoder(nn.Module):
    """Decoder ``g(u, y) = MLP([u, onehot(y)])``; with ``conditional=False``, ``MLP(u)``.

    Args:
        emb_dim: size of ``u``.
        num_classes: ``K`` (size of the one-hot class input).
        out_dim: size of the reconstruction (the input dimension).
        hidden, depth: of the ReLU MLP.
        conditional: feed the class.

    Example:
        >>> dec = ClassConditionalDecoder(4, 2, 8)
        >>> u = torch.randn(3, 4)
        >>> y0, y1 = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
        >>> dec(u, y0).shape, bool((dec(u, y0) != dec(u, y1)).any())
        (torch.Size([3, 8]), True)
    """

    def __init__(self, emb_dim: int, num_classes: int, out_dim: int, hidden: int = 128, depth: int = 2,
                 conditional: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.num_classes, self.conditional = int(num_classes), bool(conditional)
        self.net = mlp(emb_dim + (self.num_classes if conditional else 0), out_dim, hidden=hidden, depth=depth)

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.conditional:
            u = torch.cat([u, F.one_hot(y, self.num_classes).to(u.dtype)], dim=1)
        return self.net(u)


def noise_views(x: torch.Tensor, std: float, views: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian-noise augmentation: ``(B, views, d)`` with view ``v = x + std * eps_v``. Never reads a label.

    Example:
        >>> noise_views(torch.zeros(2, 3), 0.0).shape
        torch.Size([2, 2, 3])
    """
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    eps = torch.randn((x.shape[0], views, x.shape[1]), generator=generator, dtype=x.dtype)
    return x[:, None, :] + std * eps


def mask_views(x: torch.Tensor, drop: float, views: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-coordinate masking (the vector analogue of a random crop): each coordinate is zeroed with
    probability ``drop`` independently per view, the rest scaled by ``1 / (1 - drop)``. Never reads a label.

    Example:
        >>> v = mask_views(torch.ones(1, 1000), 0.5, generator=torch.Generator().manual_seed(0))
        >>> sorted(set(v.flatten().tolist()))
        [0.0, 2.0]
    """
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop!r}")
    keep = torch.rand((x.shape[0], views, x.shape[1]), generator=generator) >= drop
    return x[:, None, :] * keep.to(x.dtype) / (1 - drop)


def train_setting(
    data: SubclassData,
    setting: str,
    *,
    alpha: float = 0.5,
    temperature: float = 0.5,
    out_dim: int = 32,
    steps: int = 2000,
    batch_size: int = 96,
    lr: float = 1e-3,
    recon_weight: float = 1.0,
    noise_std: float = 2.0,
    mask_drop: float = 0.5,
    seed: int = 0,
    eval_every: int = 0,
    on_eval: Callable[[int, nn.Module], None] | None = None,
    decoder_input: str = "u",
) -> nn.Module:
    """Train an encoder with ``L_spread`` (Khosla's L_out form) on the coarse labels, in one setting.

    Args:
        data: training data; ``data.fine`` is read only by ``"oracle"``.
        setting: one of ``SETTINGS`` (the module table).
        alpha, temperature: of ``SpreadLoss``.
        out_dim: embedding size.
        steps, batch_size, lr: Adam on random mini-batches.
        recon_weight: weight of the reconstruction term (autoencoders).
        noise_std: ``s`` of ``"noise"`` (the data's own noise is ``data.noise``).
        mask_drop: ``p`` of ``"mask"``.
        seed: initialisation, batches and augmentation.
        eval_every, on_eval: ``on_eval(step, encoder)`` (eval mode) at step 0, every
            ``eval_every`` steps and after the last; batches come from a private
            generator, so the run is the same with or without it.
        decoder_input: what the autoencoders' decoder reconstructs from: ``"u"``
            (the normalised embedding, the definition above) or ``"z"`` (the raw
            encoder output, the first edition's unconditional autoencoder).

    Returns:
        The encoder in eval mode, ``(N, d) -> (N, out_dim)``.
    """
    from spreadcon.losses import SpreadLoss, reconstruction_loss
    from spreadcon.models import build_encoder

    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0, got {eval_every!r}")
    if decoder_input not in ("u", "z"):
        raise ValueError(f"decoder_input must be 'u' or 'z', got {decoder_input!r}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dim = data.x.shape[1]
    if setting == "linear":
        lin = build_encoder("linear", image_shape=(1, 1, dim), out_dim=out_dim)
        encoder: nn.Module = nn.Sequential(nn.Unflatten(1, (1, 1, dim)), lin)
    else:
        encoder = mlp(dim, out_dim)
    decoder = None
    if setting.startswith("autoencoder"):
        K = int(data.coarse.max()) + 1
        decoder = ClassConditionalDecoder(out_dim, K, dim, conditional=setting == "autoencoder")
    params = list(encoder.parameters()) + (list(decoder.parameters()) if decoder is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = SpreadLoss(alpha=alpha, temperature=temperature)
    n = len(data.coarse)

    def report(step: int) -> None:
        if on_eval is not None:
            on_eval(step, encoder.eval())
            encoder.train()

    report(0)
    for step in range(1, steps + 1):
        idx = torch.randperm(n, generator=g)[: min(batch_size, n)]
        x = data.x[idx]
        if setting == "noise":
            views = noise_views(x, noise_std, generator=g)
        elif setting == "mask":
            views = mask_views(x, mask_drop, generator=g)
        elif setting == "oracle":
            views = _subclass_views_at(data, idx, g)
        else:
            views = x.unsqueeze(1).expand(-1, 2, -1)
        z = encoder(views.flatten(0, 1)).view(len(idx), 2, -1)
        loss = loss_fn(z, data.coarse[idx])
        if decoder is not None:
            u = F.normalize(z[:, 0], dim=1) if decoder_input == "u" else z[:, 0]
            loss = loss + recon_weight * reconstruction_loss(decoder(u, data.coarse[idx]), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == steps or (eval_every and step % eval_every == 0):
            report(step)
    return encoder.eval()


def embedding_scores(z_train: torch.Tensor, train: SubclassData, z_test: torch.Tensor, test: SubclassData,
                     seed: int = 0, normalize: bool = True) -> dict[str, float]:
    """Subclass recovery of embeddings (normalised first when ``normalize``, the geometry of the losses).

    Returns:
        ``{"ami", "fine_acc", "coarse_acc", "within_cosine", "between_cosine"}``: per-class
        k-means AMI on the test set, fine and coarse linear probes (fit on
        train, scored on test), and the mean cosines within and between classes on test.
    """
    from spreadcon.eval.geometry import subclass_ami
    from spreadcon.eval.probe import linear_probe
    from spreadcon.theory.model import class_cosines

    if normalize:
        z_train, z_test = F.normalize(z_train.float(), dim=1), F.normalize(z_test.float(), dim=1)
    fine = linear_probe(z_train, train.fine, z_test, test.fine, l2=1e-3).accuracy
    coarse = linear_probe(z_train, train.coarse, z_test, test.coarse, l2=1e-3).accuracy
    ami = subclass_ami(z_test, test.coarse, test.fine, seed=seed, n_init=3, normalize=normalize)["ami"]
    within, between = class_cosines(z_test, test.coarse)
    return {"ami": ami, "fine_acc": fine, "coarse_acc": coarse, "within_cosine": within, "between_cosine": between}


def raw_input_ami(data: SubclassData, seed: int = 0, n_init: int = 3) -> float:
    """The reference: per-class k-means AMI on the raw inputs ``x`` (Euclidean, not normalised).

    Example:
        >>> d = make_subclass_data(K=2, m=2, n_per_subclass=30, dim=8, subclass_separation=8.0)
        >>> raw_input_ami(d) > 0.9
        True
    """
    from spreadcon.eval.geometry import subclass_ami

    return float(subclass_ami(data.x, data.coarse, data.fine, seed=seed, n_init=n_init, normalize=False)["ami"])


@dataclass(frozen=True)
class StudyConfig:
    """One block of settings for chapter 3's study (CPU defaults: a few minutes on 2 cores).

    Data: ``K`` classes x ``m`` subclasses x ``n_per_subclass``, in ``dim``
    dimensions, subclass offset ``separation`` (the data's noise std is 1);
    half trains, half tests. Training: ``steps`` Adam steps of batch ``batch``
    (``alpha``, ``temperature`` of L_spread), evaluated every ``eval_every``.
    ``seeds`` each draw new data and a new initialisation.
    """

    settings: tuple[str, ...] = SETTINGS
    seeds: tuple[int, ...] = (0, 1, 2)
    K: int = 2
    m: int = 4
    n_per_subclass: int = 60
    dim: int = 32
    separation: float = 3.0
    alpha: float = 0.5
    temperature: float = 0.5
    steps: int = 2000
    eval_every: int = 250
    batch: int = 96
    noise_std: float = 2.0  # twice the data's noise: at 1.0 the AMI peaks early (0.75) and decays to 0.46 by 4000 steps
    mask_drop: float = 0.5  # at 0.3 the AMI decays from 0.71 to 0.24 by 4000 steps (seed 0 exploration)
    recon_weight: float = 1.0  # 10.0 gave the same AMI (0.09 at 3000 steps, seed 0)


@dataclass
class Study:
    """Curves of chapter 3's study.

    Attributes:
        config: the ``StudyConfig``.
        steps: evaluation steps, ``(E,)``.
        curves: ``curves[setting][metric]`` float array ``(seeds, E)``.
        raw_ami: the raw input's AMI per seed (test split), ``(seeds,)``.
    """

    config: StudyConfig
    steps: np.ndarray
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    raw_ami: np.ndarray | None = None

    def final(self, setting: str, metric: str = "ami") -> tuple[float, float]:
        """Mean and standard deviation over seeds at the last step."""
        v = self.curves[setting][metric][:, -1]
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _study_split(config: StudyConfig, seed: int) -> tuple[SubclassData, SubclassData]:
    """Seed ``seed``'s data, halved into train and test (the same halves in every process)."""
    data = make_subclass_data(K=config.K, m=config.m, n_per_subclass=config.n_per_subclass, dim=config.dim,
                              subclass_separation=config.separation, seed=seed)
    return data.split(0.5, torch.Generator().manual_seed(seed))


def _study_run(config: StudyConfig, seed: int, setting: str) -> list[dict[str, float]]:
    """One setting and seed of the study: its test scores at every evaluation step (one job of ``run_study``)."""
    tr, te = _study_split(config, seed)
    rows: list[dict[str, float]] = []

    def on_eval(step: int, enc: nn.Module) -> None:
        with torch.no_grad():
            rows.append(embedding_scores(enc(tr.x), tr, enc(te.x), te, seed=seed))

    train_setting(tr, setting, alpha=config.alpha, temperature=config.temperature, steps=config.steps,
                  batch_size=config.batch, noise_std=config.noise_std, mask_drop=config.mask_drop,
                  recon_weight=config.recon_weight, seed=seed, eval_every=config.eval_every or config.steps,
                  on_eval=on_eval)
    return rows


def run_study(config: StudyConfig = StudyConfig(), progress: Callable[[str], None] | None = None, *,
              workers: int | None = 1) -> Study:
    """Train every setting for every seed and record the test scores along training.

    Args:
        config: the study.
        progress: called with one line per finished (seed, setting).
        workers: processes that share the (seed, setting) runs
            (:func:`spreadcon.util.parallel.run_jobs`; ``None``: one per core).
            Every run seeds itself and runs on one torch thread, so the curves
            are the same, bit for bit, with any number of workers.

    Example:
        >>> cfg = StudyConfig(settings=("baseline",), seeds=(0,), n_per_subclass=10, steps=4, eval_every=2)
        >>> s = run_study(cfg)
        >>> s.steps.tolist(), s.curves["baseline"]["ami"].shape
        ([0, 2, 4], (1, 3))
    """
    from spreadcon.util.parallel import run_jobs

    unknown = [s for s in config.settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"settings must be among {SETTINGS}, got {unknown}")
    every = config.eval_every or config.steps
    steps = np.array(sorted(set(range(0, config.steps + 1, every)) | {config.steps}))
    study = Study(config=config, steps=steps)
    jobs = [(config, seed, setting) for seed in config.seeds for setting in config.settings]
    for (_, seed, setting), rows in zip(jobs, run_jobs(_study_run, jobs, workers=workers)):
        per = study.curves.setdefault(setting, {})
        for k in rows[0]:
            per.setdefault(k, []).append([r[k] for r in rows])
        if progress is not None:
            progress(f"seed {seed} {setting}: AMI {rows[-1]['ami']:.2f}")
    study.curves = {s: {k: np.array(v, dtype=np.float64) for k, v in d.items()} for s, d in study.curves.items()}
    study.raw_ami = np.array([raw_input_ami(_study_split(config, seed)[1], seed=seed) for seed in config.seeds])
    return study


def train_synthetic(
    data: SubclassData,
    mechanism: str,
    *,
    alpha: float = 0.5,
    temperature: float = 0.5,
    out_dim: int = 32,
    steps: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    recon_weight: float = 1.0,
    seed: int = 0,
    on_eval: Callable[[int, torch.nn.Module], None] | None = None,
    eval_every: int = 0,
) -> torch.nn.Module:
    """Train an encoder with ``L_spread`` on the coarse labels of synthetic subclass data.

    The four settings of chapter 3 (one symmetry breaker each, against a baseline):

    * ``baseline``: MLP encoder, the two views are the sample itself. Nothing
      in the objective ties a sample to its place inside its class.
    * ``linear``: the constrained encoder ``spreadcon.models.LinearEncoder``
      (one linear map), identical views.
    * ``autoencoder``: MLP encoder plus an MLP decoder that sees ``z`` only (not
      the class); the objective adds ``recon_weight * reconstruction_loss(decoder(z), x)``.
      :func:`train_setting` has the class-conditional one.
    * ``augment``: MLP encoder; the views are fresh samples of the sample's own
      subclass (``SubclassData.subclass_views``), an augmentation that stays
      within the subclass.

    Args:
        data: training data (coarse labels are used, fine labels never).
        mechanism: one of ``MECHANISMS``.
        alpha, temperature: of ``spreadcon.losses.contrastive.SpreadLoss`` (L_out, the default).
        out_dim: embedding size.
        steps, batch_size, lr: Adam on random mini-batches.
        recon_weight: weight of the reconstruction term (``autoencoder``).
        seed: initialisation and batch order.
        on_eval: called as ``on_eval(step, encoder)`` (encoder in eval mode)
            before training (step 0), every ``eval_every`` steps and after the
            last step, to follow a run without retraining it. It must not
            change the encoder; batches come from a private generator, so the
            run is the same with or without it.
        eval_every: steps between ``on_eval`` calls (0: only before and after).

    Returns:
        The trained encoder, in eval mode: float ``(N, d) -> (N, out_dim)``.

    Example:
        >>> d = make_subclass_data(K=2, m=2, n_per_subclass=20, dim=8)
        >>> enc = train_synthetic(d, "linear", steps=5)
        >>> enc(d.x).shape
        torch.Size([80, 32])
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    # the chapter-3 settings of spreadcon.theory.model.symmetry: this first edition's autoencoder decodes z and not the class
    setting = {"augment": "oracle", "autoencoder": "autoencoder-z"}.get(mechanism, mechanism)
    return train_setting(data, setting, alpha=alpha, temperature=temperature, out_dim=out_dim, steps=steps,
                         batch_size=batch_size, lr=lr, recon_weight=recon_weight, seed=seed, eval_every=eval_every,
                         on_eval=on_eval, decoder_input="z" if mechanism == "autoencoder" else "u")
