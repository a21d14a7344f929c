"""The MLflow adapter: the only module that imports MLflow.

Runs are addressed by explicit run ids through `MlflowClient`, so the parent process can create the
store, the experiment and the runs once, and worker processes (or machines) attach to them.
A run is found again by its `config_hash` tag: that is how a finished configuration is skipped and an
interrupted one resumed in the same MLflow run.

A tracking server that goes away mid-run does not stop training: `RunLogger` queues what it could not
send in an on-disk outbox and replays it, in order, when the server answers again (see `Outbox`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from bench.errors import BenchError

DEFAULT_EXPERIMENT = "gradattn-bench"
FINISHED, RUNNING, FAILED, KILLED = "FINISHED", "RUNNING", "FAILED", "KILLED"
# What MLflow's store registry accepts; "" and file are local directories (the file store).
SCHEMES = ("", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
DEFAULT_FINAL_WAIT_S = 300.0  # how long a finished run waits for an absent server before giving up
log = logging.getLogger(__name__)


class TrackingUnavailable(BenchError):
    """The tracking server stayed away past the end of a run; the run is checkpointed and resumable."""


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
    _http_defaults(uri)
    _check_scheme(uri)
    try:
        c = client(uri)
        found = c.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise BenchError(
                    f"Experiment {experiment!r} is deleted in {shown_uri(uri)}; restore it in the MLflow UI or choose another --experiment."
                )
            return found.experiment_id
        return c.create_experiment(experiment)
    except BenchError:
        raise
    except Exception as error:
        if _missing_module(error):
            raise BenchError(
                f"The MLflow tracking store {shown_uri(uri)} needs the Python module {_missing_module(error)!r}; "
                "install it (for PostgreSQL: pip install 'gradattn-bench[postgres]')."
            ) from error
        if _http_status(error) in (401, 403):
            raise BenchError(
                f"The MLflow server {shown_uri(uri)} refused the request (HTTP {_http_status(error)}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of its basic-auth app."
            ) from error
        raise BenchError(
            f"Cannot use the MLflow tracking store {shown_uri(uri)} ({_network_reason(error) or _one_line(error)}); "
            "check --tracking-uri (or MLFLOW_TRACKING_URI) and that the server is running."
        ) from error


def _http_defaults(uri: str) -> None:
    # MLflow's own defaults retry a refused connection for minutes; fail fast and let the outbox wait.
    if uri.startswith("http://") or uri.startswith("https://"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _check_scheme(uri: str) -> None:
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter, i.e. a local path
        return
    if scheme not in SCHEMES:
        raise BenchError(
            f"Unsupported tracking URI scheme {scheme!r} in {shown_uri(uri)}; use http(s)://host:port for an MLflow "
            "server, sqlite:///path/mlflow.db, postgresql://user:password@host/db or a local directory."
        )


def shown_uri(uri: str) -> str:
    """The URI without its password, for messages."""
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@", 1)
    return uri


def _missing_module(error: BaseException) -> str | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError):
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return None


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of a server's answer, None when there was no answer."""
    from mlflow.exceptions import MlflowException

    found = re.search(r"error code (\d{3}) != 200", str(error))
    if found:
        return int(found.group(1))
    response = getattr(error, "response", None)
    if isinstance(getattr(response, "status_code", None), int):
        return response.status_code
    if isinstance(error, MlflowException) and "API request to" not in str(error):
        return error.get_http_status_code()
    return None


