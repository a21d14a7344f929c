"""The grid's plan and its tasks' states: run specs -> claimed MLflow runs -> what the live table shows.

The parent prepares the MLflow store and every run before a worker starts (a fresh sqlite store
opened by several processes at once corrupts itself in its schema migration), claims each run so two
processes never train one configuration, and keeps the state of every task from the events its
worker sends (`apply_event`). Where the tasks run is the backends' business (bench.execution.backends);
device slots for local workers are resolved here.

This module imports no torch at import time: spawned workers set CUDA_VISIBLE_DEVICES and their
thread count before torch is first imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import tracking
from bench.config.spec import RunSpec
from bench.core.errors import BenchError
from bench.execution.mailbox import Mailbox

HELD = "HELD"  # a run outcome: another process holds the claim, so this one did not train it
HELD_STATE = "another process"  # how the grid shows it


@dataclass(frozen=True)
class Slot:
    """One place a run can execute: a CUDA device (pinned via CUDA_VISIBLE_DEVICES) or the CPU."""

    name: str  # what the live table shows, e.g. "cuda:1" or "cpu#0"
    cuda_index: int | None = None
    threads: int | None = None  # CPU slots: an equal share of the cores

    @property
    def device(self) -> str:
        return "cuda:0" if self.cuda_index is not None else "cpu"  # cuda:0 after pinning


def default_cpu_jobs(cores: int) -> int:
    """Concurrent runs on a CPU with no --jobs-per-device: one one-thread run per core on small CPUs
    (`bench perf grid` on 2 cores: two one-thread runs finish a digits grid sooner than one two-thread
    run after another), runs of four threads on larger ones (not measured here)."""
    return cores if cores <= 4 else cores // 4


def resolve_slots(devices: str = "auto", jobs_per_device: int | None = None, cuda_count: int | None = None) -> list[Slot]:
    """`auto` (every visible CUDA device, else the CPU), `cpu`, or CUDA indices like `0,1,3`.

    `jobs_per_device` None: one run per CUDA device, `default_cpu_jobs` on the CPU.
    """
    if jobs_per_device is not None and jobs_per_device < 1:
        raise BenchError(f"--jobs-per-device must be at least 1, got {jobs_per_device}.")
    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = devices.strip().lower()
    if devices == "auto":
        indices = list(range(cuda_count))
    elif devices == "cpu":
        indices = []
    else:
        try:
            indices = [int(part) for part in devices.split(",") if part.strip()]
        except ValueError:
            raise BenchError(f"--devices must be auto, cpu or CUDA indices like 0,1,3; got {devices!r}.") from None
        missing = [i for i in indices if not 0 <= i < cuda_count]
        if missing or not indices:
            raise BenchError(
                f"CUDA device {missing or devices} does not exist (this machine has {cuda_count}); "
                "use --devices auto or cpu, or indices from 0 to N-1."
            )
    if indices:
        jobs_per_device = jobs_per_device or 1
        return [Slot(f"cuda:{i}" + (f"#{j}" if jobs_per_device > 1 else ""), cuda_index=i) for i in indices for j in range(jobs_per_device)]
    cores = os.cpu_count() or 1
    jobs_per_device = jobs_per_device or default_cpu_jobs(cores)
    threads = max(1, cores // jobs_per_device)
    return [Slot(f"cpu#{j}", threads=threads) for j in range(jobs_per_device)]


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


@dataclass
class Held:
    """A configuration another live process is training: not ours to touch."""

    spec: RunSpec
    run_id: str
    owner: str


@dataclass
class Plan:
    tasks: list[Task]
    skipped: list[tuple[RunSpec, str]]  # (spec, run id) of configurations already FINISHED
    held: list[Held] = field(default_factory=list)
    owner: str = ""  # the claim every task of this plan carries (tracking.new_owner)


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# A claim lives while its heartbeat is fresh: stamped every CLAIM_HEARTBEAT_S by the planning process
# (queued runs) and by the worker (the run it trains), presumed dead after CLAIM_STALE_S without one.
# CLAIM_SETTLE_S is the pause before a new claim is read back: longer than any one store write.
CLAIM_HEARTBEAT_S = _seconds("BENCH_CLAIM_HEARTBEAT_S", 15.0)
CLAIM_STALE_S = _seconds("BENCH_CLAIM_STALE_S", 120.0)
CLAIM_SETTLE_S = _seconds("BENCH_CLAIM_SETTLE_S", 2.0)


def claim_alive(run: tracking.Run, now: float | None = None) -> bool:
    """Someone trains this run: it is RUNNING, its owner's heartbeat is recent, and the owner is not
    a process of this host that has gone (a killed command is taken over at once)."""
    owner, beat = tracking.claim_of(run)
    if run.status != tracking.RUNNING or owner is None or tracking.owner_gone(owner):
        return False
    return (now or time.time()) - beat < CLAIM_STALE_S


def _first_created(runs: list[tracking.Run]) -> tracking.Run:
    return min(runs, key=lambda r: (r.start_time or 0, r.run_id))


def plan_runs(specs: list[RunSpec], uri: str, experiment_id: str, device_label: str, force: bool = False) -> Plan:
    """Find or create, and claim, the MLflow run of every spec, in the parent, before any worker starts.

    A configuration that finished is skipped; one a live owner holds is left to it (`Plan.held`); an
    unfinished one whose owner stopped is taken over and resumed. Two planners that claim or create
    the same configuration at once both read it back after `CLAIM_SETTLE_S`: the last claim of an
    existing run, or the first-created of several new runs, wins, and the other steps back (deleting
    the run it created).
    """
    from bench.execution.runner import run_tags

    owner = tracking.new_owner()
    plan = Plan([], [], owner=owner)
    contested: list[Task] = []
    seen = set()
    for spec in specs:
        digest = spec.config_hash()
        if digest in seen:
            continue
        seen.add(digest)
        runs = tracking.grid_runs(uri, experiment_id, config_hash=digest)
        finished = [r for r in runs if r.status == tracking.FINISHED]
        if finished and not force:
            plan.skipped.append((spec, finished[0].run_id))
            continue
        unfinished = [r for r in runs if r.status != tracking.FINISHED]
        live = [r for r in unfinished if claim_alive(r)]
        if live:
            plan.held.append(Held(spec, live[0].run_id, tracking.claim_of(live[0])[0]))
            continue
        if unfinished and not force:
            run_id = unfinished[0].run_id
            tracking.claim(uri, run_id, owner)
            contested.append(Task(spec, run_id, resumed=True))
        else:
            tags = run_tags(spec, device_label) | tracking.claim_tags(owner)
            contested.append(Task(spec, tracking.create_run(uri, experiment_id, spec.run_name, tags), resumed=False))
    if contested:
        time.sleep(CLAIM_SETTLE_S)
    for task in contested:
        winner = _confirm(task, uri, experiment_id, owner)
        if winner is None:
            plan.tasks.append(task)
        else:
            plan.held.append(Held(task.spec, *winner))
    return plan


def _confirm(task: Task, uri: str, experiment_id: str, owner: str) -> tuple[str, str] | None:
    """None when our claim of the task stands, else (run id, owner) of the claim that won."""
    if task.resumed:
        holder = tracking.claim_owner(uri, task.run_id)
        return None if holder == owner else (task.run_id, holder or "?")
    rivals = [r for r in tracking.grid_runs(uri, experiment_id, config_hash=task.spec.config_hash()) if claim_alive(r)]
    winner = _first_created(rivals) if rivals else None
    if winner is None or winner.run_id == task.run_id:
        return None
    tracking.delete_run(uri, task.run_id)  # ours lost the race: one run per configuration
    return winner.run_id, tracking.claim_of(winner)[0] or "?"


def release_plan(plan: Plan, uri: str, status: str | None = None) -> None:
    """Give up the claims of the plan's runs that did not end (see tracking.release)."""
    for task in plan.tasks:
        tracking.release(uri, task.run_id, plan.owner, status)


