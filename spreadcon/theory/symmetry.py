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
autoencoder   MLP + coarse CE head +      the sample itself, twice
              decoder ``g(z)``
noise         MLP                         ``x + s * eps``, ``eps ~ N(0, I)`` per view
mask          MLP                         ``x * m / (1 - p)``, ``m_k ~ Bernoulli(1-p)``
oracle        MLP                         ``centre[fine] + noise * eps``: reads the fine
                                          label, an **upper bound**, not a method
============  ==========================  ===========================================

*Class-conditional autoencoder*: the package's one definition, the ``recon``
term of :mod:`spreadcon.methods` (chapters 4-6 and the official code). A
decoder ``g`` reconstructs each view from the raw embedding ``z`` alone
(mean squared error, weight ``recon_weight``), and the class enters through a
linear cross-entropy head on the same ``z`` (weight ``ce_weight``). Added to
L_spread in one encoder this is the objective of the ``thanos-joint`` method.

*The loss form*: ``form="l_out"`` is Khosla's L_out with cNCE
(``SpreadLoss(alpha, tau)``, :data:`spreadcon.losses.switches.L_OUT`),
``form="official"`` the official thanos-code loss
(``SpreadLoss(alpha, tau, reference_quirks=True)``,
:data:`~spreadcon.losses.switches.REFERENCE_QUIRKS`). :func:`sweep_cells`
chooses the weights of the chapter's sweep from ``rho*(alpha)``
(:mod:`spreadcon.theory.model`); :func:`main` runs the sweep and writes one
JSON record that :func:`load_record` validates.

Evaluation is on the normalised test embeddings: per-class k-means AMI
against the fine labels (``spreadcon.eval.geometry.subclass_ami``), a fine-label
linear probe, the coarse probe (the classes must stay separable) and the
within-class cosine. The reference is the raw input: the same AMI of k-means
on ``x`` itself (``raw_input_ami``).

Nothing here is imported by ``import spreadcon``; it needs scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spreadcon.theory.model import MECHANISMS, SubclassData, _subclass_views_at, make_subclass_data, mlp

FORMS = ("l_out", "official")

__all__ = [
    "train_synthetic",
    "SETTINGS",
    "UPPER_BOUNDS",
    "FORMS",
    "Autoencoder",
    "noise_views",
    "mask_views",
    "train_setting",
    "embedding_scores",
    "raw_input_ami",
    "StudyConfig",
    "Study",
    "run_study",
    "run_studies",
    "Cell",
    "sweep_cells",
    "study_record",
    "write_record",
    "load_record",
    "RecordError",
    "main",
]

SETTINGS = ("baseline", "linear", "autoencoder", "noise", "mask", "oracle")
#: settings whose views read the fine label: reported as labelled upper bounds, never as methods.
UPPER_BOUNDS = ("oracle",)


