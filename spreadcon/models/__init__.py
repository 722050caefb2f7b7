"""Encoders, decoders and heads, built by name.

>>> from spreadcon.models import build_encoder, build_decoder, LinearHead
>>> enc = build_encoder("cnn", image_shape=(3, 32, 32), out_dim=64)
>>> enc.out_dim
64
>>> dec = build_decoder("cnn", latent_dim=enc.out_dim, image_shape=(3, 32, 32))

| name | class | ``out_dim`` | notes |
|---|---|---|---|
| ``vit`` | :class:`ViTEncoder` | 256 | the paper's encoder, 3.72M params at 32×32 |
| ``resnet18`` | :class:`ResNet18Encoder` | 512 | CIFAR stem, 11.2M params |
| ``cnn`` | :class:`SmallCNN` | 128 | CPU presets, ~0.26M params |
| ``linear`` | :class:`LinearEncoder` | 128 | constrained encoder; ``spectral_norm=True`` bounds it |

Decoders: ``resnet`` (:class:`ResNetDecoder`, 8.5M params at 32×32, latent 256)
and ``cnn`` (:class:`SmallCNNDecoder`).
"""

from __future__ import annotations

import inspect

from torch import nn

from .cnn import LinearEncoder, SmallCNN
from .decoder import ResNetDecoder, SmallCNNDecoder
from .heads import LinearHead, ProjectionHead
from .resnet import ResNet18Encoder
from .vit import ViTEncoder, vit_train_step_flops

__all__ = [
    "ENCODERS",
    "DECODERS",
    "build_encoder",
    "build_decoder",
    "LinearHead",
    "ProjectionHead",
    "ViTEncoder",
    "ResNet18Encoder",
    "SmallCNN",
    "LinearEncoder",
    "ResNetDecoder",
    "SmallCNNDecoder",
    "vit_train_step_flops",
]

ENCODERS: dict[str, type[nn.Module]] = {
    "vit": ViTEncoder,
    "resnet18": ResNet18Encoder,
    "cnn": SmallCNN,
    "linear": LinearEncoder,
}
DECODERS: dict[str, type[nn.Module]] = {
    "resnet": ResNetDecoder,
    "cnn": SmallCNNDecoder,
}


def _check_shape(image_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {image_shape!r}")
    return shape  # type: ignore[return-value]


def _check_overrides(cls: type, overrides: dict, fixed: set[str]) -> None:
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"} - fixed
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for {cls.__name__}; valid: {sorted(allowed)}")


def build_encoder(name: str, image_shape=(3, 32, 32), **overrides) -> nn.Module:
    """Build an encoder by name; the module has ``.out_dim``.

    Args:
        name: one of ``vit``, ``resnet18``, ``cnn``, ``linear``.
        image_shape: ``(C, H, W)`` of the (normalised float) input images.
        **overrides: constructor arguments of that encoder (e.g. ``depth=2``).

    Returns:
        An ``nn.Module`` mapping ``(B, C, H, W)`` to ``(B, out_dim)``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), bad
            ``image_shape`` or an override the encoder does not take.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder name={name!r}; valid: {sorted(ENCODERS)}")
    cls = ENCODERS[name]
    _check_overrides(cls, overrides, {"image_shape"})
    return cls(image_shape=_check_shape(image_shape), **overrides)


def build_decoder(name: str, latent_dim: int, image_shape=(3, 32, 32), **overrides) -> nn.Module:
    """Build a decoder by name: ``(B, latent_dim) → (B, C, H, W)`` normalised images.

    Args:
        name: one of ``resnet``, ``cnn``.
        latent_dim: size of the embedding it decodes (for a class-conditional
            decoder the caller may add the one-hot class size).
        image_shape: ``(C, H, W)`` of the output.
        **overrides: constructor arguments (e.g. ``base=256``).

    Raises:
        ValueError: unknown name (lists the valid ones), bad ``latent_dim``,
            ``image_shape`` or override.
    """
    if name not in DECODERS:
        raise ValueError(f"unknown decoder name={name!r}; valid: {sorted(DECODERS)}")
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
    cls = DECODERS[name]
    _check_overrides(cls, overrides, {"image_shape", "latent_dim"})
    return cls(latent_dim=latent_dim, image_shape=_check_shape(image_shape), **overrides)
