"""Evaluation of frozen encoders: embeddings, linear probes, kNN, geometry (spread, AMI), GEORGE's subgroups, worst-group accuracy."""

from spreadcon.eval.evaluate import (  # noqa: F401
    embed, ProbeResult, linear_probe, linear_probe_augmented, encoder_out_dim, knn_accuracy,
    spread_metrics, subclass_ami, SUBGROUP_CLUSTERINGS, SubgroupResult, infer_subgroups, subgroup_agreement,
    minority_recall, train_linear_head, group_accuracies, worst_group,
)
