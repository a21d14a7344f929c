"""`bench report`: the paper-style comparison table and figure from the MLflow runs."""

from __future__ import annotations

from pathlib import Path

import typer

from bench.cli._app import app, with_options
from bench.cli._app import console as make_console
from bench.config.options import Places


@app.command("report")
@with_options(only=("tracking_uri", "experiment"), places=Places)
def report(
    out: Path = typer.Option(Path("bench-report"), "--out", help="Folder for results.{md,csv,tex,png}, gradient_health.csv and runs.csv."),
    *,
    places: Places,
) -> None:
    """One row per configuration: test top-1 with 95% intervals, Δ vs ResNet-18 with its test, published figures, warnings; gradient health."""
    from rich.markdown import Markdown

    from bench.api import report as make_report

    files = make_report(places.experiment, places.tracking_uri, out)
    console = make_console()
    # A log gets the Markdown itself: its table is never wrapped, cut or padded to a width.
    console.print(Markdown(files.markdown) if console.is_terminal else files.markdown, markup=False, highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in files.paths))
