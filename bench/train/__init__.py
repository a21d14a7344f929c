"""Training: the loop (engine), its callbacks and monitors, checkpoints, metrics, reproducibility."""
