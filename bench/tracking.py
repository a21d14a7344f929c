"""The MLflow adapter: the only module that imports MLflow.

Runs are addressed by explicit run ids through `MlflowClient`, so the parent process can create the
store, the experiment and the runs once, and worker processes (or machines) attach to them.
A run is found again by its `config_hash` tag: that is how a finished configuration is skipped and an
interrupted one resumed in the same MLflow run.

A tracking server that goes away mid-run does not stop training: `RunLogger` queues what it could not
send in an on-disk outbox and replays it, in order, when the server answers again (see `Outbox`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from bench import metric_names
from bench.callbacks import Callback
from bench.errors import BenchError
from bench.locks import file_lock

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

    _quiet_mlflow()  # here because every process (the parent, each worker) comes through here first
    return MlflowClient(tracking_uri=uri)


def _quiet_mlflow() -> None:
    # The store's schema-migration chatter, the per-request retry warnings and the system-metrics
    # monitor's start/stop lines hide our own output. After `import mlflow`, which sets its levels.
    import mlflow  # noqa: F401

    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def prepare(uri: str, experiment: str) -> str:
    """Create (or migrate) the store and the experiment once, before any worker starts.

    Several processes opening a fresh store at once race in its schema migration: a sqlite store is
    therefore created under a file lock beside it; a server or database store (where no shared file
    exists) is retried when the answer is one of the known races of two creators. A sqlite store left
    half-migrated by a kill is repaired first. Returns the experiment id. An unreachable or
    misconfigured store is a BenchError.
    """
    _quiet_mlflow()
    _http_defaults(uri)
    _check_scheme(uri)
    database = sqlite_path(uri)
    if database is None:
        return _prepare_retrying(uri, experiment)
    _check_sqlite_folder(database)
    with file_lock(database.with_name(database.name + ".lock")):
        _repair_sqlite(database)
        return _prepare_retrying(uri, experiment)


# What a second creator of the same store or experiment sees while the first is at work.
_CREATION_RACES = (
    "duplicate column name", "already exists", "RESOURCE_ALREADY_EXISTS", "duplicate key value", "UNIQUE constraint failed",
    "database is locked",
)


def _creation_race(error: BaseException | None) -> bool:
    return error is not None and any(marker in str(error) for marker in _CREATION_RACES)


def _retry_creation_race(action, attempts: int = 5):
    """`action()`, again after a pause while it loses a race with another creator of the same row."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:
            cause = error.__cause__ if isinstance(error, BenchError) else error
            if attempt == attempts - 1 or not _creation_race(cause):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _prepare_retrying(uri: str, experiment: str) -> str:
    return _retry_creation_race(lambda: _prepare_once(uri, experiment))


