"""The method table: which named loss terms each method trains on, and with what weights.

Every method's total loss is a weighted sum of named terms, computed on a batch
of ``V`` augmented views ``x: (B, V, C, H, W)`` with coarse labels ``y: (B,)``:

============  =========================================================  ==========================
method        total loss                                                 weights (Config fields)
============  =========================================================  ==========================
ce            CE                                                         ce_weight
supcon        CE + SupCon                                                ce_weight, contrastive_weight
spread        CE + L_spread(alpha) = CE + (1-alpha) SupCon + alpha cNCE  ce_weight, contrastive_weight
autoencoder   CE + reconstruction                                        ce_weight, recon_weight
simclr        CE + SupCon + SimCLR                                       + simclr_weight
thanos        official recipe: a ``spread`` backbone and an ``autoencoder`` backbone,
              trained separately; their frozen embeddings are concatenated for evaluation
thanos-joint  one backbone: CE + L_spread(alpha) + reconstruction
supcon-quirks supcon with ``reference_quirks=True``: the official thanos-code loss
              (cross-view pairs, broadcast norm, one-positive denominator, clamp at 1)
spread-quirks spread with ``reference_quirks=True``
thanos-quirks thanos from a ``spread-quirks`` and an ``autoencoder`` backbone: the official
              form of all four methods (``autoencoder`` has no contrastive term, so it is one run)
supcon-clamp  supcon (the equations) with only the official clamp: positive logits capped at 1
============  =========================================================  ==========================

The controls, which rule out the cheap explanations of a gain:

==============  ===========================================================================
random-init     the ``supcon`` encoder untrained, through the same probe: the floor that
                any trained method must clear (architecture plus probe alone)
supcon-pair     two ``supcon`` encoders trained with seeds ``s`` and ``s + 1000``,
                embeddings concatenated: ``thanos``'s width and ensemble size
spread-pair     the same with two ``spread`` encoders: the control that isolates what the
                autoencoder adds to ``thanos`` beyond a second network
==============  ===========================================================================

A method may fix config keys (``Method.config``): the ``-quirks`` rows set
``reference_quirks``, so their records sit beside the plain ones under their
own names, and the record's config says what ran.

The terms, on embeddings ``z = encoder(x): (B, V, D)``:

* ``ce``: mean over images and views of cross-entropy of ``head(z[:, v])``
  against the coarse label.
* ``supcon``: :class:`spreadcon.losses.contrastive.SpreadLoss` with ``alpha = 0`` (Khosla
  et al.'s L_out on the coarse labels).
* ``spread``: :class:`spreadcon.losses.contrastive.SpreadLoss` with the config's ``alpha``.
* ``simclr``: :class:`spreadcon.losses.contrastive.SimCLRLoss`, labels ignored (each
  image's own other views are its only positives).
* ``recon``: the **class-conditional autoencoder**. A decoder maps each view's
  embedding back to that (augmented, normalised) view, and the term is
  :class:`spreadcon.losses.reconstruction.ReconstructionLoss`, the mean squared error over
  pixels, channels and views. The class conditioning
  enters through the *shared embedding*: the same ``z`` must also feed the
  coarse CE head, so the code is class-aware (linearly separable by coarse
  class) while the reconstruction forces it to keep the within-class detail
  -- the information that separates subclasses. This is the symmetry breaker
  for the within-class permutation invariance of L_spread: the decoder ties
  each image to its own position inside its class's cluster. The decoder sees
  only ``z`` (no label input); conditioning the decoder on ``y`` as well would
  let ``z`` drop class information that ``y`` already supplies.

Example:
    >>> from spreadcon.methods import get_method
    >>> get_method("spread").terms
    ('ce', 'spread')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from spreadcon.presets import Config

__all__ = ["Method", "METHODS", "get_method", "MethodModel", "build_model", "Objective"]


@dataclass(frozen=True)
class Method:
    """One row of the method table.

    Attributes:
        name: the method's name as used on the command line and in records.
        terms: names of the loss terms trained on, in the order they print.
        backbones: for composite methods (``thanos``), the single-backbone
            methods trained separately whose frozen embeddings are concatenated;
            empty for ordinary methods.
        description: one line for ``--help`` and the book.
        config: ``(key, value)`` pairs of :class:`spreadcon.presets.Config`
            that this method fixes on top of the preset (and of ``--set``).
        seed_offsets: with ``backbones``, the offset added to the run's seed
            for each backbone (the pair controls: two seeds of one method);
            empty means the run's seed for every backbone.
        untrained: evaluate the encoder as initialised (``random-init``).
    """

    name: str
    terms: tuple[str, ...]
    backbones: tuple[str, ...] = ()
    description: str = ""
    config: tuple[tuple[str, object], ...] = ()
    seed_offsets: tuple[int, ...] = ()
    untrained: bool = False

    def backbone_runs(self, seed: int) -> list[tuple[str, int, str]]:
        """``(method, seed, checkpoint subfolder)`` of each backbone trained for a run with ``seed``.

        Example:
            >>> get_method("spread-pair").backbone_runs(3)
            [('spread', 3, 'spread'), ('spread', 1003, 'spread-seed1003')]
            >>> get_method("thanos").backbone_runs(3)
            [('spread', 3, 'spread'), ('autoencoder', 3, 'autoencoder')]
            >>> get_method("supcon").backbone_runs(3)
            [('supcon', 3, '')]
        """
        if not self.backbones:
            return [(self.name, seed, "")]
        if not self.seed_offsets:
            return [(b, seed, b) for b in self.backbones]
        # the run's own seed trains in the folder of the plain method's run (a grid reuses it, as
        # thanos reuses its backbones); the other seed in a folder no plain run has
        return [(b, seed + o, b if o == 0 else f"{b}-seed{seed + o}") for b, o in zip(self.backbones, self.seed_offsets)]

    @property
    def needs_decoder(self) -> bool:
        return "recon" in self.terms


#: the second backbone of a pair control trains with the run's seed plus this (far from the 0-2 grid)
PAIR_SEED_OFFSET = 1000

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("ce", ("ce",), description="cross-entropy on coarse labels"),
    Method("supcon", ("ce", "supcon"), description="CE + SupCon"),
    Method("spread", ("ce", "spread"), description="CE + L_spread(alpha) = CE + (1-alpha) SupCon + alpha cNCE"),
    Method("autoencoder", ("ce", "recon"), description="CE + reconstruction (class-conditional autoencoder)"),
    Method("simclr", ("ce", "supcon", "simclr"), description="CE + SupCon + SimCLR"),
    Method("thanos", (), backbones=("spread", "autoencoder"),
           description="spread and autoencoder backbones trained separately, embeddings concatenated"),
    Method("thanos-joint", ("ce", "spread", "recon"), description="one backbone: CE + L_spread + reconstruction"),
    Method("supcon-quirks", ("ce", "supcon"), description="CE + SupCon as the official thanos-code computes it",
           config=(("reference_quirks", True),)),
    Method("spread-quirks", ("ce", "spread"), description="CE + L_spread as the official thanos-code computes it",
           config=(("reference_quirks", True),)),
    Method("thanos-quirks", (), backbones=("spread-quirks", "autoencoder"),
           description="thanos with the official form of L_spread: spread-quirks and autoencoder backbones "
                       "concatenated (the autoencoder has no contrastive term, so both forms share it)"),
    Method("supcon-clamp", ("ce", "supcon"), description="CE + SupCon (the equations) with its positive logit clamped at 1",
           config=(("clamp", "1"),)),
    Method("random-init", ("ce", "supcon"), untrained=True,
           description="control: the supcon encoder untrained, through the same probe (the floor)"),
    Method("supcon-pair", (), backbones=("supcon", "supcon"), seed_offsets=(0, PAIR_SEED_OFFSET),
           description="control: two supcon encoders (seeds s, s+1000) concatenated, thanos's width"),
    Method("spread-pair", (), backbones=("spread", "spread"), seed_offsets=(0, PAIR_SEED_OFFSET),
           description="control: two spread encoders (seeds s, s+1000) concatenated, thanos's width"),
]}


def get_method(name: str) -> Method:
    """Look up a method by name.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