class Autoencoder(nn.Module):
    """The autoencoder terms of :mod:`spreadcon.methods` on vectors: a coarse CE head and a decoder, both on ``z``.

    ``terms(z, views, y)`` is ``ce_weight * CE(head(z), y) + recon_weight * MSE(g(z), views)``
    over every view, the ``ce`` and ``recon`` terms of the package's ``autoencoder`` method.
    The decoder never sees the class: it enters through the shared ``z``, which must also
    feed the linear class head.

    Args:
        emb_dim: size of ``z``.
        num_classes: ``K`` (the head's outputs).
        out_dim: size of the reconstruction (the input dimension).
        hidden, depth: of the decoder's ReLU MLP.

    Example:
        >>> ae = Autoencoder(4, 2, 8)
        >>> z, x = torch.randn(3, 2, 4), torch.randn(3, 2, 8)
        >>> float(ae.terms(z, x, torch.zeros(3, dtype=torch.long)).detach()) > 0
        True
    """

    def __init__(self, emb_dim: int, num_classes: int, out_dim: int, hidden: int = 128, depth: int = 2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.head = nn.Linear(emb_dim, int(num_classes))
        self.decoder = mlp(emb_dim, out_dim, hidden=hidden, depth=depth)

    def terms(self, z: torch.Tensor, views: torch.Tensor, y: torch.Tensor, *, ce_weight: float = 1.0,
              recon_weight: float = 1.0) -> torch.Tensor:
        """``z: (B, V, D)``, ``views: (B, V, d)`` (the reconstruction targets), ``y: (B,)`` -> a scalar."""
        from spreadcon.losses import reconstruction_loss

        b, v = z.shape[:2]
        ce = F.cross_entropy(self.head(z.flatten(0, 1)), y.repeat_interleave(v))
        recon = reconstruction_loss(self.decoder(z.flatten(0, 1)), views.flatten(0, 1))
        return ce_weight * ce + recon_weight * recon


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
    form: str = "l_out",
    ce_weight: float = 1.0,
) -> nn.Module:
    """Train an encoder with ``L_spread`` on the coarse labels, in one setting.

    Args:
        data: training data; ``data.fine`` is read only by ``"oracle"``.
        setting: one of ``SETTINGS`` (the module table).
        alpha, temperature: of ``SpreadLoss``.
        form: ``"l_out"`` (Khosla's L_out, the package default) or ``"official"``
            (``reference_quirks=True``, the official code's loss).
        out_dim: embedding size.
        steps, batch_size, lr: Adam on random mini-batches.
        recon_weight, ce_weight: weights of the autoencoder's two terms (:class:`Autoencoder`).
        noise_std: ``s`` of ``"noise"`` (the data's own noise is ``data.noise``).
        mask_drop: ``p`` of ``"mask"``.
        seed: initialisation, batches and augmentation.
        eval_every, on_eval: ``on_eval(step, encoder)`` (eval mode) at step 0, every
            ``eval_every`` steps and after the last; batches come from a private
            generator, so the run is the same with or without it.

    Returns:
        The encoder in eval mode, ``(N, d) -> (N, out_dim)``.
    """
    from spreadcon.losses import SpreadLoss
    from spreadcon.models import build_encoder

    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0, got {eval_every!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dim = data.x.shape[1]
    if setting == "linear":
        lin = build_encoder("linear", image_shape=(1, 1, dim), out_dim=out_dim)
        encoder: nn.Module = nn.Sequential(nn.Unflatten(1, (1, 1, dim)), lin)
    else:
        encoder = mlp(dim, out_dim)
    ae = Autoencoder(out_dim, int(data.coarse.max()) + 1, dim) if setting == "autoencoder" else None
    params = list(encoder.parameters()) + (list(ae.parameters()) if ae is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = SpreadLoss(alpha=alpha, temperature=temperature, reference_quirks=form == "official")
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
        if ae is not None:
            loss = loss + ae.terms(z, views, data.coarse[idx], ce_weight=ce_weight, recon_weight=recon_weight)
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
    (``alpha``, ``temperature`` and ``form`` of L_spread), evaluated every
    ``eval_every``. ``seeds`` each draw new data and a new initialisation.
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
    recon_weight: float = 1.0  # the package's default weights of the autoencoder's terms
    ce_weight: float = 1.0
    form: str = "l_out"  # or "official": SpreadLoss(reference_quirks=True)


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
                  recon_weight=config.recon_weight, ce_weight=config.ce_weight, form=config.form, seed=seed,
                  eval_every=config.eval_every or config.steps, on_eval=on_eval)
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
    return run_studies([config], progress, workers=workers)[0]


def _check_config(config: StudyConfig) -> None:
    unknown = [s for s in config.settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"settings must be among {SETTINGS}, got {unknown}")
    if config.form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {config.form!r}")


def _eval_steps(config: StudyConfig) -> np.ndarray:
    every = config.eval_every or config.steps
    return np.array(sorted(set(range(0, config.steps + 1, every)) | {config.steps}))


def run_studies(configs: list[StudyConfig], progress: Callable[[str], None] | None = None, *,
                workers: int | None = 1) -> list[Study]:
    """:func:`run_study` for several configs at once: every (config, seed, setting) run is one job of one pool.

    Example:
        >>> a = StudyConfig(settings=("baseline",), seeds=(0,), n_per_subclass=10, steps=2)
        >>> [s.config.alpha for s in run_studies([a, replace(a, alpha=0.2)])]
        [0.5, 0.2]
    """
    from spreadcon.util.parallel import run_jobs

    for config in configs:
        _check_config(config)
    jobs = [(config, seed, setting) for config in configs for seed in config.seeds for setting in config.settings]
    results = iter(run_jobs(_study_run, jobs, workers=workers))
    studies = []
    for config in configs:
        study = Study(config=config, steps=_eval_steps(config))
        for seed in config.seeds:
            for setting in config.settings:
                rows = next(results)
                per = study.curves.setdefault(setting, {})
                for k in rows[0]:
                    per.setdefault(k, []).append([r[k] for r in rows])
                if progress is not None:
                    progress(f"{config.form} alpha {config.alpha:.3f} seed {seed} {setting}: AMI {rows[-1]['ami']:.2f}")
        study.curves = {s: {k: np.array(v, dtype=np.float64) for k, v in d.items()} for s, d in study.curves.items()}
        study.raw_ami = np.array([raw_input_ami(_study_split(config, seed)[1], seed=seed) for seed in config.seeds])
        studies.append(study)
    return studies


# ---------------------------------------------------------------------------------------------------------------
# The alpha sweep: which weights, and its record
# ---------------------------------------------------------------------------------------------------------------

#: rho* targets of the sweep: a quarter, half and three quarters of the way from orthogonal classes' rho = 0 to
#: collapse (rho = 1), so that each weight sits clearly between collapse and uniform spread.
RHO_TARGETS = (0.75, 0.5, 0.25)


@dataclass(frozen=True)
class Cell:
    """One (form, alpha) of the sweep and the symmetric model's optimum there.

    Attributes:
        form: ``"l_out"`` or ``"official"``.
        alpha: the cNCE weight.
        rho_star: ``rho*(alpha)`` of :func:`spreadcon.theory.model.rho_star` at the study's
            ``n = batch / K``, ``K`` and ``temperature``.
        why: how the weight was chosen, in words.
    """

    form: str
    alpha: float
    rho_star: float
    why: str


def sweep_cells(n: int, K: int, temperature: float, targets: tuple[float, ...] = RHO_TARGETS,
                default_alpha: float = 0.5) -> list[Cell]:
    """The sweep's weights, chosen from ``rho*(alpha)`` by one rule.

    For each form, the weight at which ``rho*(alpha)`` equals each target
    (``alpha_of_rho``, the exact inverse where ``L`` is convex), rounded to
    three decimals, keeping the targets that some weight reaches; then the
    official default ``default_alpha`` if it is not already there. In the
    official form ``rho* = temperature`` on a whole plateau of weights: a target equal
    to the temperature is represented by ``default_alpha`` when it lies on the plateau.

    Example:
        >>> [(c.form, c.alpha, round(c.rho_star, 2)) for c in sweep_cells(48, 2, 0.5)]  # doctest: +NORMALIZE_WHITESPACE
        [('l_out', 0.092, 0.75), ('l_out', 0.201, 0.5), ('l_out', 0.359, 0.25), ('l_out', 0.5, 0.02),
         ('official', 0.29, 0.75), ('official', 0.5, 0.5), ('official', 0.669, 0.25)]
    """
    from spreadcon.theory import model as theory

    cells: list[Cell] = []
    for form, model_form in (("l_out", "l_out"), ("official", "one_positive_clamped")):
        th = theory.thresholds(n, K, temperature, form=model_form)
        alphas: list[tuple[float, str]] = []
        for rho in targets:
            if th.plateau is not None and abs(rho - temperature) < 1e-12:
                if th.plateau[0] <= default_alpha <= th.plateau[1]:
                    alphas.append((default_alpha, f"rho* = {rho} = tau on the clamp's plateau; the official default"))
                continue
            a = float(theory.alpha_of_rho(rho, n, K, temperature, form=model_form, side=1))
            if 0 <= a <= 1 and abs(theory.rho_star(round(a, 3), n, K, temperature, form=model_form) - rho) < 0.01:
                alphas.append((round(a, 3), f"rho* = {rho}"))
        if all(abs(a - default_alpha) > 1e-9 for a, _ in alphas):
            alphas.append((default_alpha, "the official default weight"))
        for a, why in sorted(alphas):
            cells.append(Cell(form, a, float(theory.rho_star(a, n, K, temperature, form=model_form)), why))
    return cells


RECORD_KIND = "symmetry-sweep"
RECORD_VERSION = 1
_METRICS = ("ami", "fine_acc", "coarse_acc", "within_cosine", "between_cosine")


class RecordError(ValueError):
    """A symmetry-sweep record that is damaged or does not match its schema; the message names the file."""


def code_provenance() -> dict:
    """The commit and source hashes of the code as it is now (taken before a sweep starts)."""
    from spreadcon.runs.records import git_commit, source_hash

    return {"git_commit": git_commit(), "source_hash": source_hash(),
            "theory_source_hash": source_hash(parts=("theory",))}


def study_record(studies: list[Study], cells: list[Cell], *, started_at: str, wall_time_s: float,
                 workers: int | None, code: dict | None = None) -> dict:
    """The JSON record of a sweep: every study's config, curves and raw-input AMI, with provenance.

    ``code`` is :func:`code_provenance` taken when the sweep started (default: now).
    """
    import dataclasses
    import platform

    code = code_provenance() if code is None else code
    return {
        "kind": RECORD_KIND,
        "version": RECORD_VERSION,
        "cells": [dataclasses.asdict(c) for c in cells],
        "studies": [{"config": dataclasses.asdict(st.config), "steps": st.steps.tolist(),
                     "curves": {s: {k: v.tolist() for k, v in d.items()} for s, d in st.curves.items()},
                     "raw_ami": st.raw_ami.tolist()} for st in studies],
        "provenance": {**code,
                       "torch_version": torch.__version__, "device": "cpu", "machine": platform.processor() or
                       platform.machine(), "workers": workers, "started_at": started_at,
                       "wall_time_s": float(wall_time_s), "load_average_at_end": list(__import__("os").getloadavg())},
    }


def write_record(record: dict, path) -> None:
    """Write ``record`` as strict JSON, atomically (a reader never sees half a file)."""
    import json

    from spreadcon.util.atomic import atomic_write

    text = json.dumps(record, indent=1, allow_nan=False, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text), binary=False)