def _prepare_once(uri: str, experiment: str) -> str:
    try:
        c = client(uri)
        found = c.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise BenchError(
                    f"Experiment {experiment!r} is deleted in {shown_uri(uri)}; restore it in the MLflow UI or choose another --experiment."
                )
            if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made before the tag existed
                c.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        return c.create_experiment(experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
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
        if "_alembic_tmp_" in str(error):
            raise BenchError(
                f"The MLflow store {shown_uri(uri)} was left half-migrated by an interrupted schema upgrade "
                f"({_one_line(error)}); back it up, drop the table named there and run `mlflow db upgrade {shown_uri(uri)}`."
            ) from error
        if any(m in str(error) for m in _CREATION_RACES):
            raise BenchError(f"Another process is creating the MLflow store {shown_uri(uri)} ({_one_line(error)}).") from error
        raise BenchError(
            f"Cannot use the MLflow tracking store {shown_uri(uri)} ({_network_reason(error) or _one_line(error)}); "
            "check --tracking-uri (or MLFLOW_TRACKING_URI) and that the server is running."
        ) from error


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:///relative or sqlite:////absolute URI, None for other stores."""
    scheme, _, rest = uri.partition(":")
    if scheme.split("+")[0].lower() != "sqlite" or not rest.startswith("///") or len(rest) == 3:
        return None
    return Path(rest[3:].split("?")[0])


def _check_sqlite_folder(database: Path) -> None:
    # MLflow creates missing parent folders (at the filesystem root for a mistyped absolute path).
    folder = database.parent if str(database.parent) else Path(".")
    if not folder.is_dir():
        raise BenchError(
            f"The folder {folder} of the sqlite tracking store {database} does not exist; create it or fix --tracking-uri."
        )
    if not os.access(folder, os.W_OK) or (database.exists() and not os.access(database, os.W_OK)):
        raise BenchError(f"The sqlite tracking store {database} is not writable; fix its permissions or choose another --tracking-uri.")


def _repair_sqlite(database: Path) -> None:
    """Undo what a kill in the middle of a schema migration leaves: alembic's `_alembic_tmp_<table>`.

    Alembic rebuilds a sqlite table as a copy, then drops the original and renames the copy. Killed
    before the drop, the original is intact and the copy is discarded; killed after it, the copy
    is complete and takes the original's name. The interrupted migration then runs again.
    """
    import sqlite3

    if not database.exists() or database.stat().st_size == 0:
        return
    with contextlib.closing(sqlite3.connect(database)) as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for leftover in sorted(n for n in names if n.startswith("_alembic_tmp_")):
            original = leftover[len("_alembic_tmp_"):]
            if original in names:
                connection.execute(f'DROP TABLE "{leftover}"')
            else:
                connection.execute(f'ALTER TABLE "{leftover}" RENAME TO "{original}"')
            log.warning("repaired the half-migrated table %s of %s; the interrupted migration runs again", original, database)
        connection.commit()


def _http_defaults(uri: str) -> None:
    # MLflow's own defaults retry a refused connection for minutes; fail fast and let the outbox wait.
    if uri.startswith("http://") or uri.startswith("https://"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # MLflow prints "View run ... at http://user:password@host/..." when a run ends: our own
        # output names the runs, and a URI's credentials must never reach the console.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def _check_scheme(uri: str) -> None:
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter, i.e. a local path
        return
    if scheme not in SCHEMES:
        raise BenchError(
            f"Unsupported tracking URI scheme {scheme!r} in {shown_uri(uri)}; use http(s)://host:port for an MLflow "
            "server, sqlite:///path/mlflow.db, postgresql://user:password@host/db or a local directory."
        )


# MLflow 3's UI opens an experiment in its GenAI view (traces) unless the URL asks for the
# model-training one (runs table, models); UIs from before that switch read the experiment tag.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = "?workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store


def experiment_url(uri: str, experiment_id: str) -> str:
    """The MLflow UI link of an experiment's runs table: on the tracking server, else on `mlflow ui`."""
    parsed = urlparse(uri)
    base = f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}{parsed.path}" if parsed.scheme in ("http", "https") else LOCAL_UI
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}{UI_VIEW}"


def ui_hint(uri: str, experiment_id: str) -> str:
    """One line saying where to look at the runs (and how to start the UI for a local store)."""
    url = experiment_url(uri, experiment_id)
    if urlparse(uri).scheme in ("http", "https"):
        return f"MLflow UI: {url}"
    return f"MLflow UI: {url} (after `mlflow ui --backend-store-uri {shown_uri(uri)}`)"


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
        if _http_status(error) == 404 or "RESOURCE_DOES_NOT_EXIST" in str(error) or "not found" in str(error).lower():
            return None
        raise
    return run.info.status, run.info.lifecycle_stage


# -- claims: who trains a run, kept on the run itself --------------------------------------------------
# Tags work alike on every store (sqlite, an MLflow server, PostgreSQL) and from every backend, so a
# claim needs no shared file system and no extra service. MLflow has no compare-and-set, so a claim
# is confirmed by reading it back after a pause longer than any store write takes (`claim_settle_s`).
CLAIM_OWNER, CLAIM_HEARTBEAT = "claim_owner", "claim_heartbeat"


def new_owner() -> str:
    """A claimant's identity: host, process and a random part (pids repeat across machines)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_of(run) -> tuple[str | None, float]:
    """(owner, last heartbeat as Unix time) of a run; (None, 0) when it was never claimed."""
    tags = run.data.tags
    try:
        beat = float(tags.get(CLAIM_HEARTBEAT, 0))
    except ValueError:
        beat = 0.0
    return tags.get(CLAIM_OWNER), beat


def owner_gone(owner: str) -> bool:
    """True when the owner was a process on this host that no longer exists (killed, crashed):
    its claim is dead at once, without waiting for its heartbeat to age."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def claim_tags(owner: str) -> dict[str, str]:
    return {CLAIM_OWNER: owner, CLAIM_HEARTBEAT: f"{time.time():.3f}"}


def claim(uri: str, run_id: str, owner: str) -> None:
    """Take a run over: owner and heartbeat tags, status RUNNING."""
    from mlflow.entities import RunTag

    c = client(uri)
    c.log_batch(run_id, tags=[RunTag(k, v) for k, v in claim_tags(owner).items()])
    c.update_run(run_id, status=RUNNING)


