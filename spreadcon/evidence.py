"""What the experiment chapters (4-6) share: method names, metric labels,
the committed records they read and how they hand a figure to the page.

Example:
    >>> NAMES["spread"], SPREAD_METRIC
    ('SupCon + cNCE', 'spread')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The five methods the chapters compare, in table order.
METHODS = ["ce", "supcon", "spread", "autoencoder", "thanos"]
#: Their names on a page.
NAMES = {"ce": "CE", "supcon": "SupCon", "spread": "SupCon + cNCE", "autoencoder": "autoencoder", "thanos": "Thanos"}
#: Record metric: 1 - ||class mean of unit embeddings||^2 on the test set (0 = collapsed).
SPREAD_METRIC = "spread"
#: Its axis label.
SPREAD_LABEL = "within-class spread 1 − ‖μ‖² (unitless)"
#: Record metric: adjusted mutual information of the inferred subgroups with the true ones.
SUBGROUP_METRIC = "inferred_group_ami"


def committed(results_root: str | Path, **match: Any) -> list[dict[str, Any]]:
    """The records under ``results_root`` that match ``match`` and ran at the preset's alpha.

    A record written with a per-run alpha (``alpha_override``, the sweeps) is
    left out, so a method's row in a table is always its preset setting.

    Args:
        results_root: a folder of result records (``results/``).
        **match: record fields to match, e.g. ``dataset="mnist", preset="cpu"``.
    """
    from spreadcon.records import load_records

    return [r for r in load_records(results_root, **match) if r.get("alpha_override") is None]


def show(fig, key: str) -> None:
    """Glue ``fig`` under ``key`` for a captioned ``{glue:figure}``, and close it.

    Closing keeps the inline backend from drawing the figure a second time
    where the cell ran.
    """
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(key, fig, display=False)
    plt.close(fig)
