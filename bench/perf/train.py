"""Model throughput, harness overhead and gradient-flow overhead, each against bare PyTorch in the same run.

For each model, on the same pre-built batches (so data loading is in none of these ratios):

- training throughput of our harness, one "epoch" of ``steps`` steps per repeat: ``Trainer.train_epoch``
  (autocast, channels-last, loss and accuracy accumulated on the device, one read per epoch), then the
  epoch-end callbacks a worker runs: the MLflow ``RunLogger`` writing to a temporary sqlite store and
  the progress events sent to the parent through the mailbox. Against it, the bare loop
  ``zero_grad; cross_entropy(model(x), y).backward(); step`` with the same optimiser and options;
- evaluation throughput (``Trainer.evaluate``, no gradients);
- a gradient-flow analysed step (``gradflow.analyze`` over the same batches in one call, as a run
  analyses its ``gradflow.num_batches``, state saved and restored) against a plain forward + backward
  step, and the plain step again after analysis (its hooks must be gone);
- peak memory of our harness's first epoch (before the bare loop's optimiser state exists): CUDA peak
  allocated, or the process's peak RSS on the CPU;
- on CUDA, that the training step never synchronises with the host (CUDA's sync debug mode).

Every timing is taken after a warm-up and repeated; within a repeat the compared loops run back to
back, and each ratio is the median of the per-repeat ratios, so machine load that drifts between
repeats (a shared machine) cancels out. Throughputs are medians over repeats.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench import models, tracking
from bench.config.spec import PRECISIONS, TrainConfig
from bench.core.errors import BenchError
from bench.train import checkpoint
from bench.train.engine import EpochRecord, Trainer, autocast, make_optimizer
from bench.train.reproducibility import configure_determinism

DEFAULT_MODELS = "resnet18,gradattn-rope"
BATCH_POOL = 4  # distinct pre-built batches, cycled; enough to defeat any caching by value
SYNC_CHECK_SKIPPED = "skipped: CUDA's sync debug mode needs a CUDA device"


@dataclass(frozen=True)
class Workload:
    """What every model is measured on: batch shape, options and how long to measure."""

    image_size: int = 32
    batch_size: int = 128
    steps: int = 20  # timed steps per repeat (one harness "epoch": its epoch-end logging is spread over them)
    warmup: int = 3  # untimed steps before the first repeat
    repeats: int = 3
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = True  # as `bench run`
    deterministic: bool = True  # as `bench run` (cudnn.benchmark off)
    compile: bool = False
    in_channels: int = 3
    num_classes: int = 10
    seed: int = 42

    def validate(self) -> "Workload":
        if min(self.image_size, self.batch_size, self.steps, self.repeats, self.in_channels) < 1 or self.warmup < 0:
            raise BenchError("--image-size, --batch-size, --steps and --repeats must be at least 1 and --warmup at least 0.")
        if self.num_classes < 2:
            raise BenchError(f"A classification benchmark needs at least 2 classes, got {self.num_classes}.")
        if self.precision not in PRECISIONS:
            raise BenchError(f"Unknown --precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}.")
        try:
            target = torch.device(self.device)
        except RuntimeError:
            target = None
        if target is None or target.type not in ("cpu", "cuda"):
            raise BenchError(f"--device must be cpu or cuda[:N], got {self.device!r}.")
        if target.type == "cuda" and not torch.cuda.is_available():
            raise BenchError(f"--device {self.device} was asked for but CUDA is not available; use --device cpu.")
        return self

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            precision=self.precision,
            channels_last=self.channels_last,
            deterministic=self.deterministic,
            compile=self.compile,
            batch_size=self.batch_size,
        )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- inputs --------------------------------------------------------------------------------------------


def synthetic_batches(workload: Workload, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` augmented, normalised batches on the device, from the synthetic dataset and our pipeline."""
    from bench.data.pipeline import BatchLoader
    from bench.data.synthetic import Synthetic

    distinct = min(count, BATCH_POOL)
    dataset = Synthetic(workload.in_channels, workload.image_size, workload.num_classes, (distinct * workload.batch_size, 0, 0))
    bundle = dataset.load(None, seed=workload.seed)
    loader = BatchLoader(
        bundle.train, batch_size=workload.batch_size, transform=bundle.train_transform,
        device=workload.torch_device, shuffle=True, seed=workload.seed,
    )
    pool = list(loader)
    return [pool[i % len(pool)] for i in range(count)]


