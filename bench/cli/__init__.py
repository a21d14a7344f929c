"""The `bench` command line: thin Typer commands that parse, validate and call into the package.

Each sub-module adds its commands to `app`. Nothing here imports torch, MLflow or Optuna at import
time, so `bench --help` stays instant; commands import what they need when they run.
"""

from __future__ import annotations

import sys

import typer

# Command modules register themselves on `app` when imported.
from bench.cli import data as _data  # noqa: F401
from bench.cli import models as _models  # noqa: F401
from bench.cli import perf as _perf  # noqa: F401
from bench.cli import report as _report  # noqa: F401
from bench.cli import run as _run  # noqa: F401
from bench.cli import study as _study  # noqa: F401
from bench.cli._app import app
from bench.core import shutdown
from bench.core.errors import BenchError

__all__ = ["app", "invoke", "main"]


def invoke() -> None:
    """`app`, with user errors as one line on stderr and exit status 2; ends in SystemExit, as `app` does."""
    try:
        app()
    except BenchError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(BenchError.exit_code)


def main() -> None:
    """Console-script entry point (`bench`, `python -m bench`): `invoke`, then the process ends
    without tearing down torch's and MLflow's modules (bench.core.shutdown)."""
    try:
        invoke()
    except SystemExit as exit_:
        if exit_.code is not None and not isinstance(exit_.code, int):
            raise  # a message for Python to print
        shutdown.end_now(exit_.code or 0)
