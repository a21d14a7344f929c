"""`bench run`: the dataset x model x seed grid on every device slot, tracked in MLflow."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from bench.backends import Placement
from bench.cli import app, with_backend
from bench.cli import console as make_console
from bench.errors import BenchError
from bench.tracking import DEFAULT_EXPERIMENT

MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit


def parse_seeds(text: str | None, option: str = "--seeds") -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"{option} must be a comma-separated list of integers, got {text!r}.") from None
    if not seeds:
        raise BenchError(f"{option} needs at least one integer.")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise BenchError(f"{option} must be integers from 0 to {MAX_SEED}, got {', '.join(map(str, bad))}.")
    return seeds


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


def missing_datasets(names: list[str], data_dir: Path) -> dict[str, str]:
    """dataset -> how to get it, for every requested dataset whose files are not there."""
    from bench import data

    return {n: data.get(n).how_to_get(data_dir) for n in names if data.get(n).missing_files(data_dir)}


@app.command("run")
@with_backend
def run(
    datasets: str = typer.Option("digits", "--datasets", "-d", help="Comma list, wildcards or 'all'."),
    models: str = typer.Option("all", "--models", "-m", help="Comma list, wildcards ('gradattn-*') or 'all'."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma list of training seeds: initialisation and batch order (default: 42)."),
    split_seeds: Optional[str] = typer.Option(None, "--split-seeds", help="Comma list of split seeds, crossed with --seeds, for a study of split variance (default: 42, the protocol's split)."),
    study: Optional[Path] = typer.Option(None, "--study", help="A study file (TOML) with the grid and settings."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="A module that registers models or datasets (repeatable); installed plugins load with no option."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="(default: 100, protocol 3.1)"),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="protocol (default) or notebook."),
    splits: Optional[str] = typer.Option(None, "--splits", help="protocol (default), official, or grouped (PAD-UFES-20)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="(default: 1e-3)"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Coupled L2 (default: 1e-4)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="(default: the dataset's, protocol 2.1)"),
    plateau_factor: Optional[float] = typer.Option(None, "--plateau-factor", help="(default: 0.2)"),
    plateau_patience: Optional[int] = typer.Option(None, "--plateau-patience", help="(default: 3)"),
    min_lr: Optional[float] = typer.Option(None, "--min-lr", help="(default: 1e-7)"),
    early_stopping_patience: Optional[int] = typer.Option(None, "--early-stopping-patience", help="(default: 7)"),
    restore_best: Optional[bool] = typer.Option(None, "--restore-best/--no-restore-best", help="(default: on in protocol mode, off in notebook mode)"),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 (default), bf16 or fp16 autocast."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC activations (default: on; --no-channels-last for the original layout)."),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile (opt-in)."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--fast", help="(default: deterministic)"),
    strict_determinism: Optional[bool] = typer.Option(None, "--strict-determinism/--no-strict-determinism", help="Also CUBLAS_WORKSPACE_CONFIG and no nondeterministic op (an error instead of a warning) (default: off)."),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", help="GradAttn encoder depth (default: 3)."),
    d_model: Optional[int] = typer.Option(None, "--d-model", help="GradAttn width (default: 256)."),
    nhead: Optional[int] = typer.Option(None, "--nhead", help="(default: 8)"),
    dim_feedforward: Optional[int] = typer.Option(None, "--dim-feedforward", help="(default: 512)"),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="(default: 0.1)"),
    init: Optional[str] = typer.Option(None, "--init", help="uniform (one policy for all models) or per-model (the notebooks') (default: the mode's: uniform / per-model)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="shared (only the PE differs) or published (the notebooks') (default: the mode's: shared / published)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="nope-small (32/16/2, gradattn-nope only) or none (default: notebook mode: each notebook's No PE; protocol: none)."),
    gradflow_every: Optional[int] = typer.Option(None, "--gradflow-every", help="Also analyse every N epochs (default: only at the end)."),
    gradflow_batches: Optional[int] = typer.Option(None, "--gradflow-batches", help="(default: 20)"),
    gradflow_split: Optional[str] = typer.Option(None, "--gradflow-split", help="train, val or test (default: the mode's: seeded training batches / test)."),
    gradflow_mode: Optional[str] = typer.Option(None, "--gradflow-mode", help="train or eval forward (default: train)."),
    vanishing: Optional[float] = typer.Option(None, "--vanishing", help="(default: 1e-6)"),
    exploding: Optional[float] = typer.Option(None, "--exploding", help="(default: 10)"),
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
    from bench import backends, data, plugins, scheduler, studyfile, tracking
    from bench.backends.driver import run_plan
    from bench.progress import GridDisplay, print_problems, summary_table
    from bench.runner import LOG_MODEL_ENV, default_checkpoint_root

    plugins.use(plugin or [])
    os.environ[tracking.SYSTEM_METRICS_ENV] = "1" if system_metrics else "0"  # read in every worker
    os.environ[LOG_MODEL_ENV] = "1" if log_model else "0"
    check_text_option(tracking_uri, "--tracking-uri")
    check_text_option(experiment, "--experiment")
    grid = studyfile.load(study) if study else studyfile.Grid(pairs=studyfile.pairs_from(datasets, models))
    grid = studyfile.override(
        grid,
        seeds=parse_seeds(seeds),
        split_seeds=parse_seeds(split_seeds, "--split-seeds"),
        preprocessing=preprocessing,
        splits=splits,
        **{
            "train.max_epochs": max_epochs, "train.lr": lr, "train.weight_decay": weight_decay,
            "train.batch_size": batch_size, "train.plateau_factor": plateau_factor,
            "train.plateau_patience": plateau_patience, "train.min_lr": min_lr,
            "train.early_stopping_patience": early_stopping_patience, "train.restore_best": restore_best,
            "train.precision": precision, "train.channels_last": channels_last,
            "train.compile": compile_model, "train.deterministic": deterministic,
            "train.strict_determinism": strict_determinism,
            "model.num_layers": num_layers, "model.d_model": d_model, "model.nhead": nhead,
            "model.dim_feedforward": dim_feedforward, "model.dropout": dropout, "model.init": init,
            "model.encoder": encoder, "model.preset": preset,
            "gradflow.every": gradflow_every, "gradflow.num_batches": gradflow_batches,
            "gradflow.split": gradflow_split, "gradflow.mode": gradflow_mode,
            "gradflow.vanishing": vanishing, "gradflow.exploding": exploding,
        },
    )
    specs = grid.specs()
    _check_model_options(specs)
    for dataset, preprocessing_mode, split_mode in {(s.dataset, s.preprocessing, s.splits) for s in specs}:
        data.get(dataset).check_options(preprocessing_mode, split_mode)
    data_dir = data_dir or data.default_data_dir()
    checkpoint_root = checkpoint_dir or default_checkpoint_root()
    check_folder(data_dir, "--data-dir", writable=False)  # read-only data (a container's) is fine
    check_folder(checkpoint_root, "--checkpoint-dir", writable=True)
    missing = missing_datasets(grid.datasets, data_dir)
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
    leftovers = scheduler.tidy_checkpoints(uri, checkpoint_root, remove_deleted=prune_checkpoints)
    plan = scheduler.plan_runs(specs, uri, experiment_id, executor.device_label, force=force)
    try:
        scheduler.verify_resumable(plan, checkpoint_root)  # a damaged or unsafe checkpoint stops here
    except BenchError:
        scheduler.release_plan(plan, uri, tracking.KILLED)
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
    with GridDisplay(console) as display, scheduler.claims_kept(plan, uri, display.update) as on_update:
        states = run_plan(executor, plan, destination, on_update)
    console.print(summary_table(states, plan.skipped, plan.held))
    console.print(tracking.ui_hint(uri, experiment_id), highlight=False, markup=False)
    with contextlib.suppress(OSError):  # each finished run removed its checkpoints: drop the folder if empty
        destination.checkpoint_root.rmdir()
    unsynced = [s for s in states if s.status == "failed" and (s.error or "").startswith(tracking.TrackingUnavailable.__name__)]
    failed = [s for s in states if s.status == "failed" and s not in unsynced]
    unfinished = [s for s in states if s.status in ("killed", "not started")]
    print_problems(console, failed, unsynced)
    if unfinished:
        console.print(f"{len(unfinished)} run(s) interrupted; run the same command again to finish them.")
    if failed or unsynced:
        raise typer.Exit(code=1)
    if unfinished:
        raise typer.Exit(code=130)


def _check_model_options(specs) -> None:
    """Reject impossible transformer options before any training starts (built on the meta device)."""
    import torch

    from bench import models
    from bench.spec import check_finite

    for spec in specs:
        check_finite(spec.model_config)
    for model, config in {(s.model, s.resolved().model_config) for s in specs}:
        try:
            with torch.device("meta"):
                models.build(model, 10, 3, **config.for_model(models.info(model).options))
        except (ValueError, TypeError) as error:  # e.g. torch's own check of a dropout probability
            raise BenchError(f"{model} cannot be built with these options ({error}).") from None
