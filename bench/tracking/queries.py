"""What the rest of the project asks the store: runs, their status, metric history, artifacts, models.

Every answer is one of our records (`bench.tracking.records`) or plain values.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.core.errors import BenchError
from bench.tracking import metric_names
from bench.tracking.failures import http_status
from bench.tracking.records import (
    CONFIG_HASH_TAG,
    PARENT_RUN_TAG,
    STUDY_KIND_TAG,
    STUDY_TAG,
    LoggedModel,
    Run,
    is_grid_run,
    model_record,
    run_record,
)
from bench.tracking.store import client, shown_uri


def experiment_id(uri: str, experiment: str) -> str:
    found = client(uri).get_experiment_by_name(experiment)
    if found is None:
        raise BenchError(f"No experiment {experiment!r} in {shown_uri(uri)}; run `bench run` first or pass --experiment.")
    return found.experiment_id


# -- runs ------------------------------------------------------------------------------------------


def get_run(uri: str, run_id: str) -> Run:
    return run_record(client(uri).get_run(run_id))


def find_run(uri: str, run_id: str) -> Run | None:
    """The run, None when this store has no such run."""
    try:
        return get_run(uri, run_id)
    except Exception as error:
        if http_status(error) == 404 or "RESOURCE_DOES_NOT_EXIST" in str(error) or "not found" in str(error).lower():
            return None
        raise


def run_status(uri: str, run_id: str) -> str:
    return client(uri).get_run(run_id).info.status


def runs_of(uri: str, experiment_id: str, tags: dict[str, str] | None = None, status: str | None = None) -> list[Run]:
    """Every run of an experiment, newest first; only those carrying `tags` (all of them, with these
    values) and with `status`, when given."""
    c = client(uri)
    where = " and ".join(f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items())
    found, token = [], None
    while True:
        page = c.search_runs([experiment_id], filter_string=where, order_by=["attributes.start_time DESC"], max_results=1000, page_token=token)
        found.extend(run_record(r) for r in page)
        token = page.token
        if not token:
            break
    return [run for run in found if status is None or run.status == status]


def grid_runs(
    uri: str, experiment_id: str, *, config_hash: str | None = None, dataset: str | None = None, status: str | None = None
) -> list[Run]:
    """The runs of the dataset x model grid (`is_grid_run`), newest first; only those of one
    configuration, of one dataset, with one status, when given."""
    tags = {CONFIG_HASH_TAG: config_hash, "dataset": dataset}
    found = runs_of(uri, experiment_id, {k: v for k, v in tags.items() if v is not None}, status)
    return [run for run in found if is_grid_run(run)]


def study_runs(uri: str, experiment_id: str, kind: str, study: str) -> list[Run]:
    """The runs of one study of a kind (its parent run, its analysis run), newest first."""
    return runs_of(uri, experiment_id, {STUDY_TAG: study, STUDY_KIND_TAG: kind})


def create_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
    """A new RUNNING run; nested under `parent_run_id` in the UI, when given."""
    tags = tags | ({PARENT_RUN_TAG: parent_run_id} if parent_run_id else {})
    return client(uri).create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def set_status(uri: str, run_id: str, status: str) -> None:
    """Set a run's status as it is, e.g. RUNNING again for a study's run that goes on (no end time);
    a run that ends goes through `RunLogger.end`."""
    client(uri).update_run(run_id, status=status)


def delete_run(uri: str, run_id: str) -> None:
    client(uri).delete_run(run_id)


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key`, from a run logged with metric sections or before them."""
    c = client(uri)
    for name in metric_names.history_keys(key):
        history = [(m.step, m.value) for m in c.get_metric_history(run_id, name)]
        if history:
            return history
    return []


# -- artifacts and models ----------------------------------------------------------------------------


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [f.path for f in client(uri).list_artifacts(run_id, path)]


def download_artifact(uri: str, run_id: str, artifact_path: str, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file read is noise
    return Path(download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=uri))


def logged_models(uri: str, run_id: str) -> list[LoggedModel]:
    """The models a run logged (its "Logged models"), oldest first."""
    c = client(uri)
    found = search_logged_models(c, run_id, c.get_run(run_id).info.experiment_id)
    return sorted((model_record(m) for m in found), key=lambda m: m.created)


def search_logged_models(c, run_id: str, experiment_id: str) -> list:
    """MLflow's own entities of the models `run_id` logged in its experiment (for tracking's modules)."""
    return c.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'")
