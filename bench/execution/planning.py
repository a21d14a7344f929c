"""The grid's plan: run specs -> claimed MLflow runs, before any worker starts.

The parent prepares the MLflow store and every run before a worker starts (a fresh sqlite store
opened by several processes at once corrupts itself in its schema migration), and claims each run
so two processes never train one configuration. Where the tasks run is the backends' business
(bench.execution.backends); what each task does, the live table's (bench.execution.tasks).

This module imports no torch at import time: spawned workers set CUDA_VISIBLE_DEVICES and their
thread count before torch is first imported.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import tracking
from bench.config.spec import RunSpec
from bench.execution.run_tags import run_tags
from bench.execution.tasks import ENDED, Task, TaskState
from bench.tracking import CLAIM_HEARTBEAT_S, CLAIM_SETTLE_S, CLAIM_STALE_S


@dataclass
class Held:
    """A configuration another live process is training: not ours to touch."""

    spec: RunSpec
    run_id: str
    owner: str


@dataclass
class Plan:
    tasks: list[Task]
    # (spec, finished run) of configurations already FINISHED, as read when planning: their rows need
    # no store at the end of the grid.
    skipped: list[tuple[RunSpec, tracking.Run]]
    held: list[Held] = field(default_factory=list)
    owner: str = ""  # the claim every task of this plan carries (tracking.new_owner)


def claim_alive(run: tracking.Run, now: float | None = None) -> bool:
    """Someone trains this run: it is RUNNING, its owner's heartbeat is recent, and the owner is not
    a process of this host that has gone (a killed command is taken over at once)."""
    owner, beat = tracking.claim_of(run)
    if run.status != tracking.RUNNING or owner is None or tracking.owner_gone(owner):
        return False
    return (now or time.time()) - beat < CLAIM_STALE_S


def _runs_of(spec: RunSpec, uri: str, experiment_id: str) -> list[tracking.Run]:
    """The configuration's runs, under its hash or the one runs logged before carry (RunSpec.config_hashes)."""
    return [run for digest in spec.config_hashes() for run in tracking.grid_runs(uri, experiment_id, config_hash=digest)]


def _one_unfinished(unfinished: list[tracking.Run], uri: str) -> str:
    """The run to resume: one that training began in, if any; never-started extras (a kill between a
    worker's new run and the deletion of the planned one, tracking.start_clock) are deleted."""
    ordered = sorted(unfinished, key=lambda r: (tracking.never_started(r), -(r.start_time or 0)))
    for extra in ordered[1:]:
        if tracking.never_started(extra):
            tracking.delete_run(uri, extra.run_id)
    return ordered[0].run_id


def _first_created(runs: list[tracking.Run]) -> tracking.Run:
    return min(runs, key=lambda r: (r.start_time or 0, r.run_id))


def plan_runs(specs: list[RunSpec], uri: str, experiment_id: str, device_label: str, force: bool = False,
              tags: dict[str, str] | None = None) -> Plan:
    """Find or create, and claim, the MLflow run of every spec, in the parent, before any worker starts.

    A configuration that finished is skipped; one a live owner holds is left to it (`Plan.held`); an
    unfinished one whose owner stopped is taken over and resumed. Two planners that claim or create
    the same configuration at once both read it back after `CLAIM_SETTLE_S`: the last claim of an
    existing run, or the first-created of several new runs, wins, and the other steps back (deleting
    the run it created).
    """
    owner = tracking.new_owner()
    plan = Plan([], [], owner=owner)
    contested: list[Task] = []
    seen = set()
    for spec in specs:
        digest = spec.config_hash()
        if digest in seen:
            continue
        seen.add(digest)
        runs = _runs_of(spec, uri, experiment_id)
        finished = [r for r in runs if r.status == tracking.FINISHED]
        if finished and not force:
            plan.skipped.append((spec, finished[0]))
            continue
        unfinished = [r for r in runs if r.status != tracking.FINISHED]
        live = [r for r in unfinished if claim_alive(r)]
        if live:
            plan.held.append(Held(spec, live[0].run_id, tracking.claim_of(live[0])[0]))
            continue
        if unfinished and not force:
            run_id = _one_unfinished(unfinished, uri)
            tracking.claim(uri, run_id, owner)
            contested.append(Task(spec, run_id, resumed=True))
        else:
            created = run_tags(spec, device_label) | (tags or {}) | tracking.claim_tags(owner)
            contested.append(Task(spec, tracking.create_run(uri, experiment_id, spec.run_name, created), resumed=False))
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
    rivals = [r for r in _runs_of(task.spec, uri, experiment_id) if claim_alive(r)]
    winner = _first_created(rivals) if rivals else None
    if winner is None or winner.run_id == task.run_id:
        return None
    tracking.delete_run(uri, task.run_id)  # ours lost the race: one run per configuration
    return winner.run_id, tracking.claim_of(winner)[0] or "?"


def release_plan(plan: Plan, uri: str, status: str | None = None, replaced: dict[str, str] | None = None) -> None:
    """Give up the claims of the plan's runs that did not end (see tracking.release); ``replaced``: the
    run each task's worker trained instead of the planned one (tracking.start_clock)."""
    for task in plan.tasks:
        tracking.release(uri, (replaced or {}).get(task.run_id, task.run_id), plan.owner, status)


@contextlib.contextmanager
def claims_kept(plan: Plan, uri: str, on_update: Callable[[list["TaskState"]], None]):
    """Keep the plan's claims alive while its grid runs, whatever the backend; release them after.

    Yields the `on_update` to give the backend: it stops the heartbeat of each run as it ends, and of
    each planned run a worker replaced (whose new run that worker keeps alive).
    """
    beat = tracking.Heartbeat(uri, plan.owner, [t.run_id for t in plan.tasks], CLAIM_HEARTBEAT_S)
    replaced: dict[str, str] = {}

    def update(states: list[TaskState]) -> None:
        for state in states:
            if state.run_id != state.task.run_id:
                replaced[state.task.run_id] = state.run_id
                beat.drop(state.task.run_id)
            if state.status in ENDED:
                beat.drop(state.task.run_id)
        on_update(states)

    try:
        with beat:
            yield update
    finally:
        release_plan(plan, uri, replaced=replaced)


def verify_resumable(plan: Plan, checkpoint_root: Path) -> None:
    """Check the checkpoints of every resumed run before any training (a BenchError naming the file)."""
    from bench.train import checkpoint

    for task in plan.tasks:
        if task.resumed:
            checkpoint.load_resume(Path(checkpoint_root) / task.run_id)


# -- the parent --------------------------------------------------------------------------------------


