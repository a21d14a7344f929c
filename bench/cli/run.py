"""`bench run`: the dataset x model x seed grid on every device slot, tracked in MLflow (bench.run)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bench.cli._app import app, as_keywords, listing_settings, setting_help, with_options
from bench.cli._app import console as make_console
from bench.config.options import Keeping, Places
from bench.config.spec import Seeds, schema
from bench.execution.backends import Placement


@app.command("run", cls=listing_settings(schema, "a study file"))
@with_options(seeds=Seeds, places=Places, keeping=Keeping, placement=Placement)
def run(
    datasets: str = typer.Option("digits", "--datasets", "-d", help="Comma list, wildcards or 'all'."),
    models: str = typer.Option("all", "--models", "-m", help="Comma list, wildcards ('gradattn-*') or 'all'."),
    study: Optional[Path] = typer.Option(None, "--study", help="A study file (TOML) with the grid and settings."),
    settings: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Any setting listed below (repeatable), over the study file's: --set train.lr=3e-4 --set preprocessing=notebook."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help=setting_help(schema(), "train.max_epochs")),
    force: bool = typer.Option(False, "--force", help="Rerun configurations that already finished."),
    prune_checkpoints: bool = typer.Option(False, "--prune-checkpoints", help="Remove the checkpoint folders of runs deleted in MLflow."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Run the datasets that are present, skip the rest."),
    *,
    seeds: Seeds,
    places: Places,
    keeping: Keeping,
    backend: str,
    placement: Placement,
) -> None:
    """Train the dataset x model x seed grid and log every run to MLflow."""
    from bench import tracking
    from bench.api import run as run_grid
    from bench.execution.progress import interrupted, print_problems, summary_table

    given = schema().parse(settings or [])
    if max_epochs is not None:
        given["train.max_epochs"] = schema().keys["train.max_epochs"].coerce(max_epochs, "command line: --max-epochs")
    frame = run_grid(
        datasets, models, seeds.seeds, seeds.split_seeds, study=study, backend=backend, force=force,
        prune_checkpoints=prune_checkpoints, skip_missing=skip_missing, settings=given,
        **as_keywords(places), **as_keywords(keeping), **as_keywords(placement),
    )
    rows = frame.to_dict("records")
    console = make_console()
    console.print(summary_table(rows))
    console.print(tracking.ui_hint(frame.attrs["tracking_uri"], frame.attrs["experiment_id"]), highlight=False, markup=False)
    print_problems(console, rows)
    if interrupted(rows):
        console.print(f"{interrupted(rows)} run(s) interrupted; run the same command again to finish them.")
    if frame.attrs["exit_code"]:
        raise typer.Exit(code=frame.attrs["exit_code"])
