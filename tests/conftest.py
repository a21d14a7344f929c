"""Fixtures shared by the end-to-end tests: a real MLflow store and the real `bench` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def store(tmp_path) -> dict:
    """A fresh sqlite MLflow store, checkpoint folder and data folder in a temporary directory."""
    root = tmp_path / "bench"
    root.mkdir()
    return {
        "uri": f"sqlite:///{root / 'mlflow.db'}",
        "checkpoints": root / "checkpoints",
        "data": root / "data",
        "root": root,
    }


def store_args(store: dict, experiment: str = "test") -> list[str]:
    return [
        "--tracking-uri", store["uri"],
        "--checkpoint-dir", str(store["checkpoints"]),
        "--data-dir", str(store["data"]),
        "--experiment", experiment,
        "--devices", "cpu",
    ]
