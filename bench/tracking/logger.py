"""RunLogger: one run's parameters, metrics, dataset, artifacts and model, an engine callback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError, DiskFull, out_of_space
from bench.tracking import metric_names
from bench.tracking.failures import network_reason, one_line, retry_creation_race, store_away, transient
from bench.tracking.outbox import Outbox, outbox_root
from bench.tracking.queries import search_logged_models
from bench.tracking.records import FINISHED
from bench.tracking.store import client, http_defaults, quiet_mlflow, shown_uri
from bench.train.callbacks import Callback

log = logging.getLogger(__name__)
DEFAULT_FINAL_WAIT_S = 300.0  # how long a finished run waits for an absent server before giving up


class TrackingUnavailable(BenchError):
    """The tracking server stayed away past the end of a run; the run is checkpointed and resumable."""


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, resumed: bool = True, enabled: bool = True):
    """Sample CPU, memory, disk, network (and GPU where pynvml sees one) into the run's `system/`
    metrics with MLflow's own monitor, while the block runs (``enabled``: --system-metrics)."""
    if not enabled:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    quiet_mlflow()
    try:  # cosmetic: a store that cannot answer now must not fail the run
        monitor = SystemMetricsMonitor(run_id, tracking_uri=uri, resume_logging=resumed)
        monitor.start()
    except Exception as error:
        log.warning("system metrics are off for run %s (%s)", run_id, one_line(error))
        yield
        return
    try:
        yield
    finally:
        monitor.finish()
        _publish_last_samples(monitor, run_id)


def _publish_last_samples(monitor, run_id: str) -> None:
    """Log the samples of the last, cut-short interval: MLflow's monitor drops them when it stops,
    so a run shorter than one sampling interval would otherwise have no system metrics at all."""
    try:
        samples = monitor.aggregate_metrics()
        if samples:
            monitor.publish_metrics(samples)
            monitor.mlflow_logger.flush()
    except Exception as error:  # cosmetic, as above
        log.warning("the last system metrics of run %s were not logged (%s)", run_id, one_line(error))


