"""Optuna studies on top of the run pipeline; the only package that imports Optuna.

- ``depth_width``: searches GradAttn's transformer depth and width, one tracked run per trial, trained
  on any backend through the same driver as the grid (``summary`` reports the study).
- ``sensitivity``: recomputes gradient-health verdicts of finished runs over a grid of
  (vanishing, exploding) thresholds (protocol 5.3, 7.17), without retraining.
- ``storage``: where studies live (an RDB URL, or ``journal:PATH``) and how to open them.
"""
