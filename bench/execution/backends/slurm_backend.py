"""Runs as Slurm jobs through submitit: one job per run, each batch of runs submitted as one job array.

Each job asks for `--gpus-per-run` GPUs, `--cpus-per-run` CPUs and `--slurm-time` minutes on
`--slurm-partition`. A job that reaches its time limit or is preempted is requeued by submitit and
resumes its run from the last epoch checkpoint (the run is `Checkpointable`). Jobs must see the
package, the datasets under the same `--data-dir` and the checkpoint folder (where the mailbox
lives): a shared filesystem, as Slurm clusters have. `--slurm-executor local` runs the same jobs
as processes on this machine (submitit's local executor), which is how the backend is tested.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from bench.core.errors import BenchError
from bench.execution import worker
from bench.execution.backends._base import CANCELLED, BackendBase, Context, Placement

try:
    import submitit
except ImportError:  # the optional extra is missing; SlurmBackend says how to add it
    submitit = None


class RunJob(submitit.helpers.Checkpointable if submitit else object):
    """One run as a job. On timeout or preemption submitit calls `checkpoint`, which (inherited)
    requeues the same call: the run continues from its last epoch checkpoint in the same MLflow run."""

    def __call__(self, task, context: Context, gpus: int, threads: int) -> None:
        # Jobs inherit the submitting environment, so no credential is written into the job files.
        worker.run_allocated_task(task, context, gpus, threads)


class SlurmBackend(BackendBase):
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
        self.capacity = None  # the cluster's queue decides
        self._executor = None
        self._jobs: dict[int, object] = {}  # task index -> submitit job
        self._cancelled: set[int] = set()

    def _make_executor(self, checkpoint_root: Path):
        folder = self.placement.slurm_folder or Path(checkpoint_root) / "slurm"
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

    def submit(self, tasks, context):
        if self._executor is None:
            self._executor = self._make_executor(context.destination.checkpoint_root)
        count = len(tasks)
        try:
            jobs = self._executor.map_array(
                RunJob(), [task for _, task in tasks], [context] * count, [self.gpus] * count, [self.cpus] * count
            )
        except Exception as error:  # sbatch refused the array: bad partition, time or GPU request
            raise BenchError(f"Slurm refused the jobs ({str(error).strip().splitlines()[-1][:200]}); check the --slurm-* options.") from error
        self._jobs |= {index: job for (index, _), job in zip(tasks, jobs)}
        return [("submitted", f"job {job.job_id}") for job in jobs]

    def ended(self) -> dict[int, str | None]:
        ended = {}
        for index, job in list(self._jobs.items()):
            if not job.done():
                continue
            del self._jobs[index]
            try:
                job.result()
                ended[index] = None
            except Exception as error:  # the job died, timed out for good, or was cancelled
                reason = f"job {job.job_id}: {_last_error_line(str(error)) or error.__class__.__name__}"
                ended[index] = CANCELLED if index in self._cancelled else reason
        return ended

    def release(self, index: int) -> None:
        pass  # its job completes and leaves through `ended`

    def cancel(self, indices: list[int]) -> None:
        for index in indices:
            if index in self._jobs:
                self._cancelled.add(index)
                self._jobs[index].cancel(check=False)

    def kill(self) -> None:
        self.cancel(list(self._jobs))

    def close(self) -> None:
        self._jobs = {}


def _last_error_line(message: str) -> str | None:
    """The exception line of the job's traceback, which submitit frames between dashed lines."""
    sections = re.split(r"^-{10,}$", message, flags=re.MULTILINE)
    traceback = sections[1] if len(sections) > 2 else message
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
