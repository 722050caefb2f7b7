"""Training: the loop (one step, the schedule, precision), atomic checkpoints and exact resume, Group DRO retraining."""

