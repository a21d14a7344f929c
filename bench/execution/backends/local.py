"""Worker processes on this machine, one per device slot (bench.execution.slots.resolve_slots).

Workers are spawned, pinned to their slot before torch is imported, and long-lived: each takes the
next task when its last one ends, so torch is imported once per slot, not once per run. A worker
that dies mid-run (out of memory, killed) is reported to the driver and replaced when there is
more to do.
"""

from __future__ import annotations

import multiprocessing as mp
import os

from bench.core import shutdown
from bench.execution import worker
from bench.execution.backends._base import CANCELLED, BackendBase, Context, Placement
from bench.execution.slots import Slot, resolve_slots
from bench.execution.tasks import Task


def _worker_main(slot: Slot, tasks, parent_pid: int) -> None:
    worker.start(slot.cuda_index, slot.threads, parent_pid)
    while (item := tasks.get()) is not None:
        task, context = item
        worker.run_task(task, context, slot.device, slot.name)
    # The parent waits for a worker's end after every grid: no teardown of torch and MLflow. Runs log
    # and checkpoint synchronously, so nothing of theirs is left to clean up.
    shutdown.end_now(0)


class _Worker:
    def __init__(self, ctx, slot: Slot) -> None:
        self.slot = slot
        self.tasks = ctx.Queue()
        self.process = ctx.Process(target=_worker_main, args=(slot, self.tasks, os.getpid()), daemon=True)
        self.process.start()
        self.current: int | None = None  # the index of the task it trains


class LocalBackend(BackendBase):
    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots
        self.capacity = len(slots)
        self.description = f"{len(slots)} slot(s): {', '.join(s.name for s in slots)}"
        self.device_label = slots[0].name.split("#")[0]
        self._spawn = mp.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * len(slots)
        self._queue: list[tuple[int, Task, Context]] = []
        self._ended: dict[int, str | None] = {}

    @classmethod
    def from_placement(cls, placement: Placement) -> "LocalBackend":
        return cls(resolve_slots(placement.devices, placement.jobs_per_device))

    def submit(self, tasks, context):
        self._queue += [(index, task, context) for index, task in tasks]
        started = self._dispatch()
        return [("starting", started[index]) if index in started else ("queued", "") for index, _ in tasks]

    def _dispatch(self) -> dict[int, str]:
        """Give queued tasks to idle workers (starting one where a slot has none); index -> slot."""
        started = {}
        for position, slot in enumerate(self.slots):
            if not self._queue:
                break
            current = self._workers[position]
            if current is None:
                current = self._workers[position] = _Worker(self._spawn, slot)
            if current.current is None:
                index, task, context = self._queue.pop(0)
                current.tasks.put((task, context))
                current.current = index
                started[index] = slot.name
        return started

    def ended(self) -> dict[int, str | None]:
        for position, current in enumerate(self._workers):
            if current is not None and not current.process.is_alive():
                if current.current is not None:
                    self._ended[current.current] = f"worker process died (exit code {current.process.exitcode})"
                self._workers[position] = None
        self._dispatch()
        ended, self._ended = self._ended, {}
        return ended

    def release(self, index: int) -> None:
        for current in self._workers:
            if current is not None and current.current == index:
                current.current = None
        self._dispatch()

    def cancel(self, indices: list[int]) -> None:
        dropped = [entry for entry in self._queue if entry[0] in indices]
        self._queue = [entry for entry in self._queue if entry[0] not in indices]
        self._ended |= {index: CANCELLED for index, _, _ in dropped}

    def kill(self) -> None:
        self._queue = []
        for current in self._workers:
            if current is not None and current.process.is_alive():
                current.process.kill()

    def close(self) -> None:
        alive = [w for w in self._workers if w is not None and w.process.is_alive()]
        for current in alive:
            current.tasks.put(None)
        for current in alive:
            current.process.join(timeout=10)
            if current.process.is_alive():
                current.process.kill()
        self._workers = [None] * len(self.slots)