def build_model(name: str, workload: Workload) -> nn.Module:
    checkpoint.seed_everything(workload.seed)
    return models.build(name, workload.num_classes, workload.in_channels).to(workload.torch_device)


# -- the harness: Trainer + MLflow logging + progress events -------------------------------------------


class TrackingStore:
    """The MLflow store every harness of one benchmark logs to, and a scratch folder for checkpoints."""

    EXPERIMENT = "bench-perf"

    def __init__(self, root: Path, uri: str | None = None) -> None:
        self.root = Path(root)
        self.uri = uri or tracking.sqlite_uri(self.root)
        self.experiment_id = tracking.prepare(self.uri, self.EXPERIMENT)

    def logger(self, run_name: str) -> tracking.RunLogger:
        run_id = tracking.create_run(self.uri, self.experiment_id, run_name, {"purpose": "bench perf"})
        return tracking.RunLogger(self.uri, run_id, outbox_dir=self.root / "outbox" / run_id)


@contextmanager
def tracking_store(uri: str | None = None) -> Iterator[TrackingStore]:
    """A store for one benchmark: `uri` (e.g. the team's MLflow server), else a temporary sqlite one."""
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        yield TrackingStore(Path(tmp), uri)


class Harness:
    """Our training step as a worker runs it, one timed epoch at a time."""

    def __init__(self, model: nn.Module, workload: Workload, store: TrackingStore, run_name: str) -> None:
        from bench.execution.mailbox import Mailbox
        from bench.execution.worker import Progress  # the worker's progress callback

        self.device = workload.torch_device
        self.logger = store.logger(run_name)
        mailbox = Mailbox.create(store.root / "checkpoints")  # nobody reads it here; the store's folder goes
        callbacks = [self.logger, Progress(mailbox.sender(self.logger.run_id))]
        self.trainer = Trainer(
            model, [], [], workload.train_config(), device=self.device,
            checkpoint_dir=store.root / "checkpoints" / self.logger.run_id, callbacks=callbacks,
        )
        self.epochs = 0
        self.last_epoch_end_s = 0.0  # the epoch-end callbacks' share of the last epoch

    def epoch(self, batches: Sequence) -> float:
        """Wall seconds of one training epoch over `batches` and its epoch-end callbacks."""
        self.trainer.train_loader = batches
        start = time.perf_counter()
        loss, accuracy, images, seconds = self.trainer.train_epoch()
        self.epochs += 1
        record = EpochRecord(
            epoch=self.epochs, train_loss=loss, train_acc=accuracy, val_loss=loss, val_acc=accuracy,
            lr=float(self.trainer.optimizer.param_groups[0]["lr"]), epoch_time_s=seconds,
            images_per_s=images / max(seconds, 1e-9), best_val_acc=accuracy, best_epoch=self.epochs,
            improved=True, lr_reduced=False,
        )  # validation is not part of the step: the epoch's training figures stand in for it
        callbacks_start = time.perf_counter()
        for callback in self.trainer.callbacks:
            callback.on_epoch_end(record)
        end = time.perf_counter()
        self.last_epoch_end_s = end - callbacks_start
        return end - start

    def evaluate(self, batches: Sequence) -> float:
        """Wall seconds of ``Trainer.evaluate`` over `batches`."""
        start = time.perf_counter()
        self.trainer.evaluate(batches)
        return time.perf_counter() - start

    def check_no_host_sync(self, batches: Sequence) -> str:
        """Run one epoch's steps under CUDA's sync debug mode set to "error"; the epoch-end read is exempt."""
        if self.device.type != "cuda":
            return SYNC_CHECK_SKIPPED
        self.trainer.train_loader = _SyncChecked(batches)
        try:
            self.trainer.train_epoch()
        except RuntimeError as error:
            return f"failed: {str(error).splitlines()[0][:200]}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return "passed"

    def close(self) -> None:
        self.logger.end(tracking.FINISHED)


class _SyncChecked:
    """Batches served with CUDA's sync debug mode on from the first step until the last one ends."""

    def __init__(self, batches: Sequence) -> None:
        self.batches = batches

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.batches
        finally:  # runs when the loop asks for the batch after the last: before the epoch's one read
            torch.cuda.set_sync_debug_mode(0)