ENDED = ("finished", "failed", "killed", "not started", HELD_STATE)


@contextlib.contextmanager
def claims_kept(plan: Plan, uri: str, on_update: Callable[[list["TaskState"]], None]):
    """Keep the plan's claims alive while its grid runs, whatever the backend; release them after.

    Yields the `on_update` to give the backend: it stops the heartbeat of each run as it ends.
    """
    beat = tracking.Heartbeat(uri, plan.owner, [t.run_id for t in plan.tasks], CLAIM_HEARTBEAT_S)

    def update(states: list[TaskState]) -> None:
        for state in states:
            if state.status in ENDED:
                beat.drop(state.task.run_id)
        on_update(states)

    try:
        with beat:
            yield update
    finally:
        release_plan(plan, uri)


def verify_resumable(plan: Plan, checkpoint_root: Path) -> None:
    """Check the checkpoints of every resumed run before any training (a BenchError naming the file)."""
    from bench.train import checkpoint

    for task in plan.tasks:
        if task.resumed:
            checkpoint.load_resume(Path(checkpoint_root) / task.run_id)


@dataclass
class Leftovers:
    """What `tidy_checkpoints` found in the checkpoint folder."""

    removed: list[str] = field(default_factory=list)  # run ids whose run had FINISHED
    deleted: list[Path] = field(default_factory=list)  # folders of runs deleted in MLflow
    deleted_bytes: int = 0


def tidy_checkpoints(uri: str, checkpoint_root: Path, remove_deleted: bool = False) -> Leftovers:
    """Remove the checkpoint folders of FINISHED runs (a kill after the end can leave one behind) and
    find those of runs deleted in MLflow: removed with `remove_deleted`, else reported with their size.

    A folder whose run this store does not know is left alone: it may belong to another store.
    """
    found = Leftovers()
    root = Path(checkpoint_root)
    if not root.is_dir():
        return found
    Mailbox.remove_stale(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and RUN_ID.fullmatch(p.name)):
        run = tracking.find_run(uri, folder.name)
        if run is None:
            continue
        if run.deleted:
            if remove_deleted:
                shutil.rmtree(folder, ignore_errors=True)
                found.removed.append(folder.name)
            else:
                found.deleted.append(folder)
                found.deleted_bytes += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        elif run.status == tracking.FINISHED:
            shutil.rmtree(folder, ignore_errors=True)
            found.removed.append(folder.name)
    return found


RUN_ID = re.compile(r"[0-9a-f]{32}")


# -- the parent --------------------------------------------------------------------------------------


@dataclass
class TaskState:
    task: Task
    status: str = "queued"  # queued, submitted, starting, running, then one of ENDED
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

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def outcome(self) -> str:
        """How the run ended, for the grid's verdict: ``unsynced`` (trained and checkpointed, but the
        tracking store was unreachable: running again logs it), ``failed``, ``interrupted`` (killed or
        never started: running again finishes it), or the status itself."""
        if self.status == "failed":
            return "unsynced" if (self.error or "").startswith(tracking.TrackingUnavailable.__name__) else "failed"
        return "interrupted" if self.status in ("killed", "not started") else self.status


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
        if state.started_at:
            state.wall_s = time.time() - state.started_at
