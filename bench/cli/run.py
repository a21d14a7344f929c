"""`bench run`: the dataset x model x seed grid on every device slot, tracked in MLflow."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from bench.cli._app import app, listing_settings, setting_help, with_backend
from bench.cli._app import console as make_console
from bench.config.spec import schema
from bench.core.errors import BenchError
from bench.core.numbers import parse_numbers
from bench.execution.backends import Placement
from bench.tracking import DEFAULT_EXPERIMENT

MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit


def parse_seeds(text: str | None, option: str = "--seeds") -> list[int] | None:
    if text is None:
        return None
    return parse_numbers(text, option, int, valid=lambda seed: 0 <= seed <= MAX_SEED, what=f"integers from 0 to {MAX_SEED}")


def check_text_option(value: str | None, option: str) -> None:
    """An option given as an empty string is a mistake, not a request for the default."""
    if value is not None and not value.strip():
        raise BenchError(f"{option} is empty; give a value or leave the option out for the default.")


def check_folder(path: Path, option: str, writable: bool) -> None:
    """A folder the grid needs: not a file, and (if `writable`) one this process can create and write in."""
    if path.exists() and not path.is_dir():
        raise BenchError(f"{option} {path} is a file, not a folder; pass a folder.")
    if not writable:
        return
    existing = path
    while not existing.exists() and existing != existing.parent:  # created later, by the first run
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise BenchError(f"{option} {path} is not writable ({error.strerror or error}); pass a folder you can write to.") from None


@app.command("run", cls=listing_settings(schema, "a study file"))
@with_backend
def run(
    datasets: str = typer.Option("digits", "--datasets", "-d", help="Comma list, wildcards or 'all'."),
    models: str = typer.Option("all", "--models", "-m", help="Comma list, wildcards ('gradattn-*') or 'all'."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma list of training seeds: initialisation and batch order (default: 42)."),
    split_seeds: Optional[str] = typer.Option(None, "--split-seeds", help="Comma list of split seeds, crossed with --seeds, for a study of split variance (default: 42, the protocol's split)."),
    study: Optional[Path] = typer.Option(None, "--study", help="A study file (TOML) with the grid and settings."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="A module that registers models or datasets (repeatable); installed plugins load with no option."),
    settings: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Any setting listed below (repeatable), over the study file's: --set train.lr=3e-4 --set preprocessing=notebook."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help=setting_help(schema(), "train.max_epochs")),
    system_metrics: bool = typer.Option(True, "--system-metrics/--no-system-metrics", help="Sample CPU, memory and GPU use into each run's system/ metrics (MLflow's monitor)."),
    log_model: bool = typer.Option(True, "--log-model/--no-log-model", help="Keep each run's weights as its MLflow model (--no-log-model: no weights kept)."),
    force: bool = typer.Option(False, "--force", help="Rerun configurations that already finished."),
    prune_checkpoints: bool = typer.Option(False, "--prune-checkpoints", help="Remove the checkpoint folders of runs deleted in MLflow."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Run the datasets that are present, skip the rest."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="(default: $BENCH_DATA_DIR or ./data)"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="(default: $BENCH_CHECKPOINT_DIR or ./checkpoints)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="(default: $MLFLOW_TRACKING_URI or MLflow's default)"),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="MLflow experiment."),
    *,
    backend: str,
    placement: Placement,
) -> None:
    """Train the dataset x model x seed grid and log every run to MLflow."""
    from bench import data, tracking
    from bench.config import studyfile
    from bench.core import plugins
    from bench.execution import backends, checkpoints, planning, tasks
    from bench.execution.backends.driver import run_plan
    from bench.execution.progress import GridDisplay, print_problems, summary_table
    from bench.execution.runner import LOG_MODEL_ENV, default_checkpoint_root

    plugins.use(plugin or [])
    os.environ[tracking.SYSTEM_METRICS_ENV] = "1" if system_metrics else "0"  # read in every worker
    os.environ[LOG_MODEL_ENV] = "1" if log_model else "0"
    check_text_option(tracking_uri, "--tracking-uri")
    check_text_option(experiment, "--experiment")
    given = schema().parse(settings or [])
    if max_epochs is not None:
        given["train.max_epochs"] = schema().keys["train.max_epochs"].coerce(max_epochs, "command line: --max-epochs")
    grid = studyfile.load(study) if study else studyfile.Grid(pairs=studyfile.pairs_from(datasets, models))
    grid = grid.overridden(parse_seeds(seeds), parse_seeds(split_seeds, "--split-seeds"), given)
    specs = grid.specs()
    data_dir = data_dir or data.default_data_dir()
    checkpoint_root = checkpoint_dir or default_checkpoint_root()
    check_folder(data_dir, "--data-dir", writable=False)  # read-only data (a container's) is fine
    check_folder(checkpoint_root, "--checkpoint-dir", writable=True)
    missing = data.missing(grid.datasets, data_dir)
    if missing and not skip_missing:
        lines = "\n".join(f"  - {hint}" for hint in missing.values())
        raise BenchError(
            f"{len(missing)} requested dataset(s) are not in {data_dir}: {', '.join(missing)}; "
            f"get them as below, or pass --skip-missing to run the rest.\n{lines}"
        )
    specs = [s for s in specs if s.dataset not in missing]
    executor = backends.create(backend, placement)
    uri = tracking.resolve_uri(tracking_uri)
    experiment_id = tracking.prepare(uri, experiment)  # an unreachable store stops here, before any run
    leftovers = checkpoints.tidy_checkpoints(uri, checkpoint_root, remove_deleted=prune_checkpoints)
    plan = planning.plan_runs(specs, uri, experiment_id, executor.device_label, force=force)
    try:
        planning.verify_resumable(plan, checkpoint_root)  # a damaged or unsafe checkpoint stops here
    except BenchError:
        planning.release_plan(plan, uri, tracking.KILLED)
        raise
    console = make_console()
    console.print(
        f"{len(plan.tasks)} run(s) to do, {len(plan.skipped)} already finished; "
        f"{executor.description}; tracking: {tracking.shown_uri(uri)} (experiment {experiment!r})",
        markup=False,
    )
    if plan.held:
        console.print(
            f"{len(plan.held)} configuration(s) are being trained by another process, left to it: "
            + ", ".join(f"{h.spec.run_name} (run {h.run_id[:8]}, {h.owner})" for h in plan.held),
            markup=False, highlight=False,
        )
    if leftovers.deleted:
        console.print(
            f"{len(leftovers.deleted)} checkpoint folder(s) of runs deleted in MLflow hold "
            f"{leftovers.deleted_bytes / 1e6:.1f} MB in {checkpoint_root}; remove them with --prune-checkpoints.",
            markup=False, highlight=False,
        )
    destination = backends.Destination(uri, data_dir, checkpoint_root)
    with GridDisplay(console) as display, planning.claims_kept(plan, uri, display.update) as on_update:
        states = run_plan(executor, plan, destination, on_update)
    console.print(summary_table(states, plan.skipped, plan.held))
    console.print(tracking.ui_hint(uri, experiment_id), highlight=False, markup=False)
    with contextlib.suppress(OSError):  # each finished run removed its checkpoints: drop the folder if empty
        destination.checkpoint_root.rmdir()
    outcomes = tasks.by_outcome(states)
    print_problems(console, outcomes["failed"], outcomes["unsynced"])
    if outcomes["interrupted"]:
        console.print(f"{len(outcomes['interrupted'])} run(s) interrupted; run the same command again to finish them.")
    if outcomes["failed"] or outcomes["unsynced"]:
        raise typer.Exit(code=1)
    if outcomes["interrupted"]:
        raise typer.Exit(code=130)
