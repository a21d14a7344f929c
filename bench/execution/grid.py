"""A grid from request to final states, the one path of `bench run` and `bench.run`: check where
runs go, plan and claim the runs, run them on a backend with live progress, and say how each ended.

Printing is the caller's: messages go through ``say`` (the command line's console, or a notebook's
display), and the live table through ``display``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

from bench import tracking
from bench.config.options import Keeping, Places
from bench.config.spec import RunSpec
from bench.config.studyfile import Grid
from bench.core.errors import BenchError
from bench.execution import backends, checkpoints, planning
from bench.execution.backends._base import Placement
from bench.execution.planning import Held
from bench.execution.tasks import ALREADY_FINISHED, HELD_STATE, TaskState, by_outcome
from bench.tracking import metric_names

Say = Callable[[str], None]


@dataclass
class GridResult:
    """How every configuration of a grid stands after the call."""

    states: list[TaskState]  # the runs this call trained (or tried to)
    skipped: list[tuple[RunSpec, tracking.Run]] = field(default_factory=list)  # (spec, run): finished before
    held: list[Held] = field(default_factory=list)  # trained by another process
    uri: str = ""
    experiment_id: str = ""

    @property
    def outcomes(self) -> dict[str, list[TaskState]]:
        return by_outcome(self.states)

    @property
    def exit_code(self) -> int:
        """1 when a run failed or could not be logged, 130 when one was interrupted, else 0."""
        outcomes = self.outcomes
        if outcomes["failed"] or outcomes["unsynced"]:
            return 1
        return 130 if outcomes["interrupted"] else 0

    def rows(self) -> list[dict]:
        """One record per configuration: its run, its state and its headline results."""
        rows = [
            _row(s.task.spec, s.run_id, s.status, s.test_top1, s.health, s.health_notebook, s.epoch, s.wall_s, s.error)
            for s in self.states
        ]
        for spec, run in self.skipped:
            found = [metric_names.read(run.metrics, key) for key in ("test/top1", "gradflow/health", "gradflow/health_notebook", "train/epochs_run")]
            rows.append(_row(spec, run.run_id, ALREADY_FINISHED, *found, None, None))
        rows += [_row(entry.spec, entry.run_id, HELD_STATE, None, None, None, None, None, None) for entry in self.held]
        return rows


def _row(spec: RunSpec, run_id: str, state: str, top1, health, health_notebook, epochs, wall_s, error) -> dict:
    return {
        "run_id": run_id, "dataset": spec.dataset, "model": spec.model, "seed": spec.seed, "split_seed": spec.split_seed,
        "state": state, "test_top1": top1, "health": health, "health_notebook": health_notebook,
        "epochs": int(epochs) if epochs and epochs == epochs else None, "wall_s": wall_s or None, "error": error,
        "run_name": spec.run_name,
    }


def run_grid(
    grid: Grid,
    places: Places,
    keeping: Keeping,
    backend: str = "local",
    placement: Placement = Placement(),
    *,
    force: bool = False,
    prune_checkpoints: bool = False,
    skip_missing: bool = False,
    say: Say = lambda message: None,
    display=None,
) -> GridResult:
    """Train every configuration of ``grid`` that has not finished; how each stands afterwards.

    ``display`` is a context manager with ``update(states)`` (bench.execution.progress.GridDisplay).
    A user's mistake (a missing dataset, an unreachable store, a damaged checkpoint) is a BenchError
    before any run starts.
    """
    from bench import data
    from bench.execution.backends.driver import run_plan

    places = places.checked()
    specs = grid.specs()
    missing = data.missing(grid.datasets, places.data_dir)
    if missing and not skip_missing:
        lines = "\n".join(f"  - {hint}" for hint in missing.values())
        raise BenchError(
            f"{len(missing)} requested dataset(s) are not in {places.data_dir}: {', '.join(missing)}; "
            f"get them as below, or pass --skip-missing to run the rest.\n{lines}"
        )
    specs = [s for s in specs if s.dataset not in missing]
    executor = backends.create(backend, placement)
    uri = tracking.resolve_uri(places.tracking_uri)
    experiment_id = tracking.prepare(uri, places.experiment)  # an unreachable store stops here, before any run
    declared = {"primary": grid.primary} if grid.primary else {}
    # Planning writes runs and claims: a store that goes away meanwhile leaves them to the next command
    # (its claims die with this process), which resumes them.
    with tracking.answering(uri, "the grid was being planned", "nothing was trained; run the same command again once it answers."):
        leftovers = checkpoints.tidy_checkpoints(uri, places.checkpoint_dir, remove_deleted=prune_checkpoints)
        plan = planning.plan_runs(specs, uri, experiment_id, executor.device_label, force=force, tags=declared)
    try:
        planning.verify_resumable(plan, places.checkpoint_dir)  # a damaged or unsafe checkpoint stops here
    except BenchError:
        planning.release_plan(plan, uri, tracking.KILLED)
        raise
    say(
        f"{len(plan.tasks)} run(s) to do, {len(plan.skipped)} already finished; "
        f"{executor.description}; tracking: {tracking.shown_uri(uri)} (experiment {places.experiment!r})"
    )
    if plan.held:
        say(
            f"{len(plan.held)} configuration(s) are being trained by another process, left to it: "
            + ", ".join(f"{h.spec.run_name} (run {h.run_id[:8]}, {h.owner})" for h in plan.held)
        )
    if leftovers.deleted:
        say(
            f"{len(leftovers.deleted)} checkpoint folder(s) of runs deleted in MLflow hold "
            f"{leftovers.deleted_bytes / 1e6:.1f} MB in {places.checkpoint_dir}; remove them with --prune-checkpoints."
        )
    destination = backends.Destination.of(uri, places, keeping)
    with display or contextlib.nullcontext() as shown, planning.claims_kept(plan, uri, getattr(shown, "update", lambda states: None)) as on_update:
        states = run_plan(executor, plan, destination, on_update)
    stopped = next((state.stops_grid for state in states if state.stops_grid), None)
    if stopped:  # a full disk: the grid stopped, and the command stops with the reason as its one sentence
        raise BenchError(stopped)
    with contextlib.suppress(OSError):  # each finished run removed its checkpoints: drop the folder if empty
        places.checkpoint_dir.rmdir()
    return GridResult(states, plan.skipped, plan.held, uri, experiment_id)
