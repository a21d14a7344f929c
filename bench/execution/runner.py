"""One run end to end, as a worker executes it.

data.load -> models.build -> engine.fit (checkpoint each epoch, gradient flow at chosen epochs)
-> metrics on the test split -> final gradient-flow analysis -> everything logged to MLflow.
"""

from __future__ import annotations

import itertools
import shutil
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from bench import data, models, tracking
from bench.config.spec import RunSpec
from bench.core.version import __version__
from bench.data import split_record
from bench.execution.run_tags import environment_tags, run_tags
from bench.execution.tasks import HELD
from bench.models import flops
from bench.tracking import CLAIM_HEARTBEAT_S, metric_names
from bench.train import checkpoint, cost
from bench.train.engine import FitResult, GradFlowAtEpochs, StopRequest, Trainer, predict
from bench.train.reproducibility import configure_determinism


@dataclass(frozen=True)
class RunContext:
    """Where a run reads data, writes checkpoints, logs, and on which device it trains."""

    tracking_uri: str
    data_dir: Path
    checkpoint_root: Path
    device: str = "cpu"
    owner: str | None = None  # the claim this run was planned under; None: unclaimed (direct calls)
    log_model: bool = True  # False: no weights are kept in MLflow (--no-log-model, e.g. for study trials)
    system_metrics: bool = True  # MLflow's monitor samples CPU, memory and GPU use into system/


@dataclass
class RunOutcome:
    run_id: str
    status: str  # FINISHED, KILLED (interrupted, resumable) or FAILED
    test_top1: float | None = None
    epochs: int = 0
    health_score: float | None = None
    health_score_notebook: float | None = None


def checkpoint_dir(ctx: RunContext, run_id: str) -> Path:
    """One folder per MLflow run: a resumed run finds its checkpoint, a --force rerun starts afresh."""
    return Path(ctx.checkpoint_root) / run_id