class MethodModel(nn.Module):
    """Encoder + coarse linear head (+ decoder when the method reconstructs).

    Args:
        encoder: maps ``(N, C, H, W)`` float images to ``(N, D)``; has ``out_dim``.
        n_classes: number of coarse classes for the CE head.
        decoder: maps ``(N, D)`` to ``(N, C, H, W)`` in normalised image space, or None.

    ``forward(x)`` takes views ``(B, V, C, H, W)`` and returns a dict with
    ``z (B, V, D)``, ``logits (B, V, K)`` and, with a decoder, ``recon
    (B, V, C, H, W)``. Everything a loss needs comes out of ``forward`` so
    that ``DistributedDataParallel`` sees one forward per step.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, decoder: nn.Module | None = None) -> None:
        super().__init__()
        from spreadcon.models import LinearHead

        self.encoder = encoder
        self.head = LinearHead(encoder.out_dim, n_classes)
        self.decoder = decoder

    @property
    def out_dim(self) -> int:
        return self.encoder.out_dim

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 5:
            raise ValueError(f"x must be views of shape (B, V, C, H, W), got {tuple(x.shape)}")
        b, v = x.shape[:2]
        flat = x.flatten(0, 1)
        z = self.encoder(flat)
        out = {"z": z.view(b, v, -1), "logits": self.head(z).view(b, v, -1)}
        if self.decoder is not None:
            out["recon"] = self.decoder(z).view(x.shape)
        return out

    def embed(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` images -> ``(N, D)`` embeddings (no head)."""
        return self.encoder(x)


