"""One loop runs every backend's tasks, a grid's and a study's alike.

It takes tasks from a source (a plan, or a study that asks Optuna for a trial when a worker is
free), hands them to the backend, follows each run through the mailbox (the live table's epoch,
losses, accuracy and ETA come from there on every backend), settles runs whose worker ended
without a word, and applies the one Ctrl-C policy of `bench.execution.worker.ctrl_c`.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from bench import tracking
from bench.execution.backends._base import CANCELLED, Backend, Context, Destination
from bench.execution.mailbox import Mailbox
from bench.execution.planning import Plan
from bench.execution.tasks import Task, TaskState, apply_event
from bench.execution.worker import ctrl_c

POLL_S = 0.5
WAITING = ("queued", "submitted", "starting")  # handed to the backend, not started by a worker yet

OnUpdate = Callable[[list[TaskState]], None]


class Source(Protocol):
    def take(self, active: int) -> list[Task]:
        """Tasks to start now, while `active` of those taken earlier have not ended."""

    def ended(self, state: TaskState) -> None:
        """A task taken from here has ended (its final state)."""


class PlanSource:
    """A grid: every task of the plan at once; the backend queues what it cannot start yet."""

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = list(tasks)

    def take(self, active: int) -> list[Task]:
        tasks, self.tasks = self.tasks, []
        return tasks

    def ended(self, state: TaskState) -> None:
        pass


def run_plan(backend: Backend, plan: Plan, destination: Destination, on_update: OnUpdate = lambda states: None) -> list[TaskState]:
    """Run every task of the plan; the final state of each, in the plan's order."""
    return run_tasks(backend, PlanSource(plan.tasks), destination, owner=plan.owner, on_update=on_update)


def run_tasks(
    backend: Backend, source: Source, destination: Destination, owner: str | None = None, on_update: OnUpdate = lambda states: None
) -> list[TaskState]:
    """Run the source's tasks on the backend until it has none left; the final state of each."""
    mailbox = Mailbox.create(destination.checkpoint_root)
    context = Context(destination, mailbox.folder, owner)
    loop = _Loop(backend, source, mailbox, context, on_update)
    try:
        loop.run()
    finally:
        backend.close()
        mailbox.remove()
    on_update(loop.states)
    return loop.states


class _Loop:
    def __init__(self, backend: Backend, source: Source, mailbox: Mailbox, context: Context, on_update: OnUpdate) -> None:
        self.backend, self.source, self.mailbox, self.context, self.on_update = backend, source, mailbox, context, on_update
        self.states: list[TaskState] = []
        self.active: set[int] = set()
        self.stop_asked = False  # set by the first Ctrl-C; acted on by the loop, not in the handler
        self.stopping = False

    def run(self) -> None:
        self.backend.follow(self._refresh)
        try:
            with ctrl_c(self._ask_stop):
                while True:
                    if self.stop_asked and not self.stopping:
                        self._stop_gracefully()
                    if not self.stopping:
                        self._submit(self.source.take(len(self.active)))
                    if not self.active:
                        return
                    time.sleep(POLL_S)
                    self._receive(sorted(self.active))
                    self._settle()
                    self.on_update(self.states)
        except KeyboardInterrupt:  # the second Ctrl-C: stop now
            self.backend.kill()
            for index in sorted(self.active):
                self._lost(index, CANCELLED)

    def _refresh(self) -> None:
        self._receive(sorted(self.active))
        self.on_update(self.states)

    def _ask_stop(self) -> None:
        self.stop_asked = True

    def _stop_gracefully(self) -> None:
        """Running tasks end after their epoch (their worker reads the mailbox); waiting ones never start."""
        self.stopping = True
        self.mailbox.request_stop()
        self.backend.cancel([i for i in sorted(self.active) if self.states[i].status in WAITING])

    def _submit(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        first = len(self.states)
        self.states += [TaskState(task) for task in tasks]
        indices = range(first, len(self.states))
        placed = self.backend.submit([(i, self.states[i].task) for i in indices], self.context)
        for i, (status, slot) in zip(indices, placed):
            self.states[i].status, self.states[i].slot = status, slot
        self.active.update(indices)
        self.on_update(self.states)

    def _receive(self, indices: list[int]) -> None:
        for index in indices:
            state = self.states[index]
            for kind, payload in self.mailbox.receive(state.task.run_id):
                apply_event(kind, index, payload, self.states)
                if kind == "epoch":  # every epoch reaches the table, however many arrived at once
                    self.on_update(self.states)
            if state.ended:
                self._end(index)
            if state.stops_grid:  # the others stop as after a first Ctrl-C: resumable, at their epoch's end
                self.stop_asked = True

    def _settle(self) -> None:
        """Tasks the backend says are over: the worker's last words, else why it said none."""
        for index, reason in self.backend.ended().items():
            if index in self.active:
                self._receive([index])  # sent just before the worker ended
            if index in self.active:
                self._lost(index, reason)

    def _lost(self, index: int, reason: str | None) -> None:
        state = self.states[index]
        if reason == CANCELLED or self.stopping or self.stop_asked:
            state.status = "not started" if state.status in WAITING else "killed"
        else:
            state.status, state.lost = "failed", True
            state.error = reason or "the worker ended without a result"
        self._end(index)

    def _end(self, index: int) -> None:
        state = self.states[index]
        self.active.discard(index)
        self.backend.release(index)
        if state.status in ("not started", "killed"):
            mark_if_running(self.context.destination.tracking_uri, state.run_id, tracking.KILLED)  # resumable
        elif state.lost:
            mark_if_running(self.context.destination.tracking_uri, state.run_id, tracking.FAILED, state.error)
        self.source.ended(state)


def mark_if_running(uri: str, run_id: str, status: str, reason: str | None = None) -> None:
    """Set a final status on a run its worker could not end (crashed, cancelled, never started).

    A run the worker already ended keeps its status and traceback; an unreachable store leaves the
    run RUNNING, which the next `bench run` resumes anyway.
    """
    try:
        if tracking.run_status(uri, run_id) != tracking.RUNNING:
            return
        logger = tracking.RunLogger(uri, run_id, retries=1, final_wait_s=0)
        if reason and status == tracking.FAILED:
            logger.log_text(reason + "\n", "failure/traceback.txt")
        logger.end(status)
    except Exception:  # the store is away: the run stays RUNNING and resumes next time
        pass
