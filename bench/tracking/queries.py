"""What the rest of the project asks the store: runs, their status, metric history, artifacts, models."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bench import metric_names
from bench.errors import BenchError
from bench.tracking.failures import http_status
from bench.tracking.store import client, shown_uri


def find_runs(uri: str, experiment_id: str, config_hash: str) -> list:
    """All runs of this experiment carrying this config hash, newest first."""
    return client(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.config_hash = '{config_hash}'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )


def runs_of(uri: str, experiment_id: str, filter_string: str = "", status: str | None = None) -> list:
    """Every run of an experiment (paged), optionally only those with a given status."""
    c = client(uri)
    found, token = [], None
    while True:
        page = c.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            break
    return [r for r in found if status is None or r.info.status == status]


def experiment_id(uri: str, experiment: str) -> str:
    found = client(uri).get_experiment_by_name(experiment)
    if found is None:
        raise BenchError(f"No experiment {experiment!r} in {shown_uri(uri)}; run `bench run` first or pass --experiment.")
    return found.experiment_id


def create_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    return client(uri).create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def delete_run(uri: str, run_id: str) -> None:
    client(uri).delete_run(run_id)


def run_state(uri: str, run_id: str) -> tuple[str, str] | None:
    """(status, lifecycle stage) of a run, None when this store has no such run."""
    try:
        run = client(uri).get_run(run_id)
    except Exception as error:
        if http_status(error) == 404 or "RESOURCE_DOES_NOT_EXIST" in str(error) or "not found" in str(error).lower():
            return None
        raise
    return run.info.status, run.info.lifecycle_stage


def run_status(uri: str, run_id: str) -> str:
    return client(uri).get_run(run_id).info.status


def download_artifact(uri: str, run_id: str, artifact_path: str, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    return Path(
        download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=uri)
    )


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [f.path for f in client(uri).list_artifacts(run_id, path)]


def logged_models(uri: str, run_id: str) -> list:
    """The MLflow models a run logged (its "Logged models"), oldest first."""
    c = client(uri)
    experiment_id = c.get_run(run_id).info.experiment_id
    found = c.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return sorted(found, key=lambda m: m.creation_timestamp)


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key`, from a run logged with metric sections or before them."""
    c = client(uri)
    for name in metric_names.history_keys(key):
        history = [(m.step, m.value) for m in c.get_metric_history(run_id, name)]
        if history:
            return history
    return []


def iter_params(run) -> Iterable[tuple[str, str]]:
    return run.data.params.items()
