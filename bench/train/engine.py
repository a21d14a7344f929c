"""The training loop of protocol section 3, done correctly, with checkpoint and resume.

The engine knows nothing of MLflow, progress bars or schedulers: it reports through callbacks.
Per step it never synchronises with the host; losses and correct counts accumulate on the device and
are read once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from bench.config.spec import TrainConfig
from bench.core.errors import BenchError
from bench.train import checkpoint
from bench.train.callbacks import Callback, GradFlowAtEpochs, StopRequest
from bench.train.checkpoint import BEST, LAST
from bench.train.cost import Budget, Meter
from bench.train.monitors import EarlyStopping, PlateauScheduler

__all__ = ["BEST", "LAST", "Callback", "Diverged", "EpochRecord", "FitResult", "GradFlowAtEpochs", "StopRequest", "Trainer", "predict"]


class Diverged(BenchError):
    """The loss became NaN or infinite: the run ends FAILED, its checkpoints (of the last finite epoch) kept."""


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float  # fraction 0..1
    val_loss: float
    val_acc: float
    lr: float  # after the epoch's plateau step, as the notebooks printed it
    epoch_time_s: float
    images_per_s: float  # training images per second of training-pass wall time
    best_val_acc: float
    best_epoch: int
    improved: bool
    lr_reduced: bool
    gradient_health: float | None = None  # when gradient flow was analysed at this epoch
    # The epoch's cost (bench.train.cost; kept in the checkpoint, so a resumed run's totals include it):
    train_s: float = 0.0  # the training pass alone
    train_images: int = 0
    val_s: float = 0.0
    val_images: int = 0
    energy_j: float | None = None  # training and validation, where the device has an energy counter
    peak_memory_bytes: int | None = None  # the device's peak so far (bench.train.cost.Meter)
    budget_spent: bool = False  # train.max_time_s or train.max_gflops ran out in this epoch


@dataclass
class FitResult:
    history: list[EpochRecord]
    best_epoch: int
    best_val_acc: float
    stopped_early: bool
    interrupted: bool  # a graceful stop was requested; the run can be resumed
    final_weights: str  # "best" or "last"
    resumed_from_epoch: int = 0  # 0 when it started afresh

    @property
    def budget_spent(self) -> bool:
        return any(record.budget_spent for record in self.history)

    @property
    def epochs_run(self) -> int:
        return self.history[-1].epoch if self.history else 0


def autocast(device: torch.device, precision: str):
    """fp32 runs as the original did; bf16/fp16 autocast are opt-in speed options."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam with coupled L2 on every parameter, one group (protocol 3.1).

    Fused kernels on CUDA and on the CPU: one pass over all parameters instead of one small op per
    tensor (ResNet-18's step: 16 ms against 98 ms for the default loop on one CPU thread).
    """
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(
        model.parameters(),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        weight_decay=config.weight_decay,
        **({"fused": True} if fused else {}),
    )


def forward_batches(model: nn.Module, loader: Iterable, device: torch.device, precision: str, channels_last: bool):
    """The one batch loop of training, evaluation and prediction: (float32 logits, labels) per batch.

    Under autocast the loss is computed in float32 anyway, so the caller's loss on the float32
    logits is the loss autocast would have computed; gradients flow through the cast when enabled.
    """
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        yield logits.float(), y


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable, *, precision: str = "fp32", channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and labels of a whole split, in eval mode, gathered on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, labels = zip(*forward_batches(model, loader, device, precision, channels_last))
    model.train(was_training)
    return torch.cat(logits).cpu(), torch.cat(labels).cpu()


class Trainer:
    """Fits one model: epochs, plateau, early stopping, best-weight restore, checkpoint + resume."""

    def __init__(
        self,
        model: nn.Module,
        train_loader,
        val_loader,
        config: TrainConfig,
        *,
        device: torch.device,
        checkpoint_dir: Path,
        callbacks: Sequence[Callback] = (),
        flops_per_image: int | None = None,
    ) -> None:
        self.model = model
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.config = config
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir)
        self.callbacks = list(callbacks)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(model, config, device)
        self.plateau = PlateauScheduler(config.plateau_factor, config.plateau_patience, config.min_lr)
        self.early = EarlyStopping(config.early_stopping_patience)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.loss_fn = nn.CrossEntropyLoss()  # protocol 3.1: mean, no smoothing, no weights
        self.step_model = torch.compile(model) if config.compile else model
        self.history: list[EpochRecord] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.meter = Meter(device)
        if config.max_gflops is not None and not flops_per_image:
            raise BenchError("train.max_gflops needs the model's training FLOPs per image; give the Trainer flops_per_image.")
        self.budget = Budget(config.max_time_s, config.max_gflops * 1e9 if config.max_gflops is not None else None, flops_per_image)

    # -- one epoch -------------------------------------------------------------------------------
    def _pass(self, loader, train: bool) -> tuple[float, float, int, float]:
        """One pass over a split: optimiser steps when `train`, else eval mode without gradients.
        Returns (mean loss, accuracy, images, seconds); losses and counts stay on the device until the
        end. A training pass ends early at the step that spends the budget (`self.budget`)."""
        start = time.perf_counter()
        self.model.train(train)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        watch_budget = train and self.budget.limited
        with torch.set_grad_enabled(train):
            self.optimizer.zero_grad(set_to_none=True)
            for logits, y in forward_batches(self.step_model, loader, self.device, self.config.precision, self.config.channels_last):
                loss = self.loss_fn(logits, y)
                if train:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                if watch_budget and self.budget.spent(time.perf_counter() - start, seen):
                    break
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()  # the pass's one sync
        return totals[0] / max(seen, 1), totals[1] / max(seen, 1), seen, time.perf_counter() - start

    def train_epoch(self) -> tuple[float, float, int, float]:
        """One pass over the training split; returns (loss, accuracy, images, seconds)."""
        return self._pass(self.train_loader, train=True)

    def evaluate(self, loader) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over a split in eval mode (protocol 3.2)."""
        loss, accuracy, _, _ = self._pass(loader, train=False)
        return loss, accuracy

    # -- checkpoint --------------------------------------------------------------------------------
    def _checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.plateau.state_dict(),
            "early_stopping": self.early.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": checkpoint.rng_state(),
            "history": [asdict(r) for r in self.history],
        }

    def _resume(self) -> int:
        """Load the last checkpoint if there is one; returns the number of completed epochs."""
        state, best = checkpoint.load_resume(self.checkpoint_dir)
        if state is None:
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.plateau.load_state_dict(state["plateau"])
        self.early.load_state_dict(state["early_stopping"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        self.history = [EpochRecord(**r) for r in state["history"]]
        if best is not None:
            self.best_state = best["model"]
        return int(state["epoch"])

    def _remember_best(self, epoch: int) -> None:
        # A deep copy on the CPU: the original's shallow state_dict().copy() shared storage with the
        # live parameters, so its "restore" was a no-op (protocol 7.2).
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        checkpoint.save({"epoch": epoch, "model": self.best_state}, self.checkpoint_dir / BEST)

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        start_epoch = self._resume()
        for record in self.history:  # a resumed fit has spent these already
            self.budget.charge(record.epoch_time_s, record.train_images)
        self.meter.reset_peak()
        for callback in self.callbacks:
            callback.on_fit_start(start_epoch, list(self.history))
        stopped_early = bool(self.history) and self.early.wait >= self.early.patience
        interrupted = False
        epoch = start_epoch
        while not stopped_early and epoch < self.config.max_epochs and not self.budget.spent():
            epoch += 1
            if hasattr(self.train_loader, "set_epoch"):
                self.train_loader.set_epoch(epoch)
            epoch_start = time.perf_counter()
            energy_start = self.meter.energy_mark()
            train_loss, train_acc, images, train_seconds = self.train_epoch()
            val_loss, val_acc, val_images, val_seconds = self._pass(self.val_loader, train=False)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise Diverged(
                    f"Training diverged at epoch {epoch} (train loss {train_loss:.4g}, val loss {val_loss:.4g}); "
                    f"the checkpoints of epoch {epoch - 1} are kept in {self.checkpoint_dir}: lower train.lr (--set train.lr=...) and run again."
                )
            lr_reduced = self.plateau.step(val_acc, self.optimizer)
            improved, stopped_early = self.early.step(val_acc, epoch)
            record = EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                train_acc=train_acc,
                val_loss=val_loss,
                val_acc=val_acc,
                lr=float(self.optimizer.param_groups[0]["lr"]),
                epoch_time_s=time.perf_counter() - epoch_start,
                images_per_s=images / max(train_seconds, 1e-9),
                best_val_acc=float(self.early.best),
                best_epoch=self.early.best_epoch,
                improved=improved,
                lr_reduced=lr_reduced,
                train_s=train_seconds,
                train_images=images,
                val_s=val_seconds,
                val_images=val_images,
                energy_j=self.meter.energy_j(energy_start, self.meter.energy_mark()),
                peak_memory_bytes=self.meter.peak_memory_bytes(),
            )
            self.budget.charge(record.epoch_time_s, images)
            record.budget_spent = self.budget.spent()
            for callback in self.callbacks:
                callback.complete_record(record)
            self.history.append(record)
            # Checkpointed before anyone hears of the epoch: what was logged is always resumable. The
            # best weights are written after last.pt, which then holds them too (see load_resume).
            checkpoint.save(self._checkpoint_state(epoch), self.checkpoint_dir / LAST)
            if improved:
                self._remember_best(epoch)
            for callback in self.callbacks:
                callback.on_epoch_end(record)
            if any(callback.should_stop() for callback in self.callbacks):
                interrupted = not stopped_early and epoch < self.config.max_epochs and not self.budget.spent()
                if interrupted:
                    break
        final = "last"
        if self.config.restore_best is not False and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            final = "best"
        return FitResult(
            history=list(self.history),
            best_epoch=self.early.best_epoch,
            best_val_acc=float(self.early.best) if self.early.best is not None else 0.0,
            stopped_early=stopped_early,
            interrupted=interrupted,
            final_weights=final,
            resumed_from_epoch=start_epoch,
        )
