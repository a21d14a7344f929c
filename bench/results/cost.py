"""Cost beside accuracy in the report: what each run's `cost/` metrics become per row, and a model's cost
against the baseline's in the verdict ("+14 % parameters, +21 % FLOPs, 1.3 times the training time")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.tracking import metric_names

# A run's column (runs.csv) -> the metric it is read from, with the names runs logged before `cost/` existed.
RUN_COLUMNS = {
    "parameters": ("cost/parameters",),
    "gflops": ("cost/forward_gflops_per_image",),
    "train_gflops": ("cost/train_gflops",),
    "train_images_per_s": ("cost/train_images_per_s",),
    "peak_memory_mib": ("cost/peak_memory_mib",),
    "train_time_s": ("cost/train_time_s", "train/time_s"),
    "time_to_best_s": ("cost/time_to_best_s",),
    "energy_j": ("cost/energy_j",),
}
# The row's cost columns (results.csv), each the mean over the row's seeds, and how the text shows them.
ROW_COLUMNS = {
    "parameters": ("params", lambda v: f"{v / 1e6:.2f} M"),
    "gflops": ("GFLOPs/image", lambda v: f"{v:.4g}"),
    "train_images_per_s": ("train img/s", lambda v: f"{v:,.0f}"),
    "peak_memory_mib": ("peak memory", lambda v: f"{v / 1024:.2f} GiB"),
    "train_time_s": ("train time", lambda v: f"{v:,.0f} s" if v >= 10 else f"{v:.1f} s"),
    "energy_j": ("energy", lambda v: f"{v / 3.6e6:.3g} kWh" if v >= 3.6e5 else f"{v:,.0f} J"),
}


def run_costs(metrics: dict[str, float], tags: dict[str, str]) -> dict[str, float]:
    """A finished run's cost columns (NaN where the run did not record one)."""
    found = {}
    for column, keys in RUN_COLUMNS.items():
        values = [metric_names.read(metrics, key) for key in keys]
        found[column] = next((v for v in values if not math.isnan(v)), math.nan)
    if math.isnan(found["parameters"]) and tags.get("parameters"):  # runs logged before cost/
        found["parameters"] = float(tags["parameters"].replace(",", ""))
    return found


def row_costs(group: pd.DataFrame) -> dict[str, float]:
    """The mean of each cost column over a row's seeds."""
    return {f"{column}_mean": group[column].mean() if column in group else math.nan for column in ROW_COLUMNS}


def shown(column: str, value: float) -> str:
    return "" if value is None or math.isnan(value) else ROW_COLUMNS[column][1](value)


@dataclass(frozen=True)
class CostRatio:
    """A model's cost over the baseline's, the geometric mean over the compared datasets (NaN where
    either side did not record it)."""

    parameters: float
    flops: float
    train_time: float

    def words(self) -> str:
        parts = []
        if not math.isnan(self.parameters):
            parts.append(f"{_percent(self.parameters)} parameters")
        if not math.isnan(self.flops):
            parts.append(f"{_percent(self.flops)} FLOPs")
        if not math.isnan(self.train_time):
            parts.append(f"{self.train_time:.2g} times the training time")
        return ", ".join(parts)


def cost_ratio(model_rows: dict[str, dict], baseline_rows: dict[str, dict], datasets: list[str]) -> CostRatio:
    """``model_rows`` and ``baseline_rows``: dataset -> that row of the per-dataset table."""

    def geometric(column: str) -> float:
        ratios = [model_rows[d][column] / baseline_rows[d][column] for d in datasets]
        ratios = [r for r in ratios if r == r and r > 0 and math.isfinite(r)]
        return float(np.exp(np.mean(np.log(ratios)))) if len(ratios) == len(datasets) and ratios else math.nan

    return CostRatio(geometric("parameters_mean"), geometric("gflops_mean"), geometric("train_time_s_mean"))


def _percent(ratio: float) -> str:
    change = 100 * (ratio - 1)
    return f"{change:+.0f} %" if abs(change) >= 1 else f"{change:+.1f} %"
