"""Where the runs of a grid execute: this machine's worker processes, a Ray cluster, or Slurm jobs.

Every backend takes the same `Plan` (made once in the parent by `scheduler.plan_runs`: finished
configurations skipped, interrupted ones resumed in their MLflow run by config hash) and returns one
`TaskState` per task, so `bench run` shows the same table and exit status whichever backend ran
them. A run that fails is marked FAILED and the others go on.

    backend = backends.create("ray", Placement(ray_address="auto"))   # connects, checks options
    states = backend.run(plan, destination, on_update)

The local backend needs nothing more; `ray` needs the `bench[ray]` extra, `slurm` the `bench[slurm]`
extra (submitit). Ray and submitit are imported in their own module only.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from bench import metric_names, tracking
from bench.errors import BenchError
from bench.registry import Registry
from bench.scheduler import Plan, TaskState, apply_event
from bench.spec import RunSpec

# Settings a run needs wherever it executes; a Ray task or Slurm job gets them from its parent.
FORWARDED_ENV_PREFIXES = ("MLFLOW_", "BENCH_")
PROGRESS_EVERY_S = 15.0  # how often remote backends read run progress back from MLflow


@dataclass(frozen=True)
class Placement:
    """How runs are placed: local device slots, Ray resources per run, or Slurm job options."""

    devices: str = "auto"  # local: auto, cpu or CUDA indices
    jobs_per_device: int | None = None  # local; None: 1 per CUDA device, scheduler.default_cpu_jobs on the CPU
    ray_address: str | None = None  # ray: an existing cluster ("auto", "ray://host:10001"); None starts one here
    gpus_per_run: float | None = None  # ray/slurm; None: 1 where GPUs exist, else 0 (ray accepts fractions)
    cpus_per_run: int = 2  # ray/slurm; also each run's torch thread count
    slurm_partition: str | None = None
    slurm_time_min: int = 24 * 60  # a job that times out is requeued and resumes from its checkpoint
    slurm_mem_gb: float | None = None
    slurm_folder: Path | None = None  # submitit's job files; None: <checkpoint root>/slurm
    slurm_executor: str = "slurm"  # "local": submitit's local executor (one machine, tests)

    def validate(self) -> "Placement":
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise BenchError(f"--gpus-per-run must not be negative, got {self.gpus_per_run:g}.")
        if self.cpus_per_run < 1:
            raise BenchError(f"--cpus-per-run must be at least 1, got {self.cpus_per_run}.")
        if self.slurm_time_min < 1:
            raise BenchError(f"--slurm-time must be at least 1 minute, got {self.slurm_time_min}.")
        if self.slurm_executor not in ("slurm", "local"):
            raise BenchError(f"--slurm-executor must be slurm or local, got {self.slurm_executor!r}.")
        return self


@dataclass(frozen=True)
class Destination:
    """Where runs log, read data and keep checkpoints: the same for every backend."""

    tracking_uri: str
    data_dir: Path
    checkpoint_root: Path


class Backend(Protocol):
    description: str  # what `bench run` prints, e.g. "2 slot(s): cpu#0, cpu#1"
    device_label: str  # the `device` tag a run carries until its worker sets the real one

    def run(self, plan: Plan, destination: Destination, on_update: Callable[[list[TaskState]], None]) -> list[TaskState]: ...


BACKENDS: Registry[Callable[[Placement], Backend]] = Registry("backend")


def create(name: str, placement: Placement) -> Backend:
    """The backend `name` set up for `placement` (a BenchError when its extra or cluster is missing)."""
    return BACKENDS.get(name)(placement.validate())


@BACKENDS.register("local")
class LocalBackend:
    """Worker processes on this machine, one per device slot (bench.scheduler)."""

    def __init__(self, placement: Placement) -> None:
        from bench.scheduler import resolve_slots

        self.slots = resolve_slots(placement.devices, placement.jobs_per_device)
        self.description = f"{len(self.slots)} slot(s): {', '.join(s.name for s in self.slots)}"
        self.device_label = self.slots[0].name.split("#")[0]

    def run(self, plan, destination, on_update):
        from bench.scheduler import run_grid

        return run_grid(
            plan,
            self.slots,
            tracking_uri=destination.tracking_uri,
            data_dir=destination.data_dir,
            checkpoint_root=destination.checkpoint_root,
            on_update=on_update,
        )


def _ray(placement: Placement) -> Backend:
    from bench.backends.ray_backend import RayBackend

    return RayBackend(placement)


def _slurm(placement: Placement) -> Backend:
    from bench.backends.slurm_backend import SlurmBackend

    return SlurmBackend(placement)


BACKENDS.add("ray", _ray)
BACKENDS.add("slurm", _slurm)


# -- the body of one remote run ----------------------------------------------------------------------


def job_context(destination: Destination, owner: str, forward_env: bool = True) -> dict[str, Any]:
    """What a remote run needs besides its spec: destination and the MLflow/bench environment.

    `forward_env=False` where jobs inherit the submitting environment anyway (Slurm), so no
    credential lands in the job files on disk.
    """
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)} if forward_env else {}
    return {
        "tracking_uri": destination.tracking_uri,
        "data_dir": str(destination.data_dir),
        "checkpoint_root": str(destination.checkpoint_root),
        "owner": owner,  # the claim the planner made: the job trains only while it still holds it
        "env": env,
    }


def execute_remote(spec: dict, run_id: str, context: dict[str, Any], device: str, threads: int | None) -> dict:
    """One run inside a Ray task or a Slurm job: the `runner.execute` a local worker calls.

    Returns the run's `RunOutcome` as a dict with its `wall_s`; exceptions propagate to the backend.
    """
    for key, value in context["env"].items():
        os.environ.setdefault(key, value)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from bench.runner import RunContext, execute

    if threads:
        torch.set_num_threads(threads)
    ctx = RunContext(
        tracking_uri=context["tracking_uri"],
        data_dir=Path(context["data_dir"]),
        checkpoint_root=Path(context["checkpoint_root"]),
        device=device,
        owner=context.get("owner"),
    )
    start = time.time()
    outcome = asdict(execute(RunSpec.from_dict(spec), ctx, run_id))
    return outcome | {"wall_s": time.time() - start}


# -- what the parent of remote runs shares -----------------------------------------------------------


def record_outcome(states: list[TaskState], index: int, outcome: dict) -> None:
    apply_event("done", index, outcome, states, [])
    states[index].wall_s = outcome.get("wall_s", states[index].wall_s)


def record_failure(states: list[TaskState], index: int, error: str, uri: str, status: str = tracking.FAILED) -> None:
    """A run that ended without an outcome: its state, and its MLflow run if the worker left it RUNNING."""
    apply_event("failed", index, {"error": error}, states, [])
    if status == tracking.KILLED:
        states[index].status = "killed"
    mark_if_running(uri, states[index].task.run_id, status, error)


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


class ProgressReader:
    """Fills the live table of remote runs from MLflow (epoch, val accuracy), every few seconds.

    Remote workers share no queue with the parent; the metrics they log are the progress report.
    """

    def __init__(self, uri: str, every_s: float = PROGRESS_EVERY_S) -> None:
        self.uri, self.every_s = uri, every_s
        self._last = 0.0

    def poll(self, states: list[TaskState], active: set[int]) -> None:
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        for index in active:
            state = states[index]
            try:
                history = tracking.metric_history(self.uri, state.task.run_id, "val/acc")
                latest = tracking.client(self.uri).get_run(state.task.run_id).data.metrics if history else {}
            except Exception:  # progress is cosmetic; a store hiccup must not stop the grid
                return
            if not history:
                continue
            if state.status in ("queued", "submitted"):
                state.status, state.started_at = "running", time.time()
            state.epoch, state.val_acc = max(history)
            state.best_val_acc = max(value for _, value in history)
            state.train_loss, state.val_loss, state.lr = (
                metric_names.read(latest, k, None) for k in ("train/loss", "val/loss", "train/lr")
            )
