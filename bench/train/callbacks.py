"""The events of a fit (bench.train.engine.Trainer) and the callbacks the harness itself adds.

Torch-free, so the modules that report (tracking, the scheduler's progress events, the studies)
subclass `Callback` without importing the engine.
"""

from __future__ import annotations

from typing import Any, Callable


class Callback:
    """What the engine tells the world while it fits: override the events you need (each does nothing here).

    Per epoch, every callback may first complete the record (gradient flow adds its health score),
    then the epoch is checkpointed, then every callback hears of it (logging, progress, pruning).
    """

    def on_fit_start(self, start_epoch: int, history: list) -> None:
        """Before the first epoch; `history` holds the epochs a resumed checkpoint completed."""

    def complete_record(self, record) -> None:
        """After an epoch's training and validation, before its checkpoint: add to its record."""

    def on_epoch_end(self, record) -> None:
        """After an epoch's checkpoint, with its complete record."""

    def should_stop(self) -> bool:
        """Asked after every epoch: True ends the fit there, resumable."""
        return False


class StopRequest(Callback):
    """Stops the fit after the epoch in progress once `requested()` is true (Ctrl-C, a lost claim, a pruned trial)."""

    def __init__(self, requested: Callable[[], bool]) -> None:
        self.requested = requested

    def should_stop(self) -> bool:
        return bool(self.requested())


class GradFlowAtEpochs(Callback):
    """Analyses gradient flow after every `every`-th epoch (0: never): the health score goes into that
    epoch's record, the whole report to `on_report(epoch, report)`."""

    def __init__(self, model, analyze: Callable[[Any], Any], every: int, on_report: Callable[[int, Any], None]) -> None:
        self.model, self.analyze, self.every, self.on_report = model, analyze, every, on_report

    def complete_record(self, record) -> None:
        if not self.every or record.epoch % self.every:
            return
        report = self.analyze(self.model)
        record.gradient_health = float(report.health_score)
        self.on_report(record.epoch, report)
