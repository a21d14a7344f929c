"""What every backend shares: the placement options, where runs go, and the protocol a backend
follows. The backends import this module, never the package (no circle through ``__init__``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench.core.errors import BenchError

if TYPE_CHECKING:
    from bench.execution.tasks import Task
    from bench.execution.worker import Context

CANCELLED = "cancelled"  # what `Backend.ended` says of a task it dropped before a worker started it


def _option(flag: str, backends: tuple[str, ...], help: str, default: Any = None):
    """A placement setting: its command-line flag, the backends it belongs to, and the default a
    backend uses when it is not given (None in the field: not given)."""
    return field(default=None, metadata={"flag": flag, "backends": backends, "help": help, "default": default})


@dataclass(frozen=True)
class Placement:
    """How runs are placed: local device slots, Ray resources per run, or Slurm job options.

    Each field is one command-line option (`bench.cli.with_backend`); an option given to a backend
    it does not belong to is an error, not silently ignored.
    """

    devices: str | None = _option("--devices", ("local",), "auto, cpu, or CUDA indices like 0,1,3.", "auto")
    jobs_per_device: int | None = _option(
        "--jobs-per-device", ("local",),
        "Concurrent runs per device (default: 1 per CUDA device; on a CPU one one-thread run per core up to 4 cores, else one per 4 cores).",
    )
    ray_address: str | None = _option("--ray-address", ("ray",), "Ray cluster to join, e.g. auto or ray://head:10001 (default: start one here).")
    gpus_per_run: float | None = _option(
        "--gpus-per-run", ("ray", "slurm"), "GPUs per run; under ray fractions share a GPU (default: 1 where there are GPUs)."
    )
    cpus_per_run: int | None = _option("--cpus-per-run", ("ray", "slurm"), "CPUs (and torch threads) per run.", 2)
    slurm_partition: str | None = _option("--slurm-partition", ("slurm",), "Slurm partition (default: the cluster's).")
    slurm_time_min: int | None = _option(
        "--slurm-time", ("slurm",), "Minutes per job; a job that runs out is requeued and resumes.", 24 * 60
    )
    slurm_mem_gb: float | None = _option("--slurm-mem-gb", ("slurm",), "Memory per job in GB (default: the partition's).")
    slurm_folder: Path | None = _option("--slurm-folder", ("slurm",), "submitit's job files and logs (default: <checkpoint dir>/slurm).")
    slurm_executor: str | None = _option("--slurm-executor", ("slurm",), "slurm, or local: the same jobs as processes here.", "slurm")

    def check_belongs(self, backend: str) -> "Placement":
        """A BenchError for the first option given that belongs to other backends than `backend`."""
        for setting in fields(self):
            owners = setting.metadata["backends"]
            if getattr(self, setting.name) is not None and backend not in owners:
                names = " and ".join(owners)
                raise BenchError(
                    f"{setting.metadata['flag']} belongs to the {names} backend{'s' if len(owners) > 1 else ''} and does "
                    f"nothing under --backend {backend}; drop it or pass --backend {owners[0]}."
                )
        return self

    def resolved(self) -> "Placement":
        """The settings not given replaced by their defaults."""
        defaults = {f.name: f.metadata["default"] for f in fields(self) if getattr(self, f.name) is None}
        return replace(self, **{name: value for name, value in defaults.items() if value is not None})

    def validate(self) -> "Placement":
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise BenchError(f"--gpus-per-run must not be negative, got {self.gpus_per_run:g}.")
        if self.cpus_per_run is not None and self.cpus_per_run < 1:
            raise BenchError(f"--cpus-per-run must be at least 1, got {self.cpus_per_run}.")
        if self.slurm_time_min is not None and self.slurm_time_min < 1:
            raise BenchError(f"--slurm-time must be at least 1 minute, got {self.slurm_time_min}.")
        if self.slurm_executor not in (None, "slurm", "local"):
            raise BenchError(f"--slurm-executor must be slurm or local, got {self.slurm_executor!r}.")
        return self


@dataclass(frozen=True)
class Destination:
    """Where runs log, read data and keep checkpoints: the same for every backend."""

    tracking_uri: str
    data_dir: Path
    checkpoint_root: Path


class Backend(Protocol):
    """What the driver asks of a backend. Indices are the driver's names for its tasks."""

    description: str  # what `bench run` prints, e.g. "2 slot(s): cpu#0, cpu#1"
    device_label: str  # the `device` tag a run carries until its worker sets the real one
    capacity: int | None  # runs that train at once; None: unknown (a Slurm queue)

    def submit(self, tasks: list[tuple[int, "Task"]], context: "Context") -> list[tuple[str, str]]:
        """Start or queue the tasks; (status, slot) of each, e.g. ("queued", "") or ("submitted", "job 17")."""

    def ended(self) -> dict[int, str | None]:
        """Tasks whose execution is over since the last call: None when their worker returned, else
        why not (CANCELLED, a traceback's last line, "worker process died")."""

    def release(self, index: int) -> None:
        """The task's worker said how it ended: its place is free."""

    def cancel(self, indices: list[int]) -> None:
        """Drop these tasks if no worker has started them (they come back from `ended` as CANCELLED)."""

    def kill(self) -> None:
        """Stop every task now (the second Ctrl-C)."""

    def close(self) -> None:
        """Let the workers go, after the last task."""