def _gradflow_batches(loader, count: int):
    """A fixed set of batches: the first `count` of the split in epoch 0's order, the same every call."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(0)
    return itertools.islice(iter(loader), count)


def execute(
    spec: RunSpec, ctx: RunContext, run_id: str, callbacks=(), should_stop: Callable[[], bool] | None = None,
    on_run: Callable[[str], None] = lambda run_id: None,
) -> RunOutcome:
    """Train, evaluate and log one run into the existing MLflow run `run_id`.

    A claimed run that waited in the queue is first replaced by a new one (tracking.start_clock), so
    MLflow's clock starts now; `on_run` hears the id of the run actually trained. Exceptions are
    logged (traceback artifact, status FAILED) and re-raised to the caller.
    """
    if ctx.owner and tracking.claim_owner(ctx.tracking_uri, run_id) != ctx.owner:
        return RunOutcome(run_id, HELD)  # taken over while it waited in the queue
    if ctx.owner:
        checkpointed = (checkpoint_dir(ctx, run_id) / checkpoint.LAST).exists()
        planned, run_id = run_id, tracking.start_clock(ctx.tracking_uri, run_id, begun=checkpointed)
        if run_id != planned:  # nothing trained in the planned run: what a killed worker left in its folder goes with it
            shutil.rmtree(checkpoint_dir(ctx, planned), ignore_errors=True)
        on_run(run_id)
    logger = tracking.RunLogger(ctx.tracking_uri, run_id)
    heartbeat = tracking.Heartbeat(ctx.tracking_uri, ctx.owner, [run_id] if ctx.owner else [], CLAIM_HEARTBEAT_S)

    def stop_requested() -> bool:
        return bool(heartbeat.lost) or bool(should_stop and should_stop())

    try:
        with heartbeat, checkpoint.exclusive(checkpoint_dir(ctx, run_id)), tracking.system_metrics(ctx.tracking_uri, run_id, enabled=ctx.system_metrics):
            outcome = _execute(spec, ctx, logger, callbacks, stop_requested)
        if heartbeat.lost:  # another process owns the run now: leave its status and checkpoints to it
            return RunOutcome(run_id, HELD, epochs=outcome.epochs)
        if outcome.status == tracking.KILLED:
            logger.end(tracking.KILLED)
        return outcome
    except checkpoint.FolderInUse:  # another process trains it: its run, not a failure of ours
        return RunOutcome(run_id, HELD)
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            logger.end(tracking.KILLED)
            raise
        try:
            logger.log_text(traceback.format_exc(), "failure/traceback.txt")
            logger.set_tags({"failure": f"{error.__class__.__name__}: {str(error)[:200]}"})
            logger.end(tracking.FAILED)
        except Exception:  # the store itself is gone: the parent marks the run when it can
            pass
        raise


def _execute(spec, ctx, logger: tracking.RunLogger, callbacks, should_stop) -> RunOutcome:
    spec = spec.resolved()
    device = torch.device(ctx.device)
    configure_determinism(spec.train.deterministic, spec.train.strict_determinism)
    bundle = _load_data(spec, ctx, logger)
    model = _build_model(spec, ctx, bundle, logger, device)
    counted = _count_flops(spec, bundle, logger)
    loaders = _loaders(spec, bundle, device)
    analyze = _gradflow_analysis(spec, bundle, loaders, device)
    ckpt_dir = checkpoint_dir(ctx, logger.run_id)
    trainer = Trainer(
        model,
        loaders["train"],
        loaders["val"],
        replace(spec.train, restore_best=False),  # both weight sets are evaluated below; the headline follows the spec
        device=device,
        checkpoint_dir=ckpt_dir,
        flops_per_image=counted.train_step,
        callbacks=[
            GradFlowAtEpochs(model, analyze, spec.gradflow.every, logger.on_gradflow),
            logger,
            *callbacks,
            StopRequest(should_stop),
        ],
    )
    fit = trainer.fit()
    if fit.resumed_from_epoch:
        logger.set_tags({"resumed_from_epoch": fit.resumed_from_epoch})
    if fit.interrupted:  # ended KILLED by `execute`, unless the run was lost to another owner
        return RunOutcome(logger.run_id, tracking.KILLED, epochs=fit.epochs_run)
    spent = cost.run_cost(fit.history, fit.best_epoch, models.count_parameters(model), counted)
    logger.log_metrics({metric_names.result(key): value for key, value in spent.items()}, step=fit.epochs_run)
    logger.set_tags({"cost.memory": trainer.meter.memory_source, "cost.energy": trainer.meter.energy_source or NO_ENERGY})
    outcome = _finish(spec, ctx, logger, model, trainer.best_state, fit, bundle, loaders["test"], analyze)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished runs never resume; the weights are in MLflow
    return outcome


def _load_data(spec: RunSpec, ctx: RunContext, logger: tracking.RunLogger):
    """The decoded splits, logged as the run's dataset input (and the seeded re-split's indices)."""
    checkpoint.seed_everything(spec.seed)
    bundle = data.get(spec.dataset).load(ctx.data_dir, preprocessing=spec.preprocessing, splits=spec.splits, seed=spec.split_seed)
    _log_dataset(logger, spec, bundle, ctx.data_dir)
    if bundle.split_indices is not None:  # protocol 7.8: the seeded re-split, so results can be re-checked
        logger.log_written(split_record.ARTIFACT, lambda path: split_record.write_split_indices(bundle.split_indices, path))
    return bundle


def _build_model(spec: RunSpec, ctx: RunContext, bundle, logger: tracking.RunLogger, device: torch.device) -> torch.nn.Module:
    """The seeded model on its device; the run's tags and resolved parameters logged."""
    checkpoint.seed_everything(spec.seed)  # the model's initial weights depend on the seed alone
    model = _model_of(spec, bundle).to(device)
    logger.set_tags(run_tags(spec, ctx.device, models.count_parameters(model)) | environment_tags(device))
    logger.log_params(spec.flat_params())
    return model


def _model_of(spec: RunSpec, bundle) -> torch.nn.Module:
    """The spec's model for the bundle's classes and channels, on the current default device."""
    return models.build(spec.model, bundle.num_classes, bundle.in_channels, **spec.model_config.for_model(models.info(spec.model).options))


def _count_flops(spec: RunSpec, bundle, logger: tracking.RunLogger) -> flops.Flops:
    """FLOPs per image at the run's input size, counted on a meta-device twin of the model (bench.models.flops)."""
    with torch.device("meta"):
        twin = _model_of(spec, bundle)
    counted = flops.count(twin, bundle.in_channels, bundle.image_size)
    logger.set_tags({"cost.input": f"{bundle.in_channels}x{bundle.image_size}x{bundle.image_size}"})
    return counted


def _loaders(spec: RunSpec, bundle, device: torch.device) -> dict:
    """Device-side loaders of the three splits: training shuffled and augmented, the others not."""
    from bench.data.pipeline import BatchLoader

    return {
        name: BatchLoader(
            getattr(bundle, name),
            batch_size=spec.train.batch_size,
            transform=bundle.train_transform if name == "train" else bundle.eval_transform,
            device=device,
            shuffle=name == "train",
            seed=spec.seed,
        )
        for name in ("train", "val", "test")
    }