def bare_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence, workload: Workload) -> float:
    """Wall seconds of the plain PyTorch loop over `batches`, with the same options as the harness."""
    device = workload.torch_device
    model.train()  # as the harness does: dropout on, batch statistics in BatchNorm
    start = time.perf_counter()
    for x, y in batches:
        if workload.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad()
        with autocast(device, workload.precision):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


# -- measurements --------------------------------------------------------------------------------------


@dataclass
class TrainingThroughput:
    """Images/s per repeat: our harness, the bare loop, and evaluation."""

    harness: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    evaluation: list[float] = field(default_factory=list)
    epoch_end_s: list[float] = field(default_factory=list)  # MLflow logging + progress, once per epoch
    peak_memory_bytes: int = 0  # of the harness's training, see `peak_memory`
    peak_memory_kind: str = ""

    @property
    def harness_overhead(self) -> float:
        """Our step time over the bare loop's (1.0: no overhead): the median of the per-repeat ratios,
        each of two loops run back to back, so load that drifts between repeats cancels out."""
        return median([bare / ours for bare, ours in zip(self.bare, self.harness)])


def peak_memory(device: torch.device) -> tuple[int, str]:
    """CUDA's peak allocated bytes since the last reset, or on the CPU the process's peak resident set
    size so far (a high-water mark that never goes down)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    import resource  # POSIX only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024), "process_max_rss"  # bytes on macOS, KiB on Linux


def measure_training(harness: Harness, batches: Sequence, workload: Workload) -> TrainingThroughput:
    model = harness.trainer.step_model  # compiled when the workload asks for it, as in the harness
    optimizer = make_optimizer(harness.trainer.model, harness.trainer.config, workload.torch_device)
    warm = batches[: max(workload.warmup, 1)]
    device = workload.torch_device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    harness.epoch(warm)
    result = TrainingThroughput()
    # read before the bare loop's optimiser state exists: what one training run holds
    result.peak_memory_bytes, result.peak_memory_kind = peak_memory(device)
    bare_epoch(model, optimizer, warm, workload)
    harness.evaluate(warm[:1])
    images = sum(int(y.shape[0]) for _, y in batches)
    for repeat in range(workload.repeats):
        # which loop goes first alternates, so an effect of running second favours neither
        bare_first = repeat % 2 == 0
        if bare_first:
            result.bare.append(images / bare_epoch(model, optimizer, batches, workload))
        result.harness.append(images / harness.epoch(batches))
        result.epoch_end_s.append(harness.last_epoch_end_s)
        if not bare_first:
            result.bare.append(images / bare_epoch(model, optimizer, batches, workload))
        result.evaluation.append(images / harness.evaluate(batches))
    return result


@dataclass
class GradFlowTimings:
    """Seconds per step, per repeat: a plain step, an analysed one, and a plain one again, back to back."""

    plain_before: list[float] = field(default_factory=list)
    analysed: list[float] = field(default_factory=list)
    plain_after: list[float] = field(default_factory=list)
    hooks_left: int = -1

    @property
    def overhead(self) -> float:
        """An analysed step over the plain steps around it (median over repeats)."""
        return median([2 * a / (p + q) for p, a, q in zip(self.plain_before, self.analysed, self.plain_after)])

    @property
    def after_analysis(self) -> float:
        """A plain step after an analysis over the one before it (1.0: the analysis left nothing behind)."""
        return median([q / p for p, q in zip(self.plain_before, self.plain_after)])


def leftover_hooks(model: nn.Module) -> int:
    """Module and parameter hooks registered on `model` (0 for a freshly built model here)."""
    count = 0
    for module in model.modules():
        for table in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            count += len(getattr(module, table))
    for parameter in model.parameters():
        count += len(parameter._backward_hooks or {})
        count += len(getattr(parameter, "_post_accumulate_grad_hooks", None) or {})
    return count


def _plain_steps(model: nn.Module, batches: Sequence, device: torch.device) -> float:
    """Seconds per forward + backward (no optimiser step: an analysis makes none either)."""
    start = time.perf_counter()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    _sync(device)
    return (time.perf_counter() - start) / len(batches)


def _analysed_steps(model: nn.Module, batches: Sequence, device: torch.device) -> float:
    """Seconds per analysed batch, the batches analysed in one call as a run analyses its
    `gradflow.num_batches` (state saved and restored once per call, the report built once)."""
    from bench import gradflow

    start = time.perf_counter()
    gradflow.analyze(model, batches)
    _sync(device)
    return (time.perf_counter() - start) / len(batches)


def measure_gradflow(model: nn.Module, batches: Sequence, workload: Workload) -> GradFlowTimings:
    device = workload.torch_device
    model.train()
    hooks_before = leftover_hooks(model)
    _plain_steps(model, batches[: max(workload.warmup, 1)], device)
    _analysed_steps(model, batches[:1], device)  # the analysis's own first-call costs (imports, allocations)
    result = GradFlowTimings()
    for _ in range(workload.repeats):
        result.plain_before.append(_plain_steps(model, batches, device))
        result.analysed.append(_analysed_steps(model, batches, device))
        result.plain_after.append(_plain_steps(model, batches, device))
    result.hooks_left = leftover_hooks(model) - hooks_before
    return result


@dataclass
class ModelPerf:
    model: str
    parameters: int
    training: TrainingThroughput
    gradflow: GradFlowTimings
    sync_check: str  # "passed", "failed: ...", or why it was skipped
    run_id: str  # the MLflow run the harness logged to

    @property
    def hooks_removed(self) -> bool:
        return self.gradflow.hooks_left == 0

    def summary(self) -> dict:
        """Every figure of this model (medians, per-repeat values and ratios) as plain JSON values."""
        return {
            "model": self.model,
            "parameters": self.parameters,
            "train_images_per_s": median(self.training.harness),
            "bare_train_images_per_s": median(self.training.bare),
            "eval_images_per_s": median(self.training.evaluation),
            "harness_overhead": self.training.harness_overhead,
            "epoch_end_s": median(self.training.epoch_end_s),
            "gradflow_overhead": self.gradflow.overhead,
            "plain_step_after_analysis": self.gradflow.after_analysis,
            "plain_step_s": median(self.gradflow.plain_before + self.gradflow.plain_after),
            "analysed_step_s": median(self.gradflow.analysed),
            "peak_memory_bytes": self.training.peak_memory_bytes,
            "peak_memory_kind": self.training.peak_memory_kind,
            "hooks_removed": self.hooks_removed,
            "sync_check": self.sync_check,
            "harness_run_id": self.run_id,
            "repeats": {"training": {k: v for k, v in asdict(self.training).items() if isinstance(v, list)}, "gradflow": {k: v for k, v in asdict(self.gradflow).items() if k != "hooks_left"}},
        }


def benchmark_model(name: str, workload: Workload, store: TrackingStore) -> ModelPerf:
    configure_determinism(workload.deterministic)
    if workload.torch_device.type == "cuda":
        torch.cuda.empty_cache()  # the previous model's blocks
    batches = synthetic_batches(workload, workload.steps)
    model = build_model(name, workload)
    harness = Harness(model, workload, store, f"perf/{name}")
    try:
        training = measure_training(harness, batches, workload)
        sync_check = harness.check_no_host_sync(batches)
    finally:
        harness.close()
    flow = measure_gradflow(model, batches, workload)
    return ModelPerf(name, models.count_parameters(model), training, flow, sync_check, harness.logger.run_id)


def run_benchmark(model_names: Sequence[str], workload: Workload, on_model=None, tracking_uri: str | None = None) -> list[ModelPerf]:
    """Measure every model on `workload`, logging to `tracking_uri` (default: a temporary sqlite store);
    `on_model(result)` is called as each one finishes."""
    workload.validate()
    results = []
    with tracking_store(tracking_uri) as store:
        for name in model_names:
            result = benchmark_model(name, workload, store)
            results.append(result)
            if on_model is not None:
                on_model(result)
    return results


def training_only(name: str, workload: Workload, store: TrackingStore) -> TrainingThroughput:
    """Harness and bare training throughput of one model (the GPU script's figure)."""
    configure_determinism(workload.deterministic)
    batches = synthetic_batches(workload, workload.steps)
    harness = Harness(build_model(name, workload), workload, store, f"perf/{name}/{workload.image_size}px/{workload.precision}")
    try:
        return measure_training(harness, batches, workload)
    finally:
        harness.close()


__all__ = [
    "DEFAULT_MODELS",
    "GradFlowTimings",
    "Harness",
    "ModelPerf",
    "TrainingThroughput",
    "TrackingStore",
    "Workload",
    "bare_epoch",
    "benchmark_model",
    "leftover_hooks",
    "measure_gradflow",
    "measure_training",
    "peak_memory",
    "run_benchmark",
    "synthetic_batches",
    "tracking_store",
    "training_only",
]
