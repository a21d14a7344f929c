"""Real servers on loopback, for the integration tests and the fault soak (scripts/soak.py): an
`mlflow server` process and a throwaway PostgreSQL cluster, each stopped, killed and started again at
will on the same port and stores.

Nothing here is a stand-in: the MLflow server is the `mlflow server` command with a sqlite or
PostgreSQL backend store and artifact proxying (`--serve-artifacts`), the cluster is Debian's
PostgreSQL (`initdb` + `pg_ctl` on a free port). This module imports neither pytest nor the project,
so a script can use it as the tests do.
"""

from __future__ import annotations

import glob
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
        return self.resume()

    def resume(self) -> "PostgresCluster":
        """Start the server of the existing cluster (after `start` and `halt`), on the same port."""
        options = f"-p {self.port} -c listen_addresses={HOST} -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "120", "start")
        return self

    def halt(self) -> None:
        """Stop the server at once, as a crash would (`-m immediate`: no checkpoint, clients cut off);
        the cluster stays for `resume`."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)

    def createdb(self, name: str) -> str:
        """A new database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        self._run("createdb", "-h", HOST, "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        try:
            self.halt()
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)
