"""gradattn-bench: an experiment-tracked benchmark harness for GradAttn and its ResNet-18 baselines."""

from bench.core.version import __version__

__all__ = ["__version__"]
