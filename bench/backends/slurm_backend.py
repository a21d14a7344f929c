"""The grid as Slurm jobs through submitit: one job per run, submitted as one job array.

Each job asks for `--gpus-per-run` GPUs, `--cpus-per-run` CPUs and `--slurm-time` minutes on
`--slurm-partition`. A job that reaches its time limit or is preempted is requeued by submitit and
resumes its run from the last epoch checkpoint (the run is `Checkpointable`). Jobs must see the
package, the datasets under the same `--data-dir` and the checkpoint folder: a shared filesystem,
as Slurm clusters have. `--slurm-executor local` runs the same jobs as processes on this machine
(submitit's local executor), which is how the backend is tested.

The parent waits for the jobs and follows their progress through MLflow; Ctrl-C cancels them (their
runs are marked KILLED and resume on the next `bench run`).
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from typing import Callable

from bench import tracking
from bench.backends import (
    Destination,
    Placement,
    ProgressReader,
    execute_remote,
    job_context,
    record_failure,
    record_outcome,
)
from bench.errors import BenchError
from bench.scheduler import Plan, TaskState

try:
    import submitit
except ImportError:  # the optional extra is missing; SlurmBackend says how to add it
    submitit = None

POLL_S = 1.0


class RunJob(submitit.helpers.Checkpointable if submitit else object):
    """One run as a job. On timeout or preemption submitit calls `checkpoint`, which (inherited)
    requeues the same call: the run continues from its last epoch checkpoint in the same MLflow run."""

    def __call__(self, spec: dict, run_id: str, context: dict, gpus: int, threads: int) -> dict:
        # Slurm (and the local executor) pin the job's GPUs through CUDA_VISIBLE_DEVICES.
        return execute_remote(spec, run_id, context, "cuda:0" if gpus > 0 else "cpu", threads)


class SlurmBackend:
    device_label = "slurm"

    def __init__(self, placement: Placement) -> None:
        if submitit is None:
            raise BenchError("--backend slurm needs submitit; install it with: pip install 'gradattn-bench[slurm]'.")
        self.placement = placement
        self.cluster = placement.slurm_executor
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise BenchError(
                "--backend slurm found no Slurm here (no sbatch on PATH); run bench on a login node of the cluster, "
                "or pass --slurm-executor local to run the jobs on this machine."
            )
        gpus = placement.gpus_per_run
        if gpus is None:
            gpus = 1 if self.cluster == "slurm" else int(_local_gpus() > 0)
        if gpus != int(gpus):
            raise BenchError(f"Slurm allocates whole GPUs; --gpus-per-run must be an integer, got {gpus:g}.")
        self.gpus, self.cpus = int(gpus), placement.cpus_per_run
        where = f"Slurm jobs on partition {placement.slurm_partition}" if placement.slurm_partition else "Slurm jobs"
        if self.cluster == "local":
            where = "local submitit jobs"
        self.description = f"{where} ({self.gpus} GPU, {self.cpus} CPU, {placement.slurm_time_min} min per run)"

    def _executor(self, destination: Destination):
        folder = self.placement.slurm_folder or destination.checkpoint_root / "slurm"
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=self.cluster)
        executor.update_parameters(
            name="bench",
            timeout_min=self.placement.slurm_time_min,
            cpus_per_task=self.cpus,
            gpus_per_node=self.gpus,
            nodes=1,
            tasks_per_node=1,
            mem_gb=self.placement.slurm_mem_gb,
            slurm_partition=self.placement.slurm_partition,
        )
        return executor

    def run(self, plan: Plan, destination: Destination, on_update: Callable[[list[TaskState]], None]) -> list[TaskState]:
        if not plan.tasks:
            return []
        executor = self._executor(destination)
        context = job_context(destination, plan.owner, forward_env=False)  # sbatch exports the environment
        tasks = plan.tasks
        try:
            jobs = executor.map_array(
                RunJob(),
                [t.spec.to_dict() for t in tasks],
                [t.run_id for t in tasks],
                [context] * len(tasks),
                [self.gpus] * len(tasks),
                [self.cpus] * len(tasks),
            )
        except Exception as error:  # sbatch refused the array: bad partition, time or GPU request
            raise BenchError(f"Slurm refused the jobs ({str(error).strip().splitlines()[-1][:200]}); check the --slurm-* options.") from error
        states = [TaskState(task, status="submitted", slot=f"job {job.job_id}") for task, job in zip(tasks, jobs)]
        active = dict(enumerate(jobs))
        progress = ProgressReader(destination.tracking_uri)
        interrupts = {"count": 0}

        def on_sigint(signum, frame):
            interrupts["count"] += 1
            for job in active.values():
                job.cancel(check=False)  # the run ends as KILLED (or the parent marks it so)
            if interrupts["count"] >= 2:
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            while active:
                for index, job in list(active.items()):
                    if job.done():
                        del active[index]
                        self._collect(job, index, states, destination.tracking_uri, interrupted=interrupts["count"] > 0)
                    elif states[index].status == "submitted" and str(job.state).upper().startswith("RUNNING"):
                        states[index].status, states[index].started_at = "running", time.time()
                progress.poll(states, set(active))
                on_update(states)
                if active:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            for index in active:
                record_failure(states, index, "cancelled", destination.tracking_uri, status=tracking.KILLED)
        finally:
            signal.signal(signal.SIGINT, previous)
        on_update(states)
        return states

    @staticmethod
    def _collect(job, index: int, states: list[TaskState], uri: str, interrupted: bool) -> None:
        try:
            record_outcome(states, index, job.result())
        except Exception as error:  # the run raised (logged FAILED by execute), or the job died or was cancelled
            if interrupted:
                record_failure(states, index, "cancelled", uri, status=tracking.KILLED)
                return
            record_failure(states, index, f"job {job.job_id}: {_last_error_line(str(error)) or error.__class__.__name__}", uri)


def _last_error_line(message: str) -> str | None:
    """The exception line of the job's traceback, which submitit frames between dashed lines."""
    sections = re.split(r"^-{10,}$", message, flags=re.MULTILINE)
    traceback = sections[1] if len(sections) > 2 else message
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
