"""Evaluation of frozen encoders, one module per role.

| module | what it holds |
|---|---|
| :mod:`spreadcon.eval.embed` | :func:`embed`: frozen embeddings of a split; :func:`encoder_out_dim` |
| :mod:`spreadcon.eval.probe` | :func:`linear_probe` (L-BFGS or closed form), :func:`linear_probe_augmented` (the paper's), :func:`train_linear_head` (ERM or Group DRO) |
| :mod:`spreadcon.eval.knn` | :func:`knn_accuracy`: cosine k-nearest neighbours |
| :mod:`spreadcon.eval.geometry` | :func:`spread_metrics` (within-class cosine and spread), :func:`subclass_ami` |
| :mod:`spreadcon.eval.subgroups` | GEORGE step 1: :func:`infer_subgroups`, :func:`subgroup_agreement`, :func:`minority_recall` |
| :mod:`spreadcon.eval.worst_group` | :func:`group_accuracies`, :func:`worst_group` (inferred groups → last-layer Group DRO) |

Every public name is re-exported here. Import from the module that holds a
name (``from spreadcon.eval.probe import linear_probe``): after this file
runs, ``spreadcon.eval.embed`` and ``spreadcon.eval.worst_group`` as
*attributes* are the functions of those names, and only ``from ... import``
(or ``sys.modules``) reaches the modules themselves.

Model selection never touches test data: where a function chooses anything
(the L2 strength of a probe, the probe epoch, the number of subgroups), it
chooses on the train or validation arguments only.
"""

from spreadcon.eval.embed import embed, encoder_out_dim
from spreadcon.eval.geometry import spread_metrics, subclass_ami
from spreadcon.eval.knn import knn_accuracy
from spreadcon.eval.probe import ProbeResult, linear_probe, linear_probe_augmented, train_linear_head
from spreadcon.eval.subgroups import (
    SUBGROUP_CLUSTERINGS, SubgroupResult, infer_subgroups, minority_recall, subgroup_agreement,
)
from spreadcon.eval.worst_group import group_accuracies, worst_group

__all__ = [
    "embed", "encoder_out_dim",
    "ProbeResult", "linear_probe", "linear_probe_augmented", "train_linear_head",
    "knn_accuracy",
    "spread_metrics", "subclass_ami",
    "SUBGROUP_CLUSTERINGS", "SubgroupResult", "infer_subgroups", "subgroup_agreement", "minority_recall",
    "group_accuracies", "worst_group",
]