def _gradflow_analysis(spec: RunSpec, bundle, loaders: dict, device: torch.device) -> Callable:
    """`analyze(model)`: the gradient-flow report over the spec's fixed set of batches."""
    from bench import gradflow
    from bench.data.pipeline import BatchLoader

    source = loaders[spec.gradflow_split]
    if spec.gradflow_split == "train":
        # protocol 7.7: a seeded sample of training batches, read with the eval transform so the
        # analysed images are the same at every epoch and, under one split seed, for every model.
        source = BatchLoader(
            bundle.train, batch_size=spec.train.batch_size, transform=bundle.eval_transform, device=device,
            shuffle=True, seed=spec.split_seed,
        )
    thresholds = spec.gradflow.thresholds

    def analyze(net):
        batches = _gradflow_batches(source, spec.gradflow.num_batches)
        return gradflow.analyze(net, batches, thresholds=thresholds, mode=spec.gradflow.mode)

    return analyze


def _finish(spec: RunSpec, ctx: RunContext, logger: tracking.RunLogger, model, best_state, fit: FitResult, bundle, test_loader, analyze) -> RunOutcome:
    """Both weight sets on test, the headline's gradient flow, every result logged; the run FINISHED."""
    evaluations, headline = _evaluate_both(spec, model, best_state, test_loader, bundle, best_is_last=fit.best_epoch == fit.epochs_run)
    report = evaluations[headline]
    flow = analyze(model)  # the headline weights, as evaluated
    model_id = _log_model(logger, spec, ctx, model, bundle, fit, headline)
    # Results under their flat names (bench.tracking.metric_names): the UI charts the curves first.
    # The headline's test metrics are also the logged model's, measured on the run's dataset.
    results = {metric_names.result(key): value for key, value in _test_metrics(report.scalars).items()}
    logger.log_metrics(results, step=fit.epochs_run, model_id=model_id, dataset=(spec.dataset, _digest(bundle)))
    per_weights = {}
    for weights, evaluation in evaluations.items():
        per_weights |= _test_metrics(evaluation.scalars, weights)
    results = {metric_names.result(key): value for key, value in (per_weights | _summary_metrics(fit, flow)).items()}
    logger.log_metrics(results, step=fit.epochs_run)
    _log_artifacts(logger, fit, report, flow)
    logger.log_text(_test_metrics_csv(evaluations, headline), "evaluation/test_metrics.csv")
    logger.log_text(_predictions_csv(evaluations), "evaluation/test_predictions.csv")
    logger.set_tags({
        "final_weights": headline, "num_classes": str(bundle.num_classes), "notes": "; ".join(bundle.notes)[:4000],
        "test_examples": str(len(bundle.test)), "class_ratio": f"{_class_ratio(bundle.train.labels):.4g}",
    })
    logger.clear_failure()  # an earlier attempt's failure marks no longer describe this run
    logger.end(tracking.FINISHED)
    return RunOutcome(
        logger.run_id,
        tracking.FINISHED,
        test_top1=report.scalars["top1"],
        epochs=fit.epochs_run,
        health_score=flow.health_score,
        health_score_notebook=flow.health_score_notebook,
    )


def _evaluate_both(spec: RunSpec, model, best_state, test_loader, bundle, best_is_last: bool = False):
    """Test metrics of the last-epoch and of the best-validation weights (protocol 7.2 measured);
    leaves ``model`` holding the headline weights and returns ({"best"|"last": report}, headline).
    Where the best epoch is the last one (``best_is_last``), the weights are the same and the test
    split is predicted once."""
    from bench.train.metrics import classification_metrics

    def evaluate():
        logits, labels = predict(model, test_loader, precision=spec.train.precision, channels_last=spec.train.channels_last)
        return classification_metrics(logits, labels, class_names=getattr(bundle, "class_names", None))

    evaluations = {"last": evaluate()}
    if best_state is None:
        return evaluations, "last"
    if best_is_last:
        evaluations["best"] = evaluations["last"]
        return evaluations, "best" if spec.restore_best else "last"
    last_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if not spec.restore_best else None
    model.load_state_dict(best_state)
    evaluations["best"] = evaluate()
    if last_state is not None:
        model.load_state_dict(last_state)
    return evaluations, "best" if spec.restore_best else "last"


def _test_metrics(scalars: dict[str, float], weights: str | None = None) -> dict[str, float]:
    """`test/<metric>` for the headline, `test/best_<metric>` / `test/last_<metric>` per weight set."""
    return {metric_names.test_key(k.removeprefix("test_"), weights): v for k, v in scalars.items()}


def _test_metrics_csv(evaluations, headline: str) -> str:
    """The test metrics of each weight set side by side, a row per metric: the run's results as one
    table to read (the run's metrics hold the same values, one chart each)."""
    import pandas as pd

    table = pd.DataFrame({weights: evaluation.scalars for weights, evaluation in evaluations.items()})
    table.index = [name.removeprefix("test_") for name in table.index]
    table.insert(0, "headline", table[headline])
    return table.rename_axis("metric").to_csv()


