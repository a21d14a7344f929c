"""gradattn-bench: an experiment-tracked benchmark harness for GradAttn and its ResNet-18 baselines."""

__version__ = "0.1.0"
