"""Fixtures shared by the end-to-end tests: a real MLflow store and the real `bench` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A planner pauses (bench.execution.scheduler.CLAIM_SETTLE_S, 2 s) before it reads its new claims back, so that
# two planners racing for one configuration see each other's. Only test_concurrency races planners
# (with the default, set there); elsewhere one planner works alone and the pause only costs time.
os.environ.setdefault("BENCH_CLAIM_SETTLE_S", "0.2")

# One torch thread in the test processes (a worker pins its own count to its slot): pytest-xdist
# already runs a test per core. Threads that wait sleep instead of spinning: beside the other tests,
# a spinning thread only takes a core from them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The tests' own small model `tiny` (tests/plugins/tiny_models.py), for the processes a test starts
# where the model does not matter (tracking, scheduling, races): it reaches them as a user's
# `--plugin` module does, through the environment. This process never imports it, so the catalogue
# the other tests see is the project's own.
TINY_MODEL_ENV = {"BENCH_PLUGINS": "tiny_models", "BENCH_PLUGIN_PATH": str(REPO / "tests" / "plugins")}


# The modules that take longest (several `bench` processes, servers, a Ray cluster), longest first:
# pytest-xdist hands each worker the next module in collection order (`--no-loadscope-reorder` in
# pyproject), so these start first and the short ones fill the cores at the end, instead of a long
# module started last keeping one core busy after the others are done. The rest follow in file order.
LONGEST_FIRST = (
    "test_backends", "test_grid", "test_concurrency", "test_plugins", "test_study_depth_width", "test_servers",
    "test_run_identity", "test_server_outage", "test_schema", "test_study_sensitivity", "test_finish", "test_timm",
    "test_tracking_inputs", "test_imagefolder", "test_engine", "test_cli_models", "test_report", "test_perf",
    "test_logged_model",
)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: file order within each


def bench(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m bench ...`) in a subprocess and capture its output."""
    full_env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty sqlite MLflow store, created and migrated once per session by `tracking.prepare`.

    Creating MLflow's schema takes seconds on a loaded 2-core machine; tests copy this file (the same
    empty, migrated store a first `bench run` would create) instead of migrating a store each.
    """
    from bench import tracking

    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    tracking.prepare(f"sqlite:///{path}", "Default")  # MLflow's own experiment: the store stays empty
    return path


def store_paths(root: Path) -> dict:
    """Where a test's sqlite MLflow store, checkpoint folder and data folder go (nothing created)."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "uri": f"sqlite:///{root / 'mlflow.db'}",
        "checkpoints": root / "checkpoints",
        "data": root / "data",
        "root": root,
    }


def new_store(root: Path, migrated: Path) -> dict:
    """store_paths(root) with the sqlite store already there: a copy of the empty `migrated` one."""
    paths = store_paths(root)
    shutil.copyfile(migrated, root / "mlflow.db")
    return paths


@pytest.fixture
def store(tmp_path) -> dict:
    """Paths for a sqlite MLflow store that does not exist yet: the command under test creates it."""
    return store_paths(tmp_path / "bench")


@pytest.fixture
def ready_store(tmp_path, migrated_store) -> dict:
    """The paths of `store`, with an empty, migrated sqlite store already there."""
    return new_store(tmp_path / "bench", migrated_store)


def store_args(store: dict, experiment: str = "test", devices: str | None = "cpu") -> list[str]:
    """The options that point a command at the test's store; `devices` None for the ray and slurm
    backends, which refuse the local backend's --devices."""
    return [
        "--tracking-uri", store["uri"],
        "--checkpoint-dir", str(store["checkpoints"]),
        "--data-dir", str(store["data"]),
        "--experiment", experiment,
        *(["--devices", devices] if devices else []),
    ]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point (`bench.cli.invoke`, what `bench` runs) in this process: exit status, stdout and stderr."""
    from bench.cli import invoke

    argv = sys.argv
    sys.argv = ["bench", *args]
    try:
        invoke()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err