def _predictions_csv(evaluations) -> str:
    """Per test example, the label and each weight set's prediction: what a paired test across
    models needs (McNemar, bootstrap), in the order of the recorded test split."""
    columns = {"label": next(iter(evaluations.values())).labels}
    columns |= {f"pred_{weights}": evaluation.predictions for weights, evaluation in evaluations.items()}
    lines = [",".join(columns)]
    lines += [",".join(str(int(v)) for v in row) for row in zip(*columns.values())]
    return "\n".join(lines) + "\n"


def _digest(bundle) -> str:
    from bench.data.base import bundle_digest

    return bundle_digest(bundle)


def _log_dataset(logger: tracking.RunLogger, spec: RunSpec, bundle, data_dir: Path) -> None:
    """The decoded data as an MLflow dataset input: where it came from, its digest, its split sizes."""
    dataset = data.get(spec.dataset)
    files = dataset.expected_files(data_dir)
    profile = {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)}
    profile |= {"splits": spec.splits, "split_seed": bundle.seed, "preprocessing": spec.preprocessing}
    source = ", ".join(str(Path(f).resolve()) for f in files) or dataset.homepage or spec.dataset
    logger.log_dataset(spec.dataset, _digest(bundle), source, profile)


def _class_ratio(labels: torch.Tensor) -> float:
    """The training split's majority to minority class ratio (the report shows balanced accuracy
    beside top-1 where it is large), over the classes present."""
    counts = torch.bincount(labels)
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else float("nan")


def _summary_metrics(fit: FitResult, flow) -> dict[str, float]:
    return {
        "val/best_acc": fit.best_val_acc,
        "val/best_epoch": float(fit.best_epoch),
        "train/epochs_run": float(fit.epochs_run),
        "train/stopped_early": float(fit.stopped_early),
        "train/time_s": sum(r.epoch_time_s for r in fit.history),
        "gradflow/health": flow.health_score,
        "gradflow/health_notebook": flow.health_score_notebook,
        "gradflow/vanishing_layers": float(flow.n_vanishing),
        "gradflow/exploding_layers": float(flow.n_exploding),
        "gradflow/layers": float(len(flow.layers)),  # what the health score is a share of
        "gradflow/batches": float(flow.batches),
        "gradflow/batch_size": float(flow.batch_size),
    }


def _log_artifacts(logger: tracking.RunLogger, fit: FitResult, report, flow) -> None:
    import pandas as pd

    from bench.core.plots import plot_confusion
    from bench.gradflow import plot, text_report

    logger.log_text(flow.to_json(), "gradflow/gradflow.json")
    logger.log_text(text_report(flow), "gradflow/report.txt")
    logger.log_figure(lambda p: plot(flow, p, dpi=110), "gradflow/gradflow.png")
    names = list(report.per_class["class"]) if "class" in report.per_class else None
    confusion = pd.DataFrame(report.confusion, index=names, columns=names)
    logger.log_text(confusion.to_csv(), "evaluation/confusion_matrix.csv")
    logger.log_figure(lambda p: plot_confusion(report.confusion, names, p), "evaluation/confusion_matrix.png")
    logger.log_text(report.per_class.to_csv(index=False), "evaluation/per_class.csv")
    logger.log_text(pd.DataFrame([asdict(r) for r in fit.history]).to_csv(index=False), "history.csv")


NO_ENERGY = "not measured: no NVML energy counter (GPU) or readable RAPL counter (CPU)"


def _log_model(
    logger: tracking.RunLogger, spec: RunSpec, ctx: RunContext, model: torch.nn.Module, bundle, fit: FitResult, headline: str
) -> str | None:
    """The weights the headline test metrics came from, as the run's MLflow model named after the run
    (`digits-resnet18-42`), with the evaluation transform in front (bench.models.packaged); as
    `checkpoint/<best|last>.pt` when the store takes no logged models; not at all under
    --no-log-model. The run's `weights` tag says which. Returns the logged model's id, if any."""
    from bench.models.packaged import packaged

    epoch = fit.best_epoch if headline == "best" else fit.epochs_run
    if not ctx.log_model:
        logger.set_tags({"weights": "not logged (--no-log-model)"})
        return None
    requirements = [f"torch=={torch.__version__}", f"gradattn-bench=={__version__}"]
    tags = {"dataset": spec.dataset, "model": spec.model, "seed": str(spec.seed), "weights": headline, "epoch": str(epoch)}
    name = tracking.model_name(spec.run_name)
    model_id = logger.log_model(packaged(model, bundle.eval_transform), name, fit.epochs_run, tags, requirements)
    if model_id is not None:
        logger.set_tags({"weights": f"logged model {model_id}"})
        return model_id
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    logger.log_written(f"checkpoint/{headline}.pt", lambda path: checkpoint.save({"epoch": epoch, "model": weights}, path))
    logger.set_tags({"weights": f"checkpoint/{headline}.pt (the store takes no logged models)"})
    return None
