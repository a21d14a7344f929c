"""Real servers on loopback for the integration tests: an `mlflow server` process and a throwaway
PostgreSQL cluster, and `bench run` against them with what a complete run must leave on the server.
Test modules import the fixtures and helpers they use (`from servers import ...`).

Nothing here is a stand-in: the MLflow server is the `mlflow server` command with a sqlite or
PostgreSQL backend store and artifact proxying (`--serve-artifacts`), the cluster is Debian's
PostgreSQL (`initdb` + `pg_ctl` on a free port). Tests that need PostgreSQL skip with the reason
when its binaries or the `psycopg` driver are missing.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
from mlflow.tracking import MlflowClient
from support import new_store

from bench import tracking

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0  # a shared 2-core machine can take a minute to import MLflow and migrate a store


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class MlflowServer:
    """`mlflow server` on loopback with artifact proxying; stop() and start() keep port and stores."""

    def __init__(self, backend_uri: str, root: Path, port: int | None = None, extra_args: tuple[str, ...] = (), env: dict | None = None) -> None:
        self.backend_uri = backend_uri
        self.root = Path(root)
        self.artifacts = self.root / "artifacts"
        self.log = self.root / "server.log"
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_uri,
            "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
            "--host", HOST, "--port", str(self.port), "--workers", "1",
            *self.extra_args,
        ]
        # The GenAI job runner is a second heavy process the tracking tests do not use.
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | self.env
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mlflow server not healthy after {START_TIMEOUT_S:.0f} s:\n{_tail(self.log)}")
            time.sleep(0.25)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the server and its uvicorn child (one process group), then wait for the port to close.

        `kill=True` sends SIGKILL: the server vanishes at once, as in a crash or a lost machine.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        try:  # children that outlived the parent
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None
        wait_until(lambda: not port_open(self.port), 30, f"port {self.port} closing")

    def restart(self) -> "MlflowServer":
        self.stop()
        return self.start()


# -- PostgreSQL --------------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<version>/bin (15 preferred), else the directory of `initdb` on PATH."""
    preferred = Path("/usr/lib/postgresql/15/bin")
    candidates = [preferred] + [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def postgres_skip_reason() -> str | None:
    if postgres_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH; install postgresql-15"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is missing; pip install 'gradattn-bench[postgres]'"
    if os.geteuid() == 0 and not _user_exists("postgres"):
        return "running as root and there is no 'postgres' user to own the cluster (initdb refuses root)"
    return None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class PostgresCluster:
    """A throwaway cluster: initdb in a temporary folder, pg_ctl start on a free loopback port, trust auth.

    initdb refuses to run as root, so under root the folder belongs to the `postgres` user and the
    server commands run as that user.
    """

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise RuntimeError(postgres_skip_reason())
        # Not under pytest's tmp_path: its parents are private to root and postgres must reach the folder.
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> "PostgresCluster":
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -c listen_addresses={HOST} -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "120", "start")
        return self

    def createdb(self, name: str) -> str:
        """A new database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        self._run("createdb", "-h", HOST, "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


# -- `bench run` against a server, and what it must leave there --------------------------------------


EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "train/lr", "train/epoch_time_s", "val/improved")
ARTIFACTS = ("gradflow/gradflow.json", "evaluation/confusion_matrix.csv", "history.csv")


def server_env(root: Path, **extra: str) -> dict:
    return os.environ | {"PYTHONUNBUFFERED": "1", "BENCH_OUTBOX_DIR": str(root / "outbox")} | extra


def run_args(url: str, root: Path, experiment: str, *extra: str) -> list[str]:
    """`python -m bench` with `run_options`."""
    return [sys.executable, "-m", "bench", *run_options(url, root, experiment, *extra)]


def run_options(url: str, root: Path, experiment: str, *extra: str) -> list[str]:
    # The small synthetic set: what these tests check is the tracking, not the data.
    return [
        "run",
        "--datasets", "synthetic", "--set", "gradflow.num_batches=1", "--devices", "cpu",
        "--tracking-uri", url, "--experiment", experiment,
        "--checkpoint-dir", str(root / "checkpoints"), "--data-dir", str(root / "data"),
        *extra,
    ]


def bench_at(args: list[str], root: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    # Run from the test folder: a worker that wrote artifacts itself would leave ./mlartifacts there.
    return subprocess.run(args, cwd=root, env=server_env(root, **env), capture_output=True, text=True, timeout=timeout)


def runs_of(url: str, experiment: str) -> list:
    return tracking.runs_of(url, tracking.experiment_id(url, experiment))


def all_artifacts(url: str, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for info in MlflowClient(url).list_artifacts(run_id, path):
        found |= all_artifacts(url, run_id, info.path) if info.is_dir else {info.path}
    return found


def assert_complete(server, run, epochs: int, tmp: Path) -> None:
    """FINISHED, every epoch's metrics, the test metrics, and the artifacts stored by the server."""
    url, run_id = server.url, run.run_id
    assert run.status == "FINISHED", run.tags.get("failure")
    for key in EPOCH_METRICS:
        assert sorted(step for step, _ in tracking.metric_history(url, run_id, key)) == list(range(1, epochs + 1)), key
    assert "test/top1" in run.metrics and "gradflow/health" in run.metrics
    assert set(ARTIFACTS) <= all_artifacts(url, run_id)
    [model] = tracking.logged_models(url, run_id)  # the weights, as the run's MLflow model, stored by the server
    assert model.status == "READY" and model.artifact_location.startswith("mlflow-artifacts:")
    assert "data/model.pth" in {f.path for f in MlflowClient(url).list_logged_model_artifacts(model.model_id, "data")}
    # Proxied: the run points at the server's artifact store, and the files are in the server's folder.
    assert MlflowClient(url).get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(server.artifacts.rglob(f"{run_id}/artifacts/history.csv"))
    local = tracking.download_artifact(url, run_id, "gradflow/gradflow.json", tmp / run_id)
    assert json.loads(local.read_text())
    history = tracking.download_artifact(url, run_id, "history.csv", tmp / run_id)
    assert len(list(csv.DictReader(history.open()))) == epochs


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, migrated_store):
    """A real MLflow server with a sqlite backend store and proxied artifacts, for the whole module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(new_store(root, migrated_store)["uri"], root).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres():
    """A running throwaway PostgreSQL cluster; skips with the reason where PostgreSQL is missing."""
    reason = postgres_skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def postgres_mlflow_server(postgres, tmp_path_factory):
    """A real MLflow server whose backend store is a database of the throwaway PostgreSQL cluster."""
    root = tmp_path_factory.mktemp("mlflow-pg-server")
    server = MlflowServer(postgres.createdb("mlflow"), root).start()
    yield server
    server.stop()
