"""What a depth-width study found: best trial, top trials, parameter importances and Optuna's plots.

Everything is read back from the study's storage, so it covers the trials of every worker, machine
and earlier invocation; it is logged as artifacts of the study's parent MLflow run.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd

from bench import tracking
from bench.studies.search_space import PARAMS
from bench.studies.tables import to_markdown
from bench.tracking import metric_names

TOP_K = 10


@dataclass
class StudySummary:
    study_name: str
    storage: str
    parent_run_id: str
    counts: dict[str, int]  # trial state -> number of trials
    trials: pd.DataFrame  # every trial, by number
    top: pd.DataFrame  # the best completed trials
    best: dict[str, Any] | None  # number, value, params, user attributes of the best trial
    importances: dict[str, float]
    importance_note: str | None  # why there are no importances, when there are none
    artifacts: list[str] = field(default_factory=list)
    interrupted: bool = False
    dead_workers: list[str] = field(default_factory=list)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        parameters = attrs.get("parameters")
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "best_val_acc": trial.value,
                **{name: trial.params.get(name) for name in PARAMS},
                "parameters": parameters,
                # accuracy per million parameters: the secondary view of the objective
                "val_acc_per_mparam": trial.value / (parameters / 1e6) if trial.value is not None and parameters else None,
                "epoch_time_s": attrs.get("epoch_time_s"),
                "epochs": attrs.get("epochs"),
                tracking.RUN_ID_FIELD: attrs.get(tracking.RUN_ID_FIELD),
                "note": attrs.get("invalid", ""),
            }
        )
    columns = ["trial", "state", "best_val_acc", *PARAMS, "parameters", "val_acc_per_mparam", "epoch_time_s", "epochs", tracking.RUN_ID_FIELD, "note"]
    return pd.DataFrame(rows, columns=columns)


def importances(study: optuna.Study) -> tuple[dict[str, float], str | None]:
    """Parameter importances, or why there are none (too few completed trials, no variation)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, f"parameter importances need at least 2 completed trials; the study has {len(complete)}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"parameter importances could not be computed ({error.__class__.__name__}: {error})"
    values = {k: float(v) for k, v in found.items()}
    if not values or any(math.isnan(v) for v in values.values()):
        return {}, "parameter importances are undefined (the completed trials do not vary enough)"
    return values, None


def summarise(study: optuna.Study, storage: str, parent_run_id: str, top_k: int = TOP_K) -> StudySummary:
    table = trials_table(study)
    counts = table["state"].value_counts().to_dict() if len(table) else {}
    complete = table[table["state"] == "COMPLETE"].sort_values("best_val_acc", ascending=False)
    best = None
    if len(complete):
        trial = study.best_trial
        best = {"number": trial.number, "value": trial.value, "params": trial.params, "user_attrs": trial.user_attrs}
    found, note = importances(study)
    return StudySummary(
        study_name=study.study_name,
        storage=storage,
        parent_run_id=parent_run_id,
        counts={str(k): int(v) for k, v in counts.items()},
        trials=table,
        top=complete.head(top_k).reset_index(drop=True),
        best=best,
        importances=found,
        importance_note=note,
    )


PLOTS = {
    "optimization_history": "plot_optimization_history",
    "parallel_coordinate": "plot_parallel_coordinate",
    "param_importances": "plot_param_importances",
}


def _draw(study: optuna.Study, plot_name: str, path) -> None:
    from bench.core.plots import pyplot

    plt = pyplot()
    import optuna.visualization.matplotlib as ovm

    # Optuna's plots switch the global style to ggplot; rc_context puts it back afterwards.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        axes = getattr(ovm, plot_name)(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(max(figure.get_size_inches()[0], 9), max(figure.get_size_inches()[1], 6))
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)


def log_to_run(logger: tracking.RunLogger, study: optuna.Study, summary: StudySummary) -> None:
    """Tables, best trial, importances and plots as artifacts of the parent run (under `study/`)."""
    logger.log_text(summary.trials.to_csv(index=False), "study/trials.csv")
    logger.log_text(summary.top.to_csv(index=False), "study/top_trials.csv")
    logger.log_text(to_markdown(summary.top.drop(columns=["note"])), "study/top_trials.md")
    logger.log_json(summary.best, "study/best_trial.json")
    logger.log_json({"importances": summary.importances, "note": summary.importance_note}, "study/importances.json")
    summary.artifacts += [f"study/{n}" for n in ("trials.csv", "top_trials.csv", "top_trials.md", "best_trial.json", "importances.json")]
    drawable = {
        "optimization_history": summary.counts.get("COMPLETE", 0) > 0,
        "parallel_coordinate": summary.counts.get("COMPLETE", 0) > 0,
        "param_importances": bool(summary.importances),  # importances.json says why not
    }
    for name, plot_name in PLOTS.items():
        if not drawable[name]:
            continue
        try:
            logger.log_figure(lambda p, plot_name=plot_name: _draw(study, plot_name, p), f"study/{name}.png")
        except (ValueError, RuntimeError) as error:
            logger.log_text(f"{error.__class__.__name__}: {error}\n", f"study/{name}.error.txt")
            continue
        summary.artifacts.append(f"study/{name}.png")
    metrics = {metric_names.study_key(f"trials_{state.lower()}"): float(n) for state, n in summary.counts.items()}
    if summary.best is not None:
        metrics[metric_names.study_key("best_val_acc")] = summary.best["value"]
        logger.set_tags({"best_trial": str(summary.best["number"]), **{f"best.{k}": str(v) for k, v in summary.best["params"].items()}})
    logger.log_metrics(metrics, step=len(summary.trials))