def claim_owner(uri: str, run_id: str) -> str | None:
    return claim_of(client(uri).get_run(run_id))[0]


def release(uri: str, run_id: str, owner: str, status: str | None = None) -> None:
    """Give a claim up (heartbeat 0), and end the run with `status` if given, when it is still ours
    and RUNNING: the next planner need not wait for the claim to age."""
    try:
        run = client(uri).get_run(run_id)
        if claim_of(run)[0] == owner and run.info.status == RUNNING:
            client(uri).set_tag(run_id, CLAIM_HEARTBEAT, "0")
            if status:
                client(uri).set_terminated(run_id, status)
    except Exception:  # the store is away: the claim simply ages out
        pass


class Heartbeat:
    """Stamps the heartbeat tag of every run `owner` holds, every `every_s` seconds, in a thread.

    A run whose owner tag names someone else (it was taken over after our heartbeat stopped, e.g.
    during a long store outage) is given up and listed in `lost`; a store that does not answer is
    simply tried again at the next beat.
    """

    def __init__(self, uri: str, owner: str, run_ids: Iterable[str], every_s: float) -> None:
        self.uri, self.owner, self.every_s = uri, owner, every_s
        self.run_ids = set(run_ids)
        self.lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def drop(self, run_id: str) -> None:
        self.run_ids.discard(run_id)

    def _loop(self) -> None:
        while True:  # a first beat at once: planning a long grid may have taken a while
            self._beat()
            if self._stop.wait(self.every_s):
                return

    def _beat(self) -> None:
        for run_id in list(self.run_ids):
            try:
                if claim_owner(self.uri, run_id) != self.owner:
                    self.lost.add(run_id)
                    self.run_ids.discard(run_id)
                    continue
                client(self.uri).set_tag(run_id, CLAIM_HEARTBEAT, f"{time.time():.3f}")
            except Exception:  # unreachable for now; the next beat tries again
                pass


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


# Every kind `RunLogger._deliver` handles; an entry of any other kind is damaged and moved aside.
ENTRY_KINDS = ("params", "tags", "metrics", "history", "dataset", "artifact", "clear_failure", "end")


