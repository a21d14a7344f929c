"""`bench study depth-width` and `bench sensitivity`: the Optuna studies (bench.studies)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bench.cli._app import app, as_keywords, listing_settings, with_options
from bench.cli._app import console as make_console
from bench.config.options import Keeping, Places
from bench.execution.backends import Placement

study_app = typer.Typer(help="Optuna studies over GradAttn, tracked in MLflow.", no_args_is_help=True)
app.add_typer(study_app, name="study")

DASHBOARD_HINT = "Browse it live with: optuna-dashboard {storage}"


def _depth_width_settings():
    from bench.studies import depth_width

    return depth_width.SCHEMA


@study_app.command("depth-width", cls=listing_settings(_depth_width_settings, "the --config file"))
@with_options(places=Places, keeping=Keeping, placement=Placement)
def depth_width(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset to search on (e.g. cifar10, digits); --set dataset=NAME."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="Study file (default: built-in, as studies/depth-width.toml)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The GradAttn model to search; --set model=NAME."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="Trials to add to the study; --set n_trials=N."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epochs per trial at most; --set train.max_epochs=N."),
    settings: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Any setting listed below (repeatable), over the study file's: --set space.d_model=64,128 --set train.lr=3e-4."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage: a database URL or journal:PATH (default: optuna.db beside a sqlite tracking store, else ./optuna.db)."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="The Optuna study to create or continue; --set study_name=NAME."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed of every trial; --set seed=N."),
    *,
    places: Places,
    keeping: Keeping,
    backend: str,
    placement: Placement,
) -> None:
    """Search GradAttn's transformer depth and width with Optuna; each trial is a tracked run,
    trained on any backend like the runs of `bench run`."""
    from bench import tracking
    from bench.api import depth_width as run_study
    from bench.studies import depth_width as dw
    from bench.studies.tables import to_markdown

    values = dw.SCHEMA.parse(settings or [])
    options = {
        "dataset": ("--dataset", dataset), "model": ("--model", model), "n_trials": ("--n-trials", n_trials),
        "study_name": ("--study-name", study_name), "seed": ("--seed", seed), "train.max_epochs": ("--max-epochs", max_epochs),
    }
    values |= {k: dw.SCHEMA.keys[k].coerce(v, f"command line: {o}") for k, (o, v) in options.items() if v is not None}
    summary = run_study(
        config_file, backend=backend, settings=values, storage=storage, **as_keywords(places), **as_keywords(keeping), **as_keywords(placement)
    )
    uri = tracking.resolve_uri(places.tracking_uri)
    console = make_console()
    states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(summary.counts.items()))
    console.print(f"\nstudy {summary.study_name!r} now holds {len(summary.trials)} trial(s): {states}")
    if summary.best is not None:
        best = summary.best
        console.print(f"best trial {best['number']}: best val acc {best['value']:.4f} with {best['params']}", highlight=False)
        console.print(to_markdown(summary.top.drop(columns=["note", tracking.RUN_ID_FIELD])), highlight=False)
    if summary.importances:
        console.print("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.importances.items()))
    elif summary.importance_note:
        console.print(summary.importance_note)
    console.print(f"artifacts of parent run {summary.parent_run_id}: {', '.join(summary.artifacts)}")
    console.print(tracking.ui_hint(uri, tracking.prepare(uri, places.experiment)), highlight=False, markup=False)
    console.print(DASHBOARD_HINT.format(storage=tracking.shown_uri(summary.storage)), highlight=False, markup=False)
    if summary.dead_workers:
        console.print(f"[red]worker(s) died:[/] {', '.join(summary.dead_workers)}; their trials are marked failed.")
        raise typer.Exit(code=1)
    if summary.interrupted:
        console.print("interrupted; run the same command again to continue the study.")
        raise typer.Exit(code=130)


@app.command("sensitivity")
@with_options(only=("tracking_uri", "experiment"), places=Places)
def sensitivity(
    dataset: str = typer.Argument(..., help="Dataset whose finished runs to rescore (e.g. tiny-imagenet)."),
    run_id: Optional[List[str]] = typer.Option(None, "--run-id", help="Rescore only these runs (repeatable); default: the latest finished run of every configuration."),
    vanishing: str = typer.Option("1e-8,1e-7,1e-6,1e-5", "--vanishing", help="Vanishing thresholds (mean norm below)."),
    exploding: str = typer.Option("1,10,100,1000", "--exploding", help="Exploding thresholds (mean norm above)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage (default: optuna.db beside a sqlite tracking store, else ./optuna.db)."),
    out: Path = typer.Option(Path("bench-sensitivity"), "--out", help="Folder for the table and figures (a sub-folder per dataset)."),
    *,
    places: Places,
) -> None:
    """How gradient-health scores and verdicts move with the thresholds (no retraining)."""
    from bench import tracking
    from bench.api import sensitivity as run_sensitivity
    from bench.studies import sensitivity as sens

    result = run_sensitivity(
        dataset, run_ids=run_id or [], vanishing=vanishing, exploding=exploding,
        experiment=places.experiment, tracking_uri=places.tracking_uri, storage=storage, out=out,
    )
    grid = sens.ThresholdGrid.parse(vanishing, exploding)
    console = make_console()
    console.print(f"{len(result.sources)} source run(s), {len(grid.pairs)} threshold pairs; study {result.study_name!r}")
    console.print(sens.to_markdown_report(result.table, dataset), highlight=False)
    if "ranking_agreement" in result.metrics:
        console.print(f"ranking equal to the protocol pair's at {result.metrics['ranking_agreement']:.0%} of the pairs")
    console.print(f"wrote {', '.join(str(p) for p in result.files)}; logged to MLflow run {result.run_id}", highlight=False)
    console.print(DASHBOARD_HINT.format(storage=tracking.shown_uri(result.storage)), highlight=False, markup=False)