def _need(cond: bool, path, what: str) -> None:
    if not cond:
        raise RecordError(f"{path}: {what}")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def load_record(path) -> tuple[dict, list[Cell], list[Study]]:
    """Read and validate a sweep record strictly; return ``(provenance, cells, studies)``.

    Raises:
        RecordError: naming ``path`` and the first problem: not strict JSON (NaN
            included), a missing or extra key, a wrong type, a value out of range,
            a config that is not a :class:`StudyConfig`, a curve of the wrong shape,
            or cells that do not match the studies.
    """
    import dataclasses
    import json

    def _reject(token):
        raise RecordError(f"{path}: not strict JSON ({token} is not a number)")

    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f, parse_constant=_reject)
    except RecordError:
        raise
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: unreadable or not JSON ({e})") from None
    _need(isinstance(rec, dict), path, "the record is not a JSON object")
    _need(set(rec) == {"kind", "version", "cells", "studies", "provenance"}, path,
          f"keys {sorted(rec)} are not kind, version, cells, studies, provenance")
    _need(rec["kind"] == RECORD_KIND and rec["version"] == RECORD_VERSION, path,
          f"kind/version {rec['kind']!r}/{rec['version']!r} is not {RECORD_KIND!r}/{RECORD_VERSION}")
    prov = rec["provenance"]
    _need(isinstance(prov, dict), path, "provenance is not an object")
    for k in ("git_commit", "source_hash", "theory_source_hash", "torch_version", "device", "started_at"):
        _need(isinstance(prov.get(k), str) and prov[k] != "", path, f"provenance.{k} is missing or not a string")
    _need(_is_num(prov.get("wall_time_s")) and prov["wall_time_s"] > 0, path, "provenance.wall_time_s is not > 0")
    fields = {f.name for f in dataclasses.fields(StudyConfig)}
    _need(isinstance(rec["studies"], list) and rec["studies"], path, "studies is not a non-empty list")
    studies = []
    for i, st in enumerate(rec["studies"]):
        where = f"studies[{i}]"
        _need(isinstance(st, dict) and set(st) == {"config", "steps", "curves", "raw_ami"}, path,
              f"{where} does not have exactly config, steps, curves, raw_ami")
        cfg = st["config"]
        _need(isinstance(cfg, dict) and set(cfg) == fields, path, f"{where}.config keys are not StudyConfig's")
        try:
            config = StudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
            _check_config(config)
        except (TypeError, ValueError) as e:
            raise RecordError(f"{path}: {where}.config is invalid ({e})") from None
        _need(0 <= config.alpha <= 1 and config.temperature > 0, path, f"{where}.config alpha or temperature out of range")
        steps = st["steps"]
        _need(steps == _eval_steps(config).tolist(), path, f"{where}.steps do not match its config")
        n_seeds, n_steps = len(config.seeds), len(steps)
        _need(isinstance(st["curves"], dict) and set(st["curves"]) == set(config.settings), path,
              f"{where}.curves do not hold exactly the config's settings")
        curves = {}
        for s, d in st["curves"].items():
            _need(isinstance(d, dict) and set(d) == set(_METRICS), path, f"{where}.curves[{s!r}] metrics are not {_METRICS}")
            curves[s] = {}
            for k, v in d.items():
                ok = (isinstance(v, list) and len(v) == n_seeds and
                      all(isinstance(r, list) and len(r) == n_steps and all(_is_num(x) for x in r) for r in v))
                _need(ok, path, f"{where}.curves[{s!r}][{k!r}] is not {n_seeds} x {n_steps} finite numbers")
                arr = np.array(v, dtype=np.float64)
                lo = 0.0 if k in ("fine_acc", "coarse_acc") else -1.0
                _need(bool(((arr >= lo - 1e-9) & (arr <= 1 + 1e-9)).all()), path,
                      f"{where}.curves[{s!r}][{k!r}] has values outside [{lo:g}, 1]")
                curves[s][k] = arr
        raw = st["raw_ami"]
        _need(isinstance(raw, list) and len(raw) == n_seeds and all(_is_num(x) and -1 <= x <= 1 for x in raw), path,
              f"{where}.raw_ami is not {n_seeds} numbers in [-1, 1]")
        studies.append(Study(config=config, steps=np.array(steps), curves=curves, raw_ami=np.array(raw, dtype=np.float64)))
    _need(isinstance(rec["cells"], list) and len(rec["cells"]) == len(studies), path, "cells do not match the studies")
    cells = []
    for i, (c, st) in enumerate(zip(rec["cells"], studies)):
        _need(isinstance(c, dict) and set(c) == {"form", "alpha", "rho_star", "why"}, path, f"cells[{i}] keys are wrong")
        _need(c["form"] == st.config.form and _is_num(c["alpha"]) and c["alpha"] == st.config.alpha
              and _is_num(c["rho_star"]) and -1 <= c["rho_star"] <= 1 and isinstance(c["why"], str), path,
              f"cells[{i}] does not match studies[{i}]")
        cells.append(Cell(**c))
    keys = [(st.config.form, st.config.alpha) for st in studies]
    _need(len(set(keys)) == len(keys), path, "two studies share one (form, alpha)")
    return prov, cells, studies


