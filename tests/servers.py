"""Real servers on loopback for the integration tests (tests/loopback.py: an `mlflow server`
process and a throwaway PostgreSQL cluster) as fixtures, and `bench run` against them with what a
complete run must leave on the server. Test modules import the fixtures and helpers they use
(`from servers import ...`). Tests that need PostgreSQL skip with the reason when its binaries or
the `psycopg` driver are missing.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import MlflowServer, PostgresCluster, free_port, postgres_skip_reason, wait_until  # noqa: F401 (re-exported to the tests)
from mlflow.tracking import MlflowClient
from support import new_store

from bench import tracking

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