def build_model(method: Method | str, cfg: "Config", image_shape: tuple[int, int, int], n_classes: int) -> MethodModel:
    """Build the encoder (+ decoder) named by ``cfg`` for a single-backbone method."""
    from spreadcon.models import build_decoder, build_encoder

    method = get_method(method) if isinstance(method, str) else method
    if method.backbones:
        raise ValueError(f"method {method.name!r} is composite; build its backbones {method.backbones} instead")
    encoder = build_encoder(cfg.encoder, image_shape=tuple(image_shape))
    decoder = build_decoder(cfg.decoder, latent_dim=encoder.out_dim, image_shape=tuple(image_shape)) \
        if method.needs_decoder else None
    return MethodModel(encoder, n_classes, decoder)


class Objective(nn.Module):
    """The weighted sum of a method's named terms.

    ``forward(out, x, y)`` takes the model output dict, the views ``x (B, V,
    C, H, W)`` that produced it and coarse labels ``y (B,)``; returns ``(total,
    terms)`` where ``terms`` maps each term name to its (unweighted) 0-dim
    value and ``total = sum_t weight_t * term_t``. Contrastive terms are
    computed in float32 even under autocast.

    ``num_classes`` (coarse labels are ``0..num_classes-1``) and
    ``check_values=False`` remove the losses' host-device syncs; the training
    engine passes both and checks the loss for NaN once per epoch instead.

    Under ``torch.distributed`` the contrastive losses gather candidates from
    all ranks themselves (see :mod:`spreadcon.distributed`); CE and
    reconstruction are local means, which DDP's gradient averaging turns into
    the global mean.
    """

    def __init__(self, method: Method | str, cfg: "Config", *, num_classes: int | None = None,
                 check_values: bool = True) -> None:
        super().__init__()
        from spreadcon import losses

        self.method = get_method(method) if isinstance(method, str) else method
        if self.method.backbones:
            raise ValueError(f"method {self.method.name!r} is composite; train its backbones separately")
        weights = {"ce": cfg.ce_weight, "supcon": cfg.contrastive_weight, "spread": cfg.contrastive_weight,
                   "recon": cfg.recon_weight, "simclr": cfg.simclr_weight}
        self.weights = {t: float(weights[t]) for t in self.method.terms}
        from spreadcon.presets import clamp_value

        shared = {"num_classes": num_classes, "check_values": check_values, "clamp": clamp_value(cfg)}
        self.supcon = losses.SpreadLoss(alpha=0.0, temperature=cfg.temperature,
                                        reference_quirks=cfg.reference_quirks, **shared)
        self.spread = losses.SpreadLoss(alpha=cfg.alpha, temperature=cfg.temperature,
                                        reference_quirks=cfg.reference_quirks, **shared)
        self.simclr = losses.SimCLRLoss(temperature=cfg.temperature, check_values=check_values)
        self.recon = losses.ReconstructionLoss(check_values=check_values)

    def forward(self, out: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms: dict[str, Tensor] = {}
        for name in self.method.terms:
            if name == "ce":
                logits = out["logits"].float()
                terms[name] = F.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(logits.shape[1]))
            elif name == "supcon":
                terms[name] = self.supcon(out["z"].float(), y)
            elif name == "spread":
                terms[name] = self.spread(out["z"].float(), y)
            elif name == "simclr":
                terms[name] = self.simclr(out["z"].float())
            elif name == "recon":
                terms[name] = self.recon(out["recon"].float(), x.float())
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, terms
