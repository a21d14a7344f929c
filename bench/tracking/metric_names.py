"""What the metrics a run logs are called.

Every metric has a sectioned name, a section, a slash and a name: `train/` (the training pass, the
schedule and time), `val/` (validation, the best epoch), `test/` (the test split: the headline
weights, then `best_` and `last_` per weight set), `gradflow/` (the gradient-flow analysis), `cost/`
(FLOPs, throughput, memory, time and energy, units in the names), `study/` (a study's own run); MLflow's system-metrics monitor adds `system/`. The project reads metrics by
these names.

A run logs its curves (a value per epoch) under them, so the MLflow UI charts each section apart; it
logs its results (one value at the end: the test metrics, the gradient-flow scores, the best epoch)
under their flat names (`test_top1`, `gradient_health`, `best_val_acc`, `cost_train_time_s`), which the UI groups after
the curves, in its "Model metrics" section: the sections are charted alphabetically, and `gradflow`
and `test` would otherwise come before `train` and `val`. Runs logged before sections used the flat
names for everything. `read`, `history_keys` and `canonical` find a metric under either name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# The flat name each run logged before sections -> its sectioned name. Test metrics follow a rule
# (`test_<m>` -> `test/<m>`, `test_best_<m>` -> `test/best_<m>`), as their set depends on the dataset.
_SECTIONED = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "lr": "train/lr",
    "lr_reduced": "train/lr_reduced",
    "epoch_time_s": "train/epoch_time_s",
    "images_per_s": "train/images_per_s",
    "epochs_run": "train/epochs_run",
    "stopped_early": "train/stopped_early",
    "train_time_s": "train/time_s",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "best_val_acc": "val/best_acc",
    "best_epoch": "val/best_epoch",
    "improved": "val/improved",
    "gradient_health": "gradflow/health",
    "gradient_health_notebook": "gradflow/health_notebook",
    "gradient_vanishing_layers": "gradflow/vanishing_layers",
    "gradient_exploding_layers": "gradflow/exploding_layers",
    "gradient_layers": "gradflow/layers",
    "gradflow_batches": "gradflow/batches",
    "gradflow_batch_size": "gradflow/batch_size",
}
_FLAT = {sectioned: flat for flat, sectioned in _SECTIONED.items()}

# What an epoch record keeps for the run's cost totals (the `cost/` metrics logged when the run
# ends), not logged per epoch.
COST_RECORD_FIELDS = frozenset({"train_s", "train_images", "val_s", "val_images", "energy_j", "peak_memory_bytes", "budget_spent"})

SECTIONS = ("train", "val", "test", "gradflow", "cost", "study", "system")


def sectioned(flat: str) -> str:
    """The key under which a run logs what its record (EpochRecord, summary, test scalars) calls `flat`."""
    name = canonical(flat)
    if name == flat:
        raise KeyError(f"no section for metric {flat!r}: add it to bench/metric_names.py")
    return name


def result(key: str) -> str:
    """The name a run logs a result (one value at the end of the run) under: its flat name."""
    return legacy(key)


def canonical(name: str) -> str:
    """The sectioned name of a metric a run logged under `name` (flat or sectioned); unknown names as they are."""
    if name in _SECTIONED:
        return _SECTIONED[name]
    section, _, rest = name.partition("_")
    return f"{section}/{rest}" if rest and section in RULE_SECTIONS else name


def test_key(metric: str, weights: str | None = None) -> str:
    """`test/<metric>` for the headline weights, `test/<weights>_<metric>` for one weight set."""
    return f"test/{metric}" if weights is None else f"test/{weights}_{metric}"


def study_key(name: str) -> str:
    return f"study/{name}"


# Sections whose metrics are named flat by a rule, `<section>_<name>`: their set depends on the dataset
# (test) or grows with the project (cost).
RULE_SECTIONS = ("test", "cost")


def legacy(key: str) -> str:
    """The flat name of `key`: the one runs logged before sections used, or the rule's (`cost/x` ->
    `cost_x`); the key itself when it has none."""
    if key in _FLAT:
        return _FLAT[key]
    section, _, name = key.partition("/")
    return f"{section}_{name}" if name and section in RULE_SECTIONS else key


def history_keys(key: str) -> tuple[str, ...]:
    """The names to look `key` up under, newest first."""
    return tuple(dict.fromkeys((key, legacy(key))))


def read(metrics: Mapping[str, float], key: str, default: float = math.nan) -> float:
    """A run's latest value of `key`, from a run logged with sections or before them."""
    for name in history_keys(key):
        if name in metrics:
            return metrics[name]
    return default


def has(metrics: Mapping[str, float], key: str) -> bool:
    return any(name in metrics for name in history_keys(key))
