r"""The switches of the contrastive losses: one frozen value, and the named forms it takes.

The equations (Khosla et al.'s L_out with the class-conditional InfoNCE) and the
official thanos-code differ in four places; each difference is one field of
:class:`Switches`, and the forms this package names are instances of it:

=================  ==========================  ===============================
field              :data:`L_OUT` (equations)   :data:`REFERENCE_QUIRKS`
=================  ==========================  ===============================
``anchors``        ``"all"``: every (i, v)     ``"cross_view"``: view v against
                   against all (j, w) != a     view w only, pairs w < v, mean
                                               over the V(V-1)/2 pairs
``denominator``    ``"all"`` (Khosla L_out)    ``"one_positive"``: the positive
                                               plus the negatives
``clamp``          ``None``                    ``1.0``: numerator logit
                                               ``min(s(a,p), 1)`` in SupCon
``norm``           ``"row"``: ``z/||z||``      ``"broadcast"``: divide by both
                                               norms at the candidate index
=================  ==========================  ===============================

:data:`PAPER` is the earlier name of :data:`L_OUT`; :data:`L_OUT_CLAMPED` is
L_out with only the official clamp (the ``supcon-clamp`` method). A value is
checked when it is made, so a :class:`Switches` is always a valid combination.

Example:
    >>> REFERENCE_QUIRKS.clamp, L_OUT.replace(clamp=1.0) == L_OUT_CLAMPED
    (1.0, True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

__all__ = ["Switches", "L_OUT", "PAPER", "REFERENCE_QUIRKS", "L_OUT_CLAMPED"]

Anchors = Literal["all", "cross_view"]
Denominator = Literal["all", "one_positive"]
Norm = Literal["row", "broadcast"]


@dataclasses.dataclass(frozen=True)
class Switches:
    """Which form of SupCon / cNCE a loss computes (see the module table); immutable and checked.

    Args:
        anchors: ``"all"`` or ``"cross_view"``.
        denominator: ``"all"`` (Khosla) or ``"one_positive"`` (the positive plus the negatives).
        clamp: ``None``, or the cap on the positive logit in SupCon's numerator.
        norm: ``"row"`` or ``"broadcast"`` (the official norm artefact).

    Raises:
        ValueError: naming the first field (in the order anchors, denominator, norm, clamp) that
            holds no valid value.
    """

    anchors: Anchors = "all"
    denominator: Denominator = "all"
    clamp: float | None = None
    norm: Norm = "row"

    def __post_init__(self) -> None:
        if self.anchors not in ("all", "cross_view"):
            raise ValueError(f"anchors must be 'all' or 'cross_view'; got {self.anchors!r}")
        if self.denominator not in ("all", "one_positive"):
            raise ValueError(f"denominator must be 'all' or 'one_positive'; got {self.denominator!r}")
        if self.norm not in ("row", "broadcast"):
            raise ValueError(f"norm must be 'row' or 'broadcast'; got {self.norm!r}")
        clamp = self.clamp
        if clamp is not None and not (isinstance(clamp, (int, float)) and math.isfinite(clamp)):
            raise ValueError(f"clamp must be None or a finite number; got {clamp!r}")

    def replace(self, **changes) -> Switches:
        """A copy with ``changes`` (field names) applied, checked like any new value."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """The four fields as keyword arguments of :func:`spreadcon.losses.supcon_loss` and the like."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @staticmethod
    def resolve(reference_quirks: bool, **given) -> Switches:
        """:data:`REFERENCE_QUIRKS` or :data:`L_OUT`, with each field of ``given`` that is not ``"auto"``.

        Example:
            >>> Switches.resolve(True, clamp=None, norm="auto") == REFERENCE_QUIRKS.replace(clamp=None)
            True
        """
        base = REFERENCE_QUIRKS if reference_quirks else L_OUT
        return base.replace(**{k: v for k, v in given.items() if not v == "auto"})


#: Khosla et al.'s L_out with the class-conditional InfoNCE, written from their equations
#: (``reference_quirks=False``). A choice: the paper's own denominator could not be retrieved.
L_OUT = Switches(anchors="all", denominator="all", clamp=None, norm="row")
#: The earlier name of :data:`L_OUT`, kept so that code using it keeps working.
PAPER = L_OUT
#: The switches that reproduce the official thanos-code loss exactly (``reference_quirks=True``).
REFERENCE_QUIRKS = Switches(anchors="cross_view", denominator="one_positive", clamp=1.0, norm="broadcast")
#: L_out with only the official clamp of the positive logit at 1 (the ``supcon-clamp`` method).
L_OUT_CLAMPED = L_OUT.replace(clamp=1.0)
