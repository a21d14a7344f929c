"""The store: URIs, creating (or migrating) a store and its experiment once, the MLflow UI's links."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from bench.core.errors import BenchError
from bench.core.locks import file_lock
from bench.tracking.failures import CREATION_RACES, http_status, missing_module, network_reason, one_line, retry_creation_race, store_away
from bench.tracking.views import configurations_url, experiment_url, view_tags

log = logging.getLogger(__name__)
# What MLflow's store registry accepts; "" and file are local directories (the file store).
SCHEMES = ("", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def resolve_uri(uri: str | None) -> str:
    """An explicit --tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's own default."""
    import mlflow

    if uri:
        return uri
    return mlflow.get_tracking_uri()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    quiet_mlflow()  # here because every process (the parent, each worker) comes through here first
    return MlflowClient(tracking_uri=uri)


def quiet_mlflow() -> None:
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
    quiet_mlflow()
    http_defaults(uri)
    _check_scheme(uri)
    database = sqlite_path(uri)
    if database is None:
        return _prepare_retrying(uri, experiment)
    _check_sqlite_folder(database)
    with file_lock(database.with_name(database.name + ".lock")):
        _repair_sqlite(database)
        return _prepare_retrying(uri, experiment)


@contextlib.contextmanager
def answering(uri: str, doing: str, then: str):
    """The store going away inside the block, after `prepare` reached it, as one BenchError: what
    was being done (`doing`) when it stopped answering, and what to do (`then`)."""
    try:
        yield
    except BenchError:
        raise
    except Exception as error:
        if not store_away(error):
            raise
        raise BenchError(
            f"MLflow at {shown_uri(uri)} stopped answering while {doing} ({network_reason(error) or one_line(error)}); {then}"
        ) from error


def _prepare_retrying(uri: str, experiment: str) -> str:
    return retry_creation_race(lambda: _prepare_once(uri, experiment))


def _prepare_once(uri: str, experiment: str) -> str:
    try:
        c = client(uri)
        found = c.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise BenchError(
                    f"Experiment {experiment!r} is deleted in {shown_uri(uri)}; restore it in the MLflow UI or choose another --experiment."
                )
            for key, value in view_tags().items():  # an experiment made before a tag existed, or changed
                if found.tags.get(key) != value:
                    c.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        return c.create_experiment(experiment, tags=view_tags())
    except BenchError:
        raise
    except Exception as error:
        if missing_module(error):
            raise BenchError(
                f"The MLflow tracking store {shown_uri(uri)} needs the Python module {missing_module(error)!r}; "
                "install it (for PostgreSQL: pip install 'gradattn-bench[postgres]')."
            ) from error
        if http_status(error) in (401, 403):
            raise BenchError(
                f"The MLflow server {shown_uri(uri)} refused the request (HTTP {http_status(error)}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of its basic-auth app."
            ) from error
        if "_alembic_tmp_" in str(error):
            raise BenchError(
                f"The MLflow store {shown_uri(uri)} was left half-migrated by an interrupted schema upgrade "
                f"({one_line(error)}); back it up, drop the table named there and run `mlflow db upgrade {shown_uri(uri)}`."
            ) from error
        if any(m in str(error) for m in CREATION_RACES):
            raise BenchError(f"Another process is creating the MLflow store {shown_uri(uri)} ({one_line(error)}).") from error
        raise BenchError(
            f"Cannot use the MLflow tracking store {shown_uri(uri)} ({network_reason(error) or one_line(error)}); "
            "check --tracking-uri (or MLFLOW_TRACKING_URI) and that the server is running."
        ) from error


def sqlite_uri(folder: Path) -> str:
    """The URI of a sqlite store in `folder` (a database file named as MLflow names its own)."""
    return f"sqlite:///{Path(folder) / 'mlflow.db'}"


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


def http_defaults(uri: str) -> None:
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


def ui_hint(uri: str, experiment_id: str) -> str:
    """Where to look at the runs: the runs table, the seeds grouped by configuration (and how to start
    the UI for a local store)."""
    lines = [f"MLflow UI: {experiment_url(uri, experiment_id)}", f"By configuration, mean over seeds: {configurations_url(uri, experiment_id)}"]
    if urlparse(uri).scheme not in ("http", "https"):
        lines.append(f"(start it with `mlflow ui --backend-store-uri {shown_uri(uri)}`)")
    return "\n".join(lines)


def shown_uri(uri: str) -> str:
    """The URI without its password, for messages."""
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@", 1)
    return uri
