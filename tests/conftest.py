"""Fixtures shared by the end-to-end tests: a real MLflow store and the real `bench` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import new_store, store_paths

# The server fixtures (a real `mlflow server`, a throwaway PostgreSQL cluster) for every test module.
pytest_plugins = ["servers"]

# A planner pauses (bench.tracking.CLAIM_SETTLE_S, 2 s) before it reads its new claims back, so that
# two planners racing for one configuration see each other's. Only test_concurrency races planners
# (with the default, set there); elsewhere one planner works alone and the pause only costs time.
os.environ.setdefault("BENCH_CLAIM_SETTLE_S", "0.2")

# One torch thread in the test processes (a worker pins its own count to its slot): pytest-xdist
# already runs a test per core. Threads that wait sleep instead of spinning: beside the other tests,
# a spinning thread only takes a core from them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")



# The modules that take longest (several `bench` processes, servers, a Ray cluster), longest first:
# pytest-xdist hands each worker the next module in collection order (`--no-loadscope-reorder` in
# pyproject), so these start first and the short ones fill the cores at the end, instead of a long
# module started last keeping one core busy after the others are done. The rest follow in file order.
LONGEST_FIRST = (
    "test_backends", "test_grid", "test_concurrency", "test_disk_full", "test_plugins", "test_study_depth_width", "test_servers",
    "test_run_identity", "test_verdict", "test_server_outage", "test_schema", "test_study_sensitivity", "test_api", "test_finish", "test_timm",
    "test_tracking_inputs", "test_imagefolder", "test_engine", "test_cli_models", "test_report", "test_perf",
    "test_logged_model", "test_data_scale",
)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: file order within each




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




@pytest.fixture
def store(tmp_path) -> dict:
    """Paths for a sqlite MLflow store that does not exist yet: the command under test creates it."""
    return store_paths(tmp_path / "bench")


@pytest.fixture
def ready_store(tmp_path, migrated_store) -> dict:
    """The paths of `store`, with an empty, migrated sqlite store already there."""
    return new_store(tmp_path / "bench", migrated_store)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for one test module (2 CPUs, no dashboard)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed; pip install 'gradattn-bench[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
