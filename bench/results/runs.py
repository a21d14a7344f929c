"""The runs a report reads: each finished grid run of an experiment as one row (its chosen metric,
its recorded settings and results), and the unfinished seeds beside them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench import tracking
from bench.config.spec import analysis_only_keys
from bench.core.errors import BenchError
from bench.results import cost, references
from bench.tracking import metric_names

BASELINE = "resnet18"


NOT_SETTINGS = {"seed", "dataset", "model"}  # the row's own columns, or (the seed) what a row pools


ALWAYS_SHOWN = ("preprocessing", "splits", "split_seed")


PREDICTIONS = "evaluation/test_predictions.csv"


METRICS = {  # what --metric accepts besides any logged test metric's own name -> that name
    "top1": "top1", "top-1": "top1", "balanced_acc": "balanced_accuracy", "balanced_accuracy": "balanced_accuracy",
    "macro_f1": "f1_macro", "f1_macro": "f1_macro",
}


LOWER_IS_BETTER = {"test_loss", "ece", "avg_entropy", "std_confidence"}


SHOWN_METRIC = {"top1": "test top-1 %", "balanced_accuracy": "balanced accuracy %", "f1_macro": "macro-F1 %"}


def metric_name(metric: str) -> str:
    """A --metric as the test metric it names: top1, balanced_acc, macro_f1, or a logged metric's name."""
    name = METRICS.get(metric.strip().lower(), metric.strip())
    if name in LOWER_IS_BETTER:
        raise BenchError(f"--metric {metric}: lower is better for {name}; compare with top1, balanced_acc, macro_f1 or another score.")
    return name


def _settings(run) -> dict:
    analysis = analysis_only_keys()
    settings = {k: v for k, v in run.params.items() if k not in NOT_SETTINGS and k not in analysis}
    settings.setdefault("preprocessing", run.tags.get("preprocessing", "protocol"))
    settings.setdefault("splits", run.tags.get("splits", "protocol"))
    # Runs made before split seeds existed split with their training seed.
    settings.setdefault("split_seed", run.tags.get("split_seed", run.tags["seed"]))
    return settings


