"""The project's own records of what the store holds; no MLflow object leaves this package."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.tracking import metric_names

FINISHED, RUNNING, FAILED, KILLED = "FINISHED", "RUNNING", "FAILED", "KILLED"

# Tags of our own that the queries read.
CONFIG_HASH_TAG = "config_hash"  # the identity of a run's settings (RunSpec.config_hash): how it is found again
TRIAL_TAG = "trial_number"  # an Optuna trial's run: it shares its configuration's hash with grid runs
STUDY_KIND_TAG = "study_kind"  # a study's own run (a depth-width study, a sensitivity analysis)
STUDY_TAG = "optuna_study"  # the Optuna study a study's run or a trial's run belongs to
REPORT_TAG = "bench_report"  # the run `bench report --log` writes the report's files to
# MLflow's own: the run a run is nested under in the UI.
PARENT_RUN_TAG = "mlflow.parentRunId"
# How an Optuna trial's attributes and the study tables name the trial's tracked run.
RUN_ID_FIELD = "mlflow_run_id"


@dataclass(frozen=True)
class Run:
    """One tracked run as the store holds it now."""

    run_id: str
    name: str
    experiment_id: str
    status: str  # FINISHED, RUNNING, FAILED, KILLED (or SCHEDULED)
    start_time: int | None  # milliseconds since the epoch
    end_time: int | None  # None while it has not ended
    deleted: bool  # deleted in the UI (its lifecycle stage), restorable there
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each metric, by its sectioned name (metric_names.canonical)


def is_grid_run(run: Run) -> bool:
    """A run of the dataset x model grid: neither an Optuna trial, a study's own run nor the report's."""
    return not {TRIAL_TAG, STUDY_KIND_TAG, REPORT_TAG} & set(run.tags)


@dataclass(frozen=True)
class LoggedModel:
    """A model a run logged (the UI's "Logged models")."""

    model_id: str
    name: str
    status: str  # READY, PENDING or FAILED
    tags: dict[str, str]
    artifact_location: str
    created: int  # milliseconds since the epoch


def model_name(run_name: str) -> str:
    """A run's logged model is named after the run, `digits/resnet18/42` as `digits-resnet18-42`:
    MLflow refuses /, :, ., %, and quotes in a model's name."""
    return re.sub(r"[/:.%\"']+", "-", run_name).strip("-")


def run_record(run) -> Run:
    """Our record of an MLflow `Run`."""
    info, data = run.info, run.data
    return Run(
        run_id=info.run_id,
        name=info.run_name,
        experiment_id=info.experiment_id,
        status=info.status,
        start_time=info.start_time,
        end_time=info.end_time,
        deleted=info.lifecycle_stage == "deleted",
        tags=dict(data.tags),
        params=dict(data.params),
        metrics=_canonical(data.metrics),
    )


def _canonical(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics by their sectioned names, whichever name the run logged each under. Where a run
    holds both, the flat name's value stands: a result (the final gradient-flow score) over the last
    point of a curve of the same quantity (the score at each analysed epoch)."""
    sectioned = {name: value for name, value in metrics.items() if metric_names.canonical(name) == name}
    return sectioned | {metric_names.canonical(name): value for name, value in metrics.items() if metric_names.canonical(name) != name}


def model_record(model) -> LoggedModel:
    """Our record of an MLflow `LoggedModel`."""
    status = getattr(model.status, "name", None) or str(model.status)
    return LoggedModel(model.model_id, model.name, status, dict(model.tags), model.artifact_location, model.creation_timestamp)
