"""Helpers the tests share: the real `bench` command in a subprocess or in this process, the paths
and options of a test's MLflow store, and the tests' own small model."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tests' own small model `tiny` (tests/plugins/tiny_models.py), for the commands a test runs
# where the model does not matter (tracking, scheduling, races): it reaches them as a user's plugin
# file does, through `--plugin`. This process never imports it, so the catalogue the other tests see
# is the project's own.
TINY_MODEL = ("--plugin", str(REPO / "tests" / "plugins" / "tiny_models.py"))


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


@contextlib.contextmanager
def isolated_catalogue():
    """Plugins, models and datasets registered inside the block are gone after it: the other tests of
    this process see the project's own catalogue."""
    from bench import data, models
    from bench.core import plugins

    with plugins.isolated(), models.isolated(), data.isolated():
        yield
