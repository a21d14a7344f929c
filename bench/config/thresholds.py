"""The gradient-flow verdict's thresholds, checked once wherever they come from (a run's settings, a
stored report, the sensitivity grid)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GradFlowThresholds:
    """A layer is vanishing below ``vanishing`` and exploding above ``exploding`` (protocol 5.3)."""

    vanishing: float = 1e-6
    exploding: float = 10.0

    def __post_init__(self) -> None:
        # The one check of a threshold pair, wherever it comes from (a run's settings, a stored report).
        if not (math.isfinite(self.exploding) and 0 < self.vanishing < self.exploding):
            raise ValueError(
                f"gradient thresholds must be finite and satisfy 0 < vanishing < exploding, got {self.vanishing:g} and {self.exploding:g}"
            )
