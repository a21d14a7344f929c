"""A grid's tasks and what the live table knows of each: a task's state, updated from the events its
worker sends (`apply_event`), and how the grid ended (`by_outcome`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench import tracking
from bench.config.spec import RunSpec

HELD = "HELD"  # a run outcome: another process holds the claim, so this one did not train it


HELD_STATE = "another process"  # how the grid shows it
ALREADY_FINISHED = "already finished"  # the state of a configuration an earlier call finished


@dataclass
class Task:
    spec: RunSpec
    run_id: str
    resumed: bool  # an earlier, unfinished MLflow run of the same config is continued
    callbacks: tuple = ()  # picklable engine callbacks the worker adds to the run (a trial's pruning)
    name: str = ""  # what the live table calls it; default: the spec's run name

    @property
    def run_name(self) -> str:
        return self.name or self.spec.run_name


ENDED = ("finished", "failed", "killed", "not started", HELD_STATE)


@dataclass
class TaskState:
    task: Task
    status: str = "queued"  # queued, submitted, starting, running, then one of ENDED
    # The MLflow run trained: the task's, or the one that replaced it when training began
    # (tracking.start_clock). The task's id stays the key of its mailbox and backend slot.
    run_id: str = ""
    slot: str = ""
    epoch: int = 0
    start_epoch: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    lr: float | None = None
    best_val_acc: float | None = None
    best_epoch: int = 0
    epoch_times: list[float] = field(default_factory=list)
    test_top1: float | None = None
    health: float | None = None
    health_notebook: float | None = None
    error: str | None = None
    wall_s: float = 0.0
    started_at: float | None = None
    lost: bool = False  # its worker ended without saying how the run did (killed, out of memory)
    stops_grid: str | None = None  # a failure every run would meet (a full disk): the grid stops with this sentence

    def __post_init__(self) -> None:
        self.run_id = self.run_id or self.task.run_id

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def outcome(self) -> str:
        """How the run ended, for the grid's verdict: ``unsynced`` (trained and checkpointed, but the
        tracking store was unreachable: running again logs it), ``failed``, ``interrupted`` (killed or
        never started: running again finishes it), or the status itself."""
        return outcome(self.status, self.error)


def outcome(status: str, error: str | None) -> str:
    """How a run ended, for the grid's verdict (see TaskState.outcome), from its state and error."""
    if status == "failed":
        return "unsynced" if (error or "").startswith(tracking.TrackingUnavailable.__name__) else "failed"
    return "interrupted" if status in ("killed", "not started") else status


def by_outcome(states: list[TaskState]) -> dict[str, list[TaskState]]:
    """The states grouped by ``TaskState.outcome`` (every outcome of the grid's verdict present)."""
    grouped: dict[str, list[TaskState]] = {"failed": [], "unsynced": [], "interrupted": []}
    for state in states:
        grouped.setdefault(state.outcome, []).append(state)
    return grouped


def apply_event(kind: str, index: int, payload: dict, states: list[TaskState]) -> None:
    """Update a task's state from one event its worker sent (bench.execution.worker.run_task)."""
    state = states[index]
    if kind == "start":
        state.status, state.started_at = "running", time.time()
        state.slot = payload.get("slot") or state.slot
    elif kind == "run":
        state.run_id = payload["run_id"]
    elif kind == "fit_start":
        state.start_epoch = state.epoch = payload["start_epoch"]
    elif kind == "epoch":
        state.epoch = payload["epoch"]
        state.train_loss, state.val_loss, state.lr = payload["train_loss"], payload["val_loss"], payload["lr"]
        state.val_acc = payload["val_acc"]
        state.best_val_acc = payload["best_val_acc"]
        state.best_epoch = payload["best_epoch"]
        state.epoch_times.append(payload["epoch_time_s"])
    elif kind == "not_started":
        state.status = "not started"
    elif kind in ("done", "failed"):
        if kind == "done":
            state.status = {"FINISHED": "finished", "KILLED": "killed", HELD: HELD_STATE}.get(payload["status"], "failed")
            state.test_top1 = payload.get("test_top1")
            state.health = payload.get("health_score")
            state.health_notebook = payload.get("health_score_notebook")
            state.epoch = payload.get("epochs") or state.epoch
        else:
            state.status, state.error = "failed", payload["error"]
            state.stops_grid = payload.get("stops_grid")
        if state.started_at:
            state.wall_s = time.time() - state.started_at
