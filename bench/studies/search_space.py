"""The depth-width study's search space: GradAttn's transformer depth, width, heads, feed-forward size
and dropout, and the model settings of one point of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import optuna

from bench.config.schema import setting
from bench.config.spec import ModelConfig
from bench.core.errors import BenchError


@dataclass(frozen=True)
class SearchSpace:
    """Transformer shapes to search (the issue's space); dim_feedforward = ff_multiplier x d_model."""

    num_layers: tuple[int, int] = setting((1, 6), "Encoder depth, an inclusive integer range LOW,HIGH.", minimum=1)
    d_model: tuple[int, ...] = setting((64, 128, 256, 512), "Width choices.", minimum=1)
    nhead: tuple[int, ...] = setting((2, 4, 8), "Head-count choices; combinations the model rejects are pruned before training.", minimum=1)
    ff_multiplier: tuple[int, ...] = setting((1, 2, 4), "dim_feedforward / d_model choices.", minimum=1)
    dropout: tuple[float, float] = setting((0.0, 0.3), "Dropout, a uniform range LOW,HIGH.", minimum=0, below=1)

    def validate(self) -> "SearchSpace":
        for name in ("num_layers", "dropout"):
            low, high = getattr(self, name)
            if low > high:
                raise BenchError(f"The space.{name} range must satisfy low <= high, got {low}..{high}.")
        return self

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """One point of the space.

        Heads are a categorical over all listed values, sampled independently of d_model: an Optuna
        categorical needs a static choice list, and keeping d_model and heads as two parameters keeps
        their importances and the parallel-coordinate plot readable. A combination the model rejects
        (d_model not divisible by heads, or an odd head dimension under RoPE) is pruned before any
        training, which the TPE sampler learns to avoid; with the default space every combination
        is valid (the smallest head dimension is 64 / 8 = 8).
        """
        return {
            "num_layers": trial.suggest_int("num_layers", *self.num_layers),
            "d_model": trial.suggest_categorical("d_model", list(self.d_model)),
            "nhead": trial.suggest_categorical("nhead", list(self.nhead)),
            "ff_multiplier": trial.suggest_categorical("ff_multiplier", list(self.ff_multiplier)),
            "dropout": trial.suggest_float("dropout", *self.dropout),
        }


PARAMS = tuple(f.name for f in fields(SearchSpace))  # the trials' parameters, as Optuna names them


def model_config(params: dict[str, Any]) -> ModelConfig:
    """The transformer of one point of the space."""
    sizes = {k: v for k, v in params.items() if k != "ff_multiplier"}
    return ModelConfig(**sizes, dim_feedforward=params["ff_multiplier"] * params["d_model"])


# The model options a trial sets: a model without them has no transformer to search.
TRANSFORMER_OPTIONS = tuple(k for k, v in asdict(model_config(dict.fromkeys(PARAMS, 1))).items() if v is not None)