class Outbox:
    """Logging calls of one run that the store did not take yet, on disk and in order.

    Each entry is `NNNNNNNN.json` (what to do) and, for an artifact, a copy of its file in
    `NNNNNNNN.d/`; an entry is deleted once delivered. The folder exists only while entries wait.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def entries(self) -> list[Path]:
        """The waiting entries in order; a file whose name is not a sequence number is moved aside."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            if path.stem.isdigit():
                found.append(path)
            else:
                self.quarantine(path, "its name is not a sequence number")
        return found

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

    def read(self, entry: Path) -> tuple[str, dict[str, Any]] | None:
        """(kind, payload) of an entry; None, the entry moved aside, when it is not one we wrote."""
        try:
            raw = json.loads(entry.read_text())
            kind, payload = raw["kind"], raw["payload"]
            if kind not in ENTRY_KINDS or not isinstance(payload, dict):
                raise ValueError(f"unknown kind {kind!r}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.quarantine(entry, f"{error.__class__.__name__}: {str(error)[:80]}")
            return None
        return kind, payload

    def quarantine(self, entry: Path, reason: str) -> None:
        """Move a damaged entry (and its files) beside the outbox, so the rest can be delivered."""
        aside = self.directory.with_name(self.directory.name + ".damaged")
        aside.mkdir(parents=True, exist_ok=True)
        for part in (entry, entry.with_suffix(".d")):
            if part.exists():
                os.replace(part, aside / part.name)
        log.warning("Outbox entry %s is damaged (%s); moved it to %s and went on without it.", entry, reason, aside)
        if self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()

    def remove(self, entry: Path) -> None:
        shutil.rmtree(entry.with_suffix(".d"), ignore_errors=True)
        entry.unlink(missing_ok=True)
        if self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()


SYSTEM_METRICS_ENV = "BENCH_SYSTEM_METRICS"  # "0": --no-system-metrics (reaches every worker)


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, resumed: bool = True):
    """Sample CPU, memory, disk, network (and GPU where pynvml sees one) into the run's `system/`
    metrics with MLflow's own monitor, while the block runs; off when $BENCH_SYSTEM_METRICS is 0."""
    if os.environ.get(SYSTEM_METRICS_ENV, "1") == "0":
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    _quiet_mlflow()
    try:  # cosmetic: a store that cannot answer now must not fail the run
        monitor = SystemMetricsMonitor(run_id, tracking_uri=uri, resume_logging=resumed)
        monitor.start()
    except Exception as error:
        log.warning("system metrics are off for run %s (%s)", run_id, _one_line(error))
        yield
        return
    try:
        yield
    finally:
        monitor.finish()


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
        self._logged: dict[str, set[int]] | None = None  # see _logged_steps

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
            read = self.outbox.read(entry)
            if read is None:
                continue
            kind, payload = read
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
            logged = self._logged_steps()
            fresh = {}  # once per (key, step), across resumes and replays: the first value stands
            for key, value, ts, step in payload["metrics"]:
                if step not in logged.get(key, ()):
                    fresh.setdefault((key, step), Metric(key, value, ts, step))
            batch = list(fresh.values())
            for start in range(0, len(batch), 500):
                self.client.log_batch(self.run_id, metrics=batch[start : start + 500])
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
            _retry_creation_race(lambda: self.client.log_inputs(self.run_id, datasets=inputs))
        elif kind == "clear_failure":
            self._clear_failure()
        elif kind == "artifact":
            self.client.log_artifact(self.run_id, payload["file"], payload["artifact_dir"])
        elif kind == "end":
            self.client.set_terminated(self.run_id, payload["status"])

    def _logged_steps(self) -> dict[str, set[int]]:
        """key -> steps the store already holds, read once (a fresh run holds none)."""
        if self._logged is None:
            keys = self.client.get_run(self.run_id).data.metrics
            self._logged = {key: {m.step for m in self.client.get_metric_history(self.run_id, key)} for key in keys}
        return self._logged

    def _clear_failure(self) -> None:
        run = self.client.get_run(self.run_id)
        if "failure" in run.data.tags:
            self.client.delete_tag(self.run_id, "failure")
        if self.client.list_artifacts(self.run_id, "failure"):
            try:
                self.client._tracking_client._get_artifact_repo(self.run_id).delete_artifacts("failure")
            except Exception as error:  # an artifact store without deletes: say so, keep going
                log.warning("could not delete the failure/ artifacts of run %s (%s)", self.run_id, _one_line(error))

    # -- parameters, tags, metrics -------------------------------------------------------------------
    def clear_failure(self) -> None:
        """Remove the failure tag and traceback an earlier attempt of this run left."""
        self._send("clear_failure", {})

    def log_params(self, params: dict[str, Any]) -> None:
        self._send("params", {"params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send("tags", {"tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [[k, float(v), now, step] for k, v in metrics.items() if v is not None]
        if batch:
            self._send("metrics", {"metrics": batch})

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
        is unreachable (the caller keeps the weights another way).

        Once per run: a model this run already logged under `name` stands; one a kill left half
        logged is deleted first.
        """
        import mlflow.pytorch

        def log_once() -> str:
            experiment_id = self.client.get_run(self.run_id).info.experiment_id
            existing = self._logged_models(experiment_id, name)
            ready = [m for m in existing if str(m.status).endswith("READY")]
            if ready:
                return ready[0].model_id
            for stale in existing:
                self.client.delete_logged_model(stale.model_id)
            # Created here: left to itself, MLflow files a model with no active run under experiment 0.
            created = self.client.create_logged_model(experiment_id, name=name, source_run_id=self.run_id, tags=tags)
            mlflow.set_tracking_uri(self.uri)  # MLflow's model logging reads the process-wide URI
            # pickle: any module tree loads back (torch.export's "pt2" traces only some); loading
            # it runs its code, as for every pickled MLflow model: load models you trust.
            mlflow.pytorch.log_model(
                model, name=name, model_id=created.model_id, run_id=self.run_id, step=step,
                pip_requirements=requirements, serialization_format="pickle",
            )
            return created.model_id

        try:
            return self._retry(log_once)
        except Exception as error:
            if _network_reason(error) is None and "API request to" not in str(error):
                raise  # an answer, or a failure of our own: not a store that is away
            log.warning("MLflow at %s is unreachable (%s); the weights of run %s are queued as a file instead of a logged model",
                        shown_uri(self.uri), _network_reason(error) or _one_line(error), self.run_id)
            return None

    def _logged_models(self, experiment_id: str, name: str) -> list:
        found = self.client.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{self.run_id}'")
        return [m for m in found if m.name == name]

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


def _epoch_metrics(record: dict[str, Any]) -> list[list]:
    """One epoch record as [key, value, timestamp, step] rows (flags as 0/1, missing values left out)."""
    now = int(time.time() * 1000)
    epoch = record["epoch"]
    return [
        [metric_names.sectioned(key), float(value), now, epoch]
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