def sweep_configs(base: StudyConfig = StudyConfig()) -> tuple[list[Cell], list[StudyConfig]]:
    """The chapter's sweep: :func:`sweep_cells` at ``n = batch / K``, one :class:`StudyConfig` per cell."""
    cells = sweep_cells(base.batch // base.K, base.K, base.temperature)
    return cells, [replace(base, form=c.form, alpha=c.alpha) for c in cells]


def main(argv: list[str] | None = None) -> int:
    """``python -m spreadcon.theory.symmetry --out results/symmetry/sweep.json [--workers 2] [--seeds 0 1 2]``.

    Runs the alpha sweep of chapter 3 (:func:`sweep_configs`) and writes its record
    (:func:`study_record`) atomically; refuses to start from a worktree with
    uncommitted changes unless ``--allow-dirty`` (the record names the commit it ran).
    """
    import argparse
    import datetime
    import sys
    import time
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m spreadcon.theory.symmetry", description=main.__doc__)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(StudyConfig().seeds))
    ap.add_argument("--steps", type=int, default=StudyConfig().steps)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--allow-dirty", action="store_true")
    args = ap.parse_args(argv)
    code = code_provenance()
    commit = code["git_commit"]
    if commit.endswith("-dirty") and not args.allow_dirty:
        print(f"refusing to run: the worktree has uncommitted changes ({commit}); commit first", file=sys.stderr)
        return 2
    if args.workers < 1 or args.steps < 1 or args.eval_every < 0:
        print("--workers and --steps must be >= 1, --eval-every >= 0", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    base = replace(StudyConfig(), seeds=tuple(args.seeds), steps=args.steps, eval_every=args.eval_every)
    cells, configs = sweep_configs(base)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    studies = run_studies(configs, lambda line: print(line, flush=True), workers=args.workers)
    record = study_record(studies, cells, started_at=started, wall_time_s=time.perf_counter() - t0,
                          workers=args.workers, code=code)
    write_record(record, args.out)
    load_record(args.out)  # what the chapter will read back
    print(args.out)
    return 0


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
    * ``autoencoder``: MLP encoder plus :class:`Autoencoder` (a coarse CE head and a
      decoder on ``z``, the package's one definition); the objective adds its terms.
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
    # the chapter-3 settings of train_setting under the first edition's names
    setting = {"augment": "oracle"}.get(mechanism, mechanism)
    return train_setting(data, setting, alpha=alpha, temperature=temperature, out_dim=out_dim, steps=steps,
                         batch_size=batch_size, lr=lr, recon_weight=recon_weight, seed=seed, eval_every=eval_every,
                         on_eval=on_eval)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
