"""`bench report`: the paper-style comparison table and figure from the MLflow runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bench.cli._app import app, with_options
from bench.cli._app import console as make_console
from bench.config.options import Places


@app.command("report")
@with_options(only=("tracking_uri", "experiment"), places=Places)
def report(
    out: Path = typer.Option(Path("bench-report"), "--out", help="Folder for results.{md,csv,tex,png}, verdict.{csv,tex,png}, seeds.csv, gradient_health.csv and runs.csv."),
    metric: str = typer.Option("top1", "--metric", help="The test metric compared: top1, balanced_acc, macro_f1, or any logged test metric."),
    baseline: Optional[List[str]] = typer.Option(None, "--baseline", help="A model every other is compared with across datasets (repeatable; default resnet18; the first is the rows' Δ)."),
    primary: Optional[str] = typer.Option(None, "--primary", help="The model the experiment was run for; the others are exploratory (default: the study file's primary, recorded on the runs)."),
    log: bool = typer.Option(False, "--log", help="Also log the files to the experiment, as its run named report (in the MLflow UI: its Artifacts tab)."),
    *,
    places: Places,
) -> None:
    """One row per configuration (score with its 95% interval, Δ vs the baseline with its test, published
    figure, seeds, warnings), gradient health, and the verdict across datasets."""
    from rich.markdown import Markdown

    from bench.api import report as make_report

    files = make_report(places.experiment, places.tracking_uri, out, metric, tuple(baseline or ()), primary, log=log)
    console = make_console()
    # A log gets the Markdown itself: its table is never wrapped, cut or padded to a width.
    console.print(Markdown(files.markdown) if console.is_terminal else files.markdown, markup=False, highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in files.paths))
    if files.logged_to:
        console.print(f"logged to the run report: {files.logged_to}", markup=False, highlight=False)
