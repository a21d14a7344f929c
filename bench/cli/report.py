"""`bench report`: the paper-style comparison table and figure from the MLflow runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.cli._app import app
from bench.cli._app import console as make_console
from bench.tracking import DEFAULT_EXPERIMENT


@app.command("report")
def report(
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="MLflow experiment."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="(default: $MLFLOW_TRACKING_URI or MLflow's default)"),
    out: Path = typer.Option(Path("bench-report"), "--out", help="Folder for results.{md,csv,tex,png}, gradient_health.csv and runs.csv."),
) -> None:
    """One row per configuration: test top-1 with 95% intervals, Δ vs ResNet-18 with its test, published figures, warnings; gradient health."""
    from rich.markdown import Markdown

    from bench import tracking
    from bench.results.report import write_report

    uri = tracking.resolve_uri(tracking_uri)
    tracking.prepare(uri, experiment)
    files = write_report(uri, experiment, out)
    console = make_console()
    # A log gets the Markdown itself: its table is never wrapped, cut or padded to a width.
    console.print(Markdown(files.markdown) if console.is_terminal else files.markdown, markup=False, highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in files.paths))
