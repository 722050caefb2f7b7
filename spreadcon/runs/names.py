"""The preset name a run's record is filed under: the preset's own name only when the run is the preset.

A record lives at ``<results>/<task>/<dataset>/<preset>/<method>_seed<N>[_alpha<A>].json``
(:func:`spreadcon.runs.records.record_path`). A run whose config differs from its preset's
(a ``--set`` that changes a value, for instance) must not be filed, and so must not overwrite a
committed record, under the preset's name. Its record's ``preset`` says what differs:

* ``<preset>.set.<key>-<value>[.<key>-<value>...]``, keys sorted, each value exact (floats in
  their shortest round-trip form), e.g. ``cpu.set.epochs-1`` or ``smoke.set.batch_size-32.lr-0.01``;
* ``<preset>.set.<12 hex digits>`` (a SHA-256 of that list, with every value as ``repr`` gives
  it) when the list would be longer than :data:`MAX_NAME` characters or hold a character that
  a record's names may not (:data:`NAME_PATTERN`: letters, digits, ``.``, ``_``, ``-``). The
  record's ``config`` holds every value.

The part before ``.set.`` is always the preset the run started from (preset names hold no dot).

``--alpha A`` is the one difference the record's file name states itself (``_alpha<A>``, the
alpha sweep files its records beside the preset's): it stays out of the list as long as that
suffix gives ``A`` back exactly. An alpha with more than six significant digits, which the
suffix would round (``%g``), goes into the list, so two alphas never share one record.

Keys that a method fixes (``Method.config``, e.g. the ``-quirks`` rows' ``reference_quirks``) are
part of the method, not differences. :func:`resolve_run` gives a run's config and record preset
together; :func:`spreadcon.runs.experiment.run_experiment` files its record by it, and a tool
that looks for a run's record should ask it too. Importing this module imports no torch.

Example:
    >>> from spreadcon.presets import resolve
    >>> base = resolve("cpu", "mnist")
    >>> record_preset("cpu", resolve("cpu", "mnist", {"epochs": "1", "lr": "1e-05"}), base)
    'cpu.set.epochs-1.lr-1e-05'
    >>> record_preset("cpu", resolve("cpu", "mnist", {"epochs": "5"}), base)   # the preset's own value
    'cpu'
    >>> record_preset("cpu", resolve("cpu", "mnist", {"alpha": 0.25}), base, alpha=0.25)
    'cpu'
    >>> record_preset("cpu", resolve("cpu", "mnist", {"alpha": 0.1234567}), base, alpha=0.1234567)
    'cpu.set.alpha-0.1234567'
    >>> record_preset("cpu", resolve("cpu", "mnist", {"lr": 1e20}), base)   # "+" is not a name character
    'cpu.set.bd726adea81c'
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from spreadcon.presets import Config, resolve

__all__ = ["resolve_run", "record_preset", "value_text", "alpha_named_exactly", "MAX_NAME", "NAME_PATTERN"]

#: the longest ``<preset>.set.<key>-<value>...`` name before the hashed form takes over
MAX_NAME = 100
#: the characters of a record's ``dataset``, ``method`` and ``preset`` (they name folders and files)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def value_text(value: Any) -> str:
    """A config value as ``--set`` takes it back: ``true``/``false``, ``repr`` of a float (exact), else ``str``.

    Example:
        >>> [value_text(v) for v in (True, 3, 0.1 + 0.2, "kmeans-raw")]
        ['true', '3', '0.30000000000000004', 'kmeans-raw']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def alpha_named_exactly(alpha: float) -> bool:
    """Whether the record file's ``_alpha<A>`` suffix (``%g``) gives ``alpha`` back exactly.

    Example:
        >>> alpha_named_exactly(0.25), alpha_named_exactly(0.1234567)
        (True, False)
    """
    return float(f"{float(alpha):g}") == float(alpha)


def record_preset(preset: str, cfg: Config, base: Config, *, alpha: float | None = None) -> str:
    """The ``preset`` a record of a run with config ``cfg`` carries (see the module docstring).

    Args:
        preset: the preset the run started from.
        cfg: the run's resolved config.
        base: the preset's config for the same dataset and method (its fixed keys applied).
        alpha: ``--alpha``, stated by the record's file name when exact; None if not given.
    """
    ours, theirs = cfg.to_dict(), base.to_dict()
    differ = sorted(k for k in ours if ours[k] != theirs[k])
    if alpha is not None and alpha_named_exactly(alpha):
        differ = [k for k in differ if k != "alpha"]
    if not differ:
        return preset
    name = f"{preset}.set." + ".".join(f"{k}-{value_text(ours[k])}" for k in differ)
    if len(name) <= MAX_NAME and NAME_PATTERN.fullmatch(name):
        return name
    exact = ",".join(f"{k}={ours[k]!r}" for k in differ)
    return f"{preset}.set.{hashlib.sha256(exact.encode()).hexdigest()[:12]}"


def resolve_run(preset: str, dataset: str, method: str, *, overrides: dict[str, Any] | None = None,
                alpha: float | None = None) -> tuple[Config, str]:
    """A run's config (``overrides``, then ``alpha``, then the method's fixed keys, on the preset)
    and the ``preset`` its record carries (:func:`record_preset`).

    Raises:
        ValueError: an unknown preset, method or key, or a value that breaks its key's rule.

    Example:
        >>> cfg, name = resolve_run("smoke", "mnist", "supcon-quirks", overrides={"epochs": "2"})
        >>> cfg.reference_quirks, name
        (True, 'smoke.set.epochs-2')
    """
    from spreadcon.methods import get_method  # imports torch

    fixed = dict(get_method(method).config)  # a method's fixed keys win (see Method.config)
    cfg = resolve(preset, dataset, {**(overrides or {}), **({} if alpha is None else {"alpha": alpha}), **fixed})
    return cfg, record_preset(preset, cfg, resolve(preset, dataset, fixed), alpha=alpha)
