"""gradattn-bench: an experiment-tracked benchmark harness for GradAttn and its ResNet-18 baselines.

The Python API (bench.api) is the command line's, as functions: ``bench.run(...)`` returns one row
per run, ``bench.report(...)`` the report's tables. Importing ``bench`` loads neither torch nor
MLflow; they load when a function runs.
"""

from bench.api import depth_width, report, run, sensitivity
from bench.core.errors import BenchError
from bench.core.version import __version__

__all__ = ["BenchError", "__version__", "depth_width", "report", "run", "sensitivity"]
