"""Runs in the calling process, one after another: a debugger or a notebook steps into a run, and
an exception's traceback is the run's own. The driver's loop still follows each run through the
mailbox, so the live table, the Ctrl-C policy and the grid's verdict are those of every backend."""

from __future__ import annotations

from dataclasses import replace

from bench.execution import worker
from bench.execution.backends._base import CANCELLED, BackendBase, Context, Placement
from bench.execution.slots import resolve_slots
from bench.execution.tasks import Task
from bench.train.callbacks import Callback


class _Refresh(Callback):
    """After each epoch, let the driver read the run's events (the live table moves)."""

    def __init__(self, refresh) -> None:
        self.refresh = refresh

    def on_epoch_end(self, record) -> None:
        self.refresh()


class InlineBackend(BackendBase):
    capacity = 1

    def __init__(self, placement: Placement) -> None:
        slot = resolve_slots(placement.devices or "auto", 1)[0]  # the first CUDA device, else the CPU
        self.device = "cpu" if slot.cuda_index is None else f"cuda:{slot.cuda_index}"
        self.description = f"inline: in this process, on {self.device}"
        self.device_label = self.device
        self._queue: list[tuple[int, Task, Context]] = []
        self._ended: dict[int, str | None] = {}
        self._refresh = lambda: None

    def follow(self, refresh) -> None:
        self._refresh = refresh

    def submit(self, tasks, context):
        self._queue += [(index, task, context) for index, task in tasks]
        return [("queued", "")] * len(tasks)

    def ended(self) -> dict[int, str | None]:
        if self._queue and not self._ended:  # the next run, trained here and now
            index, task, context = self._queue.pop(0)
            task = replace(task, callbacks=(*task.callbacks, _Refresh(self._refresh)))
            worker.run_task(task, context, self.device, "inline")
            self._ended[index] = None
        ended, self._ended = self._ended, {}
        return ended

    def release(self, index: int) -> None:
        pass

    def cancel(self, indices: list[int]) -> None:
        dropped = [index for index, _, _ in self._queue if index in indices]
        self._queue = [entry for entry in self._queue if entry[0] not in indices]
        self._ended |= dict.fromkeys(dropped, CANCELLED)

    def kill(self) -> None:
        self._queue = []

    def close(self) -> None:
        pass