def collect_runs(uri: str, experiment: str, metric: str = "top1") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per finished grid run with a test result: the newest run of each (configuration,
    seed); one row per unfinished seed, for the seed accounting: failed, diverged or interrupted)."""
    exp_id = tracking.experiment_id(uri, experiment)
    rows, others = [], []
    known = set()
    for run in tracking.grid_runs(uri, exp_id):
        tags, metrics = run.tags, run.metrics
        if "dataset" not in tags or "seed" not in tags:
            continue
        settings = _settings(run)
        identity = {"dataset": tags["dataset"], "model": tags["model"], "seed": int(tags["seed"]), "settings": json.dumps(settings, sort_keys=True)}
        if run.status != tracking.FINISHED or not metric_names.has(metrics, "test/top1"):
            if run.status != tracking.RUNNING:
                diverged = tags.get("failure", "").startswith("Diverged")
                kind = "diverged" if diverged else "failed" if run.status == tracking.FAILED else "interrupted"
                others.append(identity | {"run_id": run.run_id, "start_time": run.start_time, "outcome": kind})
            continue
        known |= set(metrics)
        rows.append(identity | _finished(run, settings, metric))
    if not rows:
        raise BenchError(f"Experiment {experiment!r} has no finished runs; start some with `bench run` first.")
    if not metric_names.has(dict.fromkeys(known, 0), f"test/{metric}"):
        test_metrics = sorted({m.removeprefix("test/") for m in known if m.startswith("test/") and not m.startswith(("test/best_", "test/last_"))})
        raise BenchError(f"No run of experiment {experiment!r} logged test/{metric}; choose --metric from: {', '.join(test_metrics)}.")
    frame = pd.DataFrame(rows).sort_values("start_time")
    frame = frame.drop_duplicates(["dataset", "model", "settings", "seed"], keep="last").reset_index(drop=True)
    frame["at_chance"] = [_at_chance(uri, run) for run in frame.itertuples()]
    unfinished = pd.DataFrame(others, columns=["dataset", "model", "seed", "settings", "run_id", "start_time", "outcome"])
    finished = set(zip(frame.dataset, frame.model, frame.settings, frame.seed))
    keep = np.array([k not in finished for k in zip(unfinished.dataset, unfinished.model, unfinished.settings, unfinished.seed)], dtype=bool)
    unfinished = unfinished.loc[keep]
    unfinished = unfinished.sort_values("start_time").drop_duplicates(["dataset", "model", "settings", "seed"], keep="last")
    return frame, unfinished.reset_index(drop=True)


def _finished(run, settings: dict, metric: str) -> dict:
    tags, metrics = run.tags, run.metrics

    def percent(key):
        return 100 * metric_names.read(metrics, key)

    return {
        "run_id": run.run_id,
        "start_time": run.start_time,
        "preprocessing": settings["preprocessing"],
        "splits": settings["splits"],
        "split_seed": int(settings["split_seed"]),
        "analysis": json.dumps({k: v for k, v in run.params.items() if k in analysis_only_keys()}, sort_keys=True),
        "score": percent(f"test/{metric}"),
        "top1": percent("test/top1"),
        "balanced": percent("test/balanced_accuracy"),
        "top1_best": percent("test/best_top1"),
        "top1_last": percent("test/last_top1"),
        "best_val_acc": metric_names.read(metrics, "val/best_acc"),
        "num_classes": int(tags.get("num_classes", 0)),
        "test_examples": int(tags["test_examples"]) if tags.get("test_examples") else 0,
        "class_ratio": float(tags.get("class_ratio", "nan")),
        "final_weights": tags.get("final_weights", ""),
        "primary": tags.get("primary"),
        "environment": json.dumps({k: v for k, v in sorted(tags.items()) if k.startswith("env.") and k != "env.torch_threads"}),
        "published_cell": int(tags["published_cell"]) if tags.get("published_cell") else None,
        "published_deviations": tags.get("published_deviations", ""),
        "health": percent("gradflow/health"),
        "health_notebook": percent("gradflow/health_notebook"),
        "layers": metric_names.read(metrics, "gradflow/layers"),
        "vanishing": metric_names.read(metrics, "gradflow/vanishing_layers"),
        "exploding": metric_names.read(metrics, "gradflow/exploding_layers"),
        "gradflow_batches": metric_names.read(metrics, "gradflow/batches"),
        "gradflow_batch_size": metric_names.read(metrics, "gradflow/batch_size"),
        **cost.run_costs(metrics, tags),
    }


def _at_chance(uri: str, run) -> bool:
    if not run.num_classes or math.isnan(run.best_val_acc):
        return False
    train_acc = [value for _, value in sorted(tracking.metric_history(uri, run.run_id, "train/acc"))]
    return references.at_chance_while_training(run.best_val_acc, train_acc, run.num_classes)


class Predictions:
    """Per-example test correctness of a run's headline weights, read from its artifact once."""

    def __init__(self, uri: str, folder: Path) -> None:
        self.uri, self.folder, self._cache = uri, folder, {}

    def correct(self, run) -> tuple[np.ndarray, np.ndarray] | None:
        if run.run_id not in self._cache:
            self._cache[run.run_id] = self._read(run)
        return self._cache[run.run_id]

    def _read(self, run):
        try:
            path = tracking.download_artifact(self.uri, run.run_id, PREDICTIONS, self.folder / run.run_id)
            table = pd.read_csv(path)
        except Exception:  # runs made before predictions were kept, or an unreadable artifact
            return None
        column = f"pred_{run.final_weights}"
        if column not in table:
            return None
        labels = table["label"].to_numpy()
        return labels, table[column].to_numpy() == labels