def _network_reason(error: Exception) -> str | None:
    """The socket-level cause buried in MLflow's retry message ("Connection refused"), if any."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip()
    return "no answer before the timeout" if "timeout" in text.lower() or "timed out" in text.lower() else None


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


def outbox_root() -> Path:
    """Where loggers keep what the store has not taken yet: $BENCH_OUTBOX_DIR, else a per-user cache.

    A per-user folder (not a temporary one) survives the process, so rerunning the same command,
    even on another node of a cluster with a shared home, replays what the last attempt could not send.
    """
    if os.environ.get("BENCH_OUTBOX_DIR"):
        return Path(os.environ["BENCH_OUTBOX_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "gradattn-bench" / "outbox"


def _transient(error: BaseException) -> bool:
    """A failure worth queueing and retrying later (server down, timeout, 5xx), not a rejected request."""
    status = _http_status(error)
    return status is None or status >= 500 or status in (408, 429)


class Outbox:
    """Logging calls of one run that the store did not take yet, on disk and in order.

    Each entry is `NNNNNNNN.json` (what to do) and, for an artifact, a copy of its file in
    `NNNNNNNN.d/`; an entry is deleted once delivered. The folder exists only while entries wait.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def entries(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"))

    def __len__(self) -> int:
        return len(self.entries())

    def put(self, kind: str, payload: dict[str, Any], file: Path | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entries = self.entries()
        number = int(entries[-1].stem) + 1 if entries else 1
        entry = self.directory / f"{number:08d}.json"
        if file is not None:
            files = entry.with_suffix(".d")
            files.mkdir(exist_ok=True)
            shutil.copy2(file, files / Path(file).name)  # the caller's file may be temporary
            payload = payload | {"file": str(files / Path(file).name)}
        tmp = entry.with_suffix(".tmp")
        tmp.write_text(json.dumps({"kind": kind, "payload": payload}))
        os.replace(tmp, entry)  # a crash leaves no half-written entry

    @staticmethod
    def read(entry: Path) -> tuple[str, dict[str, Any]]:
        raw = json.loads(entry.read_text())
        return raw["kind"], raw["payload"]

    def remove(self, entry: Path) -> None:
        shutil.rmtree(entry.with_suffix(".d"), ignore_errors=True)
        entry.unlink(missing_ok=True)
        if self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()


class RunLogger:
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
        _http_defaults(uri)
        self.uri = uri
        self.run_id = run_id
        self.client = client(uri)
        self.retries = retries
        self.backoff_s = backoff_s
        self.outbox = Outbox(Path(outbox_dir) if outbox_dir else outbox_root() / run_id)
        if final_wait_s is None:
            final_wait_s = float(os.environ.get("BENCH_TRACKING_WAIT_S", DEFAULT_FINAL_WAIT_S))
        self.final_wait_s = final_wait_s
        self.detached = False  # gave up at the end of the run: later calls are dropped
        self._next_attempt = 0.0
        self._pause = backoff_s

    def _retry(self, action, *args, **kwargs):
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return action(*args, **kwargs)
            except Exception as error:  # network or store hiccup: back off and try again
                if attempt == self.retries or not _transient(error):
                    raise
                log.warning("MLflow call failed (%s); retrying in %.0f s", _network_reason(error) or _one_line(error), delay)
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
            if not _transient(error):
                raise
            log.warning(
                "MLflow at %s is unreachable (%s); training goes on, logging is queued in %s",
                shown_uri(self.uri), _network_reason(error) or _one_line(error), self.outbox.directory,
            )
            self.outbox.put(kind, payload, file)
            self._next_attempt = time.monotonic() + self._pause

    def _try_flush(self) -> bool:
        """Replay queued calls in order unless the last attempt was too recent; True when drained."""
        if time.monotonic() < self._next_attempt:
            return False
        for entry in self.outbox.entries():
            kind, payload = self.outbox.read(entry)
            try:
                self._deliver(kind, payload)
            except Exception as error:
                if _transient(error):
                    self._next_attempt = time.monotonic() + self._pause
                    self._pause = min(self._pause * 2, 60.0)
                    return False
                log.warning("MLflow rejected a queued %s call (%s); dropping it", kind, _one_line(error))
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
            existing = self.client.get_run(self.run_id).data.params
            fresh = [Param(k, v) for k, v in payload["params"].items() if k not in existing]
            for start in range(0, len(fresh), 100):
                self.client.log_batch(self.run_id, params=fresh[start : start + 100])
        elif kind == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in payload["tags"].items()])
        elif kind == "metrics":
            batch = [Metric(k, v, ts, step) for k, v, ts, step in payload["metrics"]]
            for start in range(0, len(batch), 500):
                self.client.log_batch(self.run_id, metrics=batch[start : start + 500])
        elif kind == "history":  # epochs a checkpoint holds that the store may have missed
            logged = {step for step, _ in metric_history(self.uri, self.run_id, "val_acc")}
            for record in payload["records"]:
                if record["epoch"] not in logged:
                    self._deliver("metrics", {"metrics": _epoch_metrics(record)})
        elif kind == "artifact":
            self.client.log_artifact(self.run_id, payload["file"], payload["artifact_dir"])
        elif kind == "end":
            self.client.set_terminated(self.run_id, payload["status"])
        else:
            raise ValueError(f"unknown outbox entry kind {kind!r}")

    # -- parameters, tags, metrics -------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        self._send("params", {"params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send("tags", {"tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [[k, float(v), now, step] for k, v in metrics.items() if v is not None]
        if batch:
            self._send("metrics", {"metrics": batch})

    # -- artifacts -----------------------------------------------------------------------------------
    def log_file(self, path: Path, artifact_dir: str | None = None) -> None:
        self._send("artifact", {"artifact_dir": artifact_dir}, file=Path(path))

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
            if self.outbox.read(entry)[0] == "end":
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


def _epoch_metrics(record: dict[str, Any]) -> list[list]:
    """One epoch record as [key, value, timestamp, step] rows (flags as 0/1, missing values left out)."""
    now = int(time.time() * 1000)
    epoch = record["epoch"]
    return [
        [key, float(value), now, epoch]
        for key, value in record.items()
        if key != "epoch" and value is not None
    ]


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
