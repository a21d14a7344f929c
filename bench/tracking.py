"""The MLflow adapter: the only module that imports MLflow.

Runs are addressed by explicit run ids through `MlflowClient`, so the parent process can create the
store, the experiment and the runs once, and worker processes (or machines) attach to them.
A run is found again by its `config_hash` tag: that is how a finished configuration is skipped and an
interrupted one resumed in the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from bench.errors import BenchError

DEFAULT_EXPERIMENT = "gradattn-bench"
FINISHED, RUNNING, FAILED, KILLED = "FINISHED", "RUNNING", "FAILED", "KILLED"
log = logging.getLogger(__name__)


def resolve_uri(uri: str | None) -> str:
    """An explicit --tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's own default."""
    import mlflow

    if uri:
        return uri
    return mlflow.get_tracking_uri()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _quiet_mlflow() -> None:
    # The store's schema-migration chatter and the per-request retry warnings hide our own output.
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def prepare(uri: str, experiment: str) -> str:
    """Create (or migrate) the store and the experiment once, before any worker starts.

    Several processes opening a fresh sqlite store at once race in its schema migration and corrupt
    it; doing it here, in the parent, leaves workers only an existing, migrated store to open.
    Returns the experiment id. An unreachable or misconfigured store is a BenchError.
    """
    _quiet_mlflow()
    if uri.startswith("http://") or uri.startswith("https://"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        c = client(uri)
        found = c.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise BenchError(
                    f"Experiment {experiment!r} is deleted in {uri}; restore it in the MLflow UI or choose another --experiment."
                )
            return found.experiment_id
        return c.create_experiment(experiment)
    except BenchError:
        raise
    except Exception as error:
        raise BenchError(
            f"Cannot use the MLflow tracking store {uri} ({_one_line(error)}); check --tracking-uri "
            "(or MLFLOW_TRACKING_URI) and that the server is running."
        ) from error


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0][:160]}" if text else error.__class__.__name__


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
        raise BenchError(f"No experiment {experiment!r} in {uri}; run `bench run` first or pass --experiment.")
    return found.experiment_id


def create_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    return client(uri).create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


class RunLogger:
    """Logs one run's parameters, per-epoch metrics and artifacts; an engine callback.

    Every call goes through `_retry`, so a tracking server that goes away for a while costs retries,
    not the run (training and checkpoints carry on locally).
    """

    def __init__(self, uri: str, run_id: str, retries: int = 5, backoff_s: float = 1.0) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client = client(uri)
        self.retries = retries
        self.backoff_s = backoff_s

    def _retry(self, action, *args, **kwargs):
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return action(*args, **kwargs)
            except Exception as error:  # network or store hiccup: back off and try again
                if attempt == self.retries:
                    raise
                log.warning("MLflow call failed (%s); retrying in %.0f s", _one_line(error), delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- parameters, tags, metrics -------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self._retry(self.client.get_run, self.run_id).data.params
        fresh = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        for start in range(0, len(fresh), 100):
            self._retry(self.client.log_batch, self.run_id, params=fresh[start : start + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        self._retry(self.client.log_batch, self.run_id, tags=batch)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for start in range(0, len(batch), 500):
            self._retry(self.client.log_batch, self.run_id, metrics=batch[start : start + 500])

    # -- artifacts -----------------------------------------------------------------------------------
    def log_file(self, path: Path, artifact_dir: str | None = None) -> None:
        self._retry(self.client.log_artifact, self.run_id, str(path), artifact_dir)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._write_and_log(artifact_file, lambda p: p.write_text(text))

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    def _write_and_log(self, artifact_file: str, write) -> None:
        directory, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            write(path)
            self.log_file(path, directory or None)

    def log_figure(self, draw, artifact_file: str) -> None:
        """`draw(path)` writes an image; it is logged under `artifact_file`."""
        self._write_and_log(artifact_file, draw)

    def end(self, status: str) -> None:
        self._retry(self.client.set_terminated, self.run_id, status)

    # -- engine callbacks ----------------------------------------------------------------------------
    def on_fit_start(self, start_epoch: int, history) -> None:
        """On resume, log the checkpointed epochs MLflow missed (a kill can fall between the two)."""
        if not history:
            return
        logged = {step for step, _ in self._retry(metric_history, self.uri, self.run_id, "val_acc")}
        for record in history:
            if record.epoch not in logged:
                self.on_epoch_end(record)

    def on_epoch_end(self, record) -> None:
        metrics = asdict(record)
        epoch = metrics.pop("epoch")
        for flag in ("improved", "lr_reduced"):
            metrics[flag] = float(metrics[flag])
        self.log_metrics(metrics, step=epoch)

    def on_gradflow(self, epoch: int, report) -> None:
        self.log_text(report.to_json(), f"gradflow/epochs/epoch_{epoch:03d}.json")


def run_status(uri: str, run_id: str) -> str:
    return client(uri).get_run(run_id).info.status


def download_artifact(uri: str, run_id: str, artifact_path: str, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    return Path(
        download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=uri)
    )


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [f.path for f in client(uri).list_artifacts(run_id, path)]


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(uri).get_metric_history(run_id, key)]


def iter_params(run) -> Iterable[tuple[str, str]]:
    return run.data.params.items()