class RunLogger(Callback):
    """Logs one run's parameters, per-epoch metrics and artifacts; an engine callback.

    A call the store cannot take because it is unreachable is retried `retries` times with backoff,
    then queued in the run's `Outbox`, and training goes on; queued calls are replayed in order,
    with growing pauses between attempts, as soon as the store answers. `end` waits up to
    `final_wait_s` for the queue to drain; if the store is still away it raises
    `TrackingUnavailable` and leaves the run RUNNING, so the same command resumes and completes it.
    A request the store rejects (a 4xx answer) raises at once.
    """

    def __init__(
        self,
        uri: str,
        run_id: str,
        retries: int = 2,
        backoff_s: float = 1.0,
        outbox_dir: Path | None = None,
        final_wait_s: float | None = None,
    ) -> None:
        http_defaults(uri)
        self.uri = uri
        self.run_id = run_id
        self._client = client(uri)
        self.retries = retries
        self.backoff_s = backoff_s
        self.outbox = Outbox(Path(outbox_dir) if outbox_dir else outbox_root() / run_id)
        if final_wait_s is None:
            final_wait_s = float(os.environ.get("BENCH_TRACKING_WAIT_S", DEFAULT_FINAL_WAIT_S))
        self.final_wait_s = final_wait_s
        self.detached = False  # gave up at the end of the run: later calls are dropped
        self._next_attempt = 0.0
        self._pause = backoff_s
        self._logged: dict[str, set[int]] | None = None  # see _logged_steps

    def _retry(self, action, *args, **kwargs):
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return action(*args, **kwargs)
            except Exception as error:  # network or store hiccup: back off and try again
                if attempt == self.retries or not transient(error):
                    raise
                log.warning("MLflow call failed (%s); retrying in %.0f s", network_reason(error) or one_line(error), delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- delivery and the outbox ---------------------------------------------------------------------
    def _send(self, kind: str, payload: dict[str, Any], file: Path | None = None) -> None:
        """Deliver now, or queue behind what already waits (order matters: a status comes last)."""
        if self.detached:
            return
        if len(self.outbox):
            self.outbox.put(kind, payload, file)
            self._try_flush()
            return
        try:
            self._retry(self._deliver, kind, payload if file is None else payload | {"file": str(file)})
        except Exception as error:
            if out_of_space(error):  # kept for the next attempt of the run, which replays it once there is room
                self.outbox.put(kind, payload, file)
                raise self._full(kind, payload | ({"file": str(file)} if file else {})) from error
            if not transient(error):
                raise
            log.warning(
                "MLflow at %s is unreachable (%s); training goes on, logging is queued in %s",
                shown_uri(self.uri), network_reason(error) or one_line(error), self.outbox.directory,
            )
            self.outbox.put(kind, payload, file)
            self._next_attempt = time.monotonic() + self._pause

    def _try_flush(self) -> bool:
        """Replay queued calls in order unless the last attempt was too recent; True when drained."""
        if time.monotonic() < self._next_attempt:
            return False
        for entry in self.outbox.entries():
            read = self.outbox.read(entry)
            if read is None:
                continue
            kind, payload = read
            try:
                self._deliver(kind, payload)
            except Exception as error:
                if out_of_space(error):
                    raise self._full(kind, payload) from error
                if transient(error):
                    self._next_attempt = time.monotonic() + self._pause
                    self._pause = min(self._pause * 2, 60.0)
                    return False
                log.warning("MLflow rejected a queued %s call (%s); dropping it", kind, one_line(error))
            self.outbox.remove(entry)
        log.warning("MLflow at %s is back; the queued calls of run %s are delivered", shown_uri(self.uri), self.run_id)
        self._pause = self.backoff_s
        return True

    def flush(self, wait_s: float) -> bool:
        """Deliver everything queued, trying for at most `wait_s` seconds; True when nothing is left."""
        deadline = time.monotonic() + wait_s
        while len(self.outbox):
            if self._try_flush():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(max(0.0, min(self._next_attempt, deadline) - time.monotonic()))
        return True

    def _deliver(self, kind: str, payload: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if kind == "params":
            existing = self._client.get_run(self.run_id).data.params
            fresh = [Param(k, v) for k, v in payload["params"].items() if k not in existing]
            for start in range(0, len(fresh), 100):
                self._client.log_batch(self.run_id, params=fresh[start : start + 100])
        elif kind == "tags":
            self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in payload["tags"].items()])
        elif kind == "metrics":
            logged = self._logged_steps()
            fresh = {}  # once per (key, step), across resumes and replays: the first value stands
            link = payload.get("link") or {}  # the logged model and dataset the values describe
            for key, value, ts, step in payload["metrics"]:
                if step not in logged.get(key, ()):
                    fresh.setdefault((key, step), Metric(key, value, ts, step, **link))
            batch = list(fresh.values())
            for start in range(0, len(batch), 500):
                self._client.log_batch(self.run_id, metrics=batch[start : start + 500])
                for metric in batch[start : start + 500]:
                    logged.setdefault(metric.key, set()).add(metric.step)
        elif kind == "history":  # epochs a checkpoint holds that the store may have missed
            self._deliver("metrics", {"metrics": [row for r in payload["records"] for row in _epoch_metrics(r)]})
        elif kind == "dataset":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            dataset = Dataset(
                name=payload["name"], digest=payload["digest"], source_type="local",
                source=json.dumps({"uri": payload["source"]}), profile=json.dumps(payload["profile"]),
            )
            inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
            # Runs of one grid log the same dataset at once: the store's first writer creates its row.
            retry_creation_race(lambda: self._client.log_inputs(self.run_id, datasets=inputs))
        elif kind == "clear_failure":
            self._clear_failure()
        elif kind == "artifact":
            self._client.log_artifact(self.run_id, payload["file"], payload["artifact_dir"])
        elif kind == "end":
            self._client.set_terminated(self.run_id, payload["status"])

    def _full(self, kind: str, payload: dict[str, Any]) -> DiskFull:
        """The artifact store's folder is full: what a local one holds of the torn copy is removed (the
        call waits in the outbox), and the error names the folder."""
        folder = self._artifact_folder()
        if kind != "artifact" or folder is None:
            return DiskFull(folder or f"the artifact store of run {self.run_id}", f"a {kind} call of run {self.run_id}")
        artifact = folder.joinpath(*filter(None, [payload.get("artifact_dir"), Path(payload["file"]).name]))
        artifact.unlink(missing_ok=True)
        return DiskFull(folder, f"{artifact.relative_to(folder)} of run {self.run_id}")

    def _artifact_folder(self) -> Path | None:
        """The run's artifact folder, when the artifact store is a local folder."""
        from urllib.parse import urlparse

        try:
            location = urlparse(self._client.get_run(self.run_id).info.artifact_uri)
        except Exception:
            return None
        return Path(location.path) if location.scheme in ("", "file") else None

    def _logged_steps(self) -> dict[str, set[int]]:
        """key -> steps the store already holds, read once (a fresh run holds none)."""
        if self._logged is None:
            keys = self._client.get_run(self.run_id).data.metrics
            self._logged = {key: {m.step for m in self._client.get_metric_history(self.run_id, key)} for key in keys}
        return self._logged

    def _clear_failure(self) -> None:
        run = self._client.get_run(self.run_id)
        if "failure" in run.data.tags:
            self._client.delete_tag(self.run_id, "failure")
        if self._client.list_artifacts(self.run_id, "failure"):
            try:
                self._client._tracking_client._get_artifact_repo(self.run_id).delete_artifacts("failure")
            except Exception as error:  # an artifact store without deletes: say so, keep going
                log.warning("could not delete the failure/ artifacts of run %s (%s)", self.run_id, one_line(error))

    # -- parameters, tags, metrics -------------------------------------------------------------------
    def clear_failure(self) -> None:
        """Remove the failure tag and traceback an earlier attempt of this run left."""
        self._send("clear_failure", {})

    def log_params(self, params: dict[str, Any]) -> None:
        self._send("params", {"params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send("tags", {"tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int = 0, model_id: str | None = None, dataset: tuple[str, str] | None = None) -> None:
        """Metrics of the run; also of its logged model `model_id` (the UI's Models page lists them)
        and measured on `dataset` (its name and digest, as the run's dataset input holds them), when given."""
        now = int(time.time() * 1000)
        batch = [[k, float(v), now, step] for k, v in metrics.items() if v is not None]
        link = {"model_id": model_id} if model_id else {}
        if model_id and dataset:
            link |= {"dataset_name": dataset[0], "dataset_digest": dataset[1]}
        if batch:
            self._send("metrics", {"metrics": batch} | ({"link": link} if link else {}))

    def log_dataset(self, name: str, digest: str, source: str, profile: dict[str, Any]) -> None:
        """The run's data as an MLflow dataset input (the runs table's Dataset column)."""
        self._send("dataset", {"name": name, "digest": digest, "source": source, "profile": profile})

    # -- artifacts -----------------------------------------------------------------------------------
    def log_file(self, path: Path, artifact_dir: str | None = None) -> None:
        self._send("artifact", {"artifact_dir": artifact_dir}, file=Path(path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.log_written(artifact_file, lambda p: p.write_text(text))

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    def log_written(self, artifact_file: str, write) -> None:
        """`write(path)` writes a file; it is logged under `artifact_file`."""
        directory, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            write(path)
            self.log_file(path, directory or None)

    def log_figure(self, draw, artifact_file: str) -> None:
        """`draw(path)` writes an image; it is logged under `artifact_file`."""
        self.log_written(artifact_file, draw)

    def log_model(self, model, name: str, step: int, tags: dict[str, str], requirements: list[str]) -> str | None:
        """`model` (a torch module) as the run's MLflow model: listed under "Logged models", registrable,
        and loaded back by `mlflow.pytorch.load_model`. Returns its model id, or None when the store
        answers that it takes no logged models (the caller keeps the weights another way). An absent
        store is waited for up to `final_wait_s`, then a TrackingUnavailable leaves the run resumable.

        Once per run: a model this run already logged under `name` stands; one a kill left half
        logged is deleted first.
        """
        import mlflow.pytorch

        def log_once() -> str:
            experiment_id = self._client.get_run(self.run_id).info.experiment_id
            existing = self._logged_models(experiment_id, name)
            ready = [m for m in existing if str(m.status).endswith("READY")]
            if ready:
                return ready[0].model_id
            for stale in existing:
                self._client.delete_logged_model(stale.model_id)
            # Created here: left to itself, MLflow files a model with no active run under experiment 0.
            created = self._client.create_logged_model(experiment_id, name=name, source_run_id=self.run_id, tags=tags)
            mlflow.set_tracking_uri(self.uri)  # MLflow's model logging reads the process-wide URI
            # pickle: any module tree loads back (torch.export's "pt2" traces only some); loading
            # it runs its code, as for every pickled MLflow model: load models you trust.
            mlflow.pytorch.log_model(
                model, name=name, model_id=created.model_id, run_id=self.run_id, step=step,
                pip_requirements=requirements, serialization_format="pickle",
            )
            return created.model_id

        deadline = time.monotonic() + self.final_wait_s
        while True:
            try:
                return self._retry(log_once)
            except Exception as error:
                if out_of_space(error):
                    raise DiskFull(self._artifact_folder() or f"the artifact store of run {self.run_id}", f"the model of run {self.run_id}") from error
                if not store_away(error):
                    if "API request to" not in str(error):
                        raise  # a failure of our own
                    log.warning("MLflow at %s takes no logged model (%s); the weights of run %s are logged as a file instead",
                                shown_uri(self.uri), one_line(error), self.run_id)
                    return None
                # Away: the run waits for it as its final status does (`end`), so it finishes with its model.
                if time.monotonic() >= deadline:
                    raise TrackingUnavailable(
                        f"MLflow at {shown_uri(self.uri)} stayed unreachable for {self.final_wait_s:.0f} s when run {self.run_id} "
                        "logged its model; its checkpoint is kept: run the same command again once the server is back to finish it."
                    ) from error
                log.warning("MLflow at %s is unreachable (%s); the model of run %s waits for it",
                            shown_uri(self.uri), network_reason(error) or one_line(error), self.run_id)
                time.sleep(max(0.0, min(self.backoff_s * 5, deadline - time.monotonic())))

    def _logged_models(self, experiment_id: str, name: str) -> list:
        return [m for m in search_logged_models(self._client, self.run_id, experiment_id) if m.name == name]

    def end(self, status: str) -> None:
        """Set the final status once everything queued before it is delivered.

        A FINISHED run waits up to `final_wait_s` for an absent store, then raises
        `TrackingUnavailable`; a KILLED or FAILED one does not wait (the next `bench run` resumes it
        either way). In both cases the run stays RUNNING in the store and its queue stays on disk.
        """
        if self.detached:
            return
        self._send("end", {"status": status})
        self._next_attempt = 0.0  # the status is worth one more try right away
        if not len(self.outbox) or self.flush(self.final_wait_s if status == FINISHED else 0.0):
            return
        for entry in self.outbox.entries():  # the status goes last, on the run that completes it
            if (self.outbox.read(entry) or ("",))[0] == "end":
                self.outbox.remove(entry)
        self.detached = True
        if status != FINISHED:
            log.warning("MLflow at %s is unreachable; run %s stays RUNNING and resumes next time", shown_uri(self.uri), self.run_id)
            return
        raise TrackingUnavailable(
            f"MLflow at {shown_uri(self.uri)} stayed unreachable for {self.final_wait_s:.0f} s at the end of run "
            f"{self.run_id}; its checkpoint is kept and {len(self.outbox)} logging call(s) wait in "
            f"{self.outbox.directory}: run the same command again once the server is back to sync and finish it."
        )

    # -- engine callbacks ----------------------------------------------------------------------------
    def on_fit_start(self, start_epoch: int, history) -> None:
        """On resume, log the checkpointed epochs MLflow missed (a kill can fall between the two)."""
        if history:
            self._send("history", {"records": [asdict(record) for record in history]})

    def on_epoch_end(self, record) -> None:
        self._send("metrics", {"metrics": _epoch_metrics(asdict(record))})

    def on_gradflow(self, epoch: int, report) -> None:
        self.log_text(report.to_json(), f"gradflow/epochs/epoch_{epoch:03d}.json")


# Fields of an epoch record that are not curves: the best so far is the run's result at its end
# (`val/best_acc`, `val/best_epoch`), and history.csv keeps it per epoch.
NOT_CHARTED = ("epoch", "best_val_acc", "best_epoch")


def _epoch_metrics(record: dict[str, Any]) -> list[list]:
    """One epoch record as [key, value, timestamp, step] rows (flags as 0/1, missing values left out)."""
    now = int(time.time() * 1000)
    epoch = record["epoch"]
    return [
        [metric_names.sectioned(key), float(value), now, epoch]
        for key, value in record.items()
        if key not in NOT_CHARTED and key not in metric_names.COST_RECORD_FIELDS and value is not None
    ]
