"""Gradient-flow analysis of protocol section 5, with its defects fixed (protocol 7.5, 7.6, 7.7).

``analyze(model, batches)`` hooks every analysed layer (Conv2d, Linear incl. ``out_proj``,
transformer encoder layers), runs forward and backward on each batch and returns a
``GradFlowReport``; ``stats.score`` recomputes verdicts and health scores from its raw records for
other thresholds; ``text_report``, ``plot`` and ``save`` render it.
"""

from bench.gradflow.analyzer import analyze, is_analysed, notebook_hooked
from bench.gradflow.report import GradFlowReport, plot, save, text_report
from bench.gradflow.stats import FlowPatterns, GradFlowThresholds, LayerStats, NotebookScope, score

__all__ = [
    "FlowPatterns",
    "GradFlowReport",
    "GradFlowThresholds",
    "LayerStats",
    "NotebookScope",
    "analyze",
    "is_analysed",
    "notebook_hooked",
    "plot",
    "save",
    "score",
    "text_report",
]
