"""What every backend shares: the placement options, where runs go, and the protocol a backend
follows. The backends import this module, never the package (no circle through ``__init__``)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from bench.config.schema import Schema, setting
from bench.core.errors import BenchError
from bench.execution.context import Context, Destination  # noqa: F401  (the backends' shared types)

if TYPE_CHECKING:
    from bench.execution.tasks import Task

CANCELLED = "cancelled"  # what `Backend.ended` says of a task it dropped before a worker started it


def _option(flag: str, backends: tuple[str, ...], help: str, fallback: Any = None, unset: str | None = None, **bounds: Any):
    """A placement setting (bench.config.schema.setting): its flag, the backends it belongs to, and
    the value a backend uses when it is not given (None in the field: not given)."""
    shown_unset = unset or (None if fallback is None else str(fallback))
    return setting(None, help, unset=shown_unset, flag=flag, backends=backends, fallback=fallback, **bounds)


@dataclass(frozen=True)
class Placement:
    """How runs are placed: local device slots, Ray resources per run, or Slurm job options.

    Each field is one command-line option (`bench.cli._app.with_options`) and one keyword of
    `bench.run`; an option given to a backend it does not belong to is an error, not silently ignored.
    """

    devices: str | None = _option("--devices", ("local", "inline"), "auto, cpu, or CUDA indices like 0,1,3.", "auto")
    jobs_per_device: int | None = _option(
        "--jobs-per-device", ("local",), "Concurrent runs per device.",
        unset="1 per CUDA device; on a CPU one one-thread run per core up to 4 cores, else one per 4 cores", minimum=1,
    )
    ray_address: str | None = _option("--ray-address", ("ray",), "Ray cluster to join, e.g. auto or ray://head:10001.", unset="start one here")
    gpus_per_run: float | None = _option(
        "--gpus-per-run", ("ray", "slurm"), "GPUs per run; under ray fractions share a GPU.", unset="1 where there are GPUs", minimum=0
    )
    cpus_per_run: int | None = _option("--cpus-per-run", ("ray", "slurm"), "CPUs (and torch threads) per run.", 2, minimum=1)
    slurm_partition: str | None = _option("--slurm-partition", ("slurm",), "Slurm partition.", unset="the cluster's")
    slurm_time_min: int | None = _option(
        "--slurm-time", ("slurm",), "Minutes per job; a job that runs out is requeued and resumes.", 24 * 60, minimum=1
    )
    slurm_mem_gb: float | None = _option("--slurm-mem-gb", ("slurm",), "Memory per job in GB.", unset="the partition's", above=0)
    slurm_folder: Path | None = _option("--slurm-folder", ("slurm",), "submitit's job files and logs.", unset="<checkpoint dir>/slurm")
    slurm_executor: str | None = _option(
        "--slurm-executor", ("slurm",), "slurm, or local: the same jobs as processes here.", "slurm", choices=("slurm", "local")
    )

    def check_belongs(self, backend: str) -> "Placement":
        """A BenchError for the first option given that belongs to other backends than `backend`."""
        for setting_ in fields(self):
            owners = setting_.metadata["backends"]
            if getattr(self, setting_.name) is not None and backend not in owners:
                names = " and ".join(owners)
                raise BenchError(
                    f"{setting_.metadata['flag']} belongs to the {names} backend{'s' if len(owners) > 1 else ''} and does "
                    f"nothing under --backend {backend}; drop it or pass --backend {owners[0]}."
                )
        return self

    def resolved(self) -> "Placement":
        """The settings not given replaced by the values their backend falls back to."""
        fallbacks = {f.name: f.metadata["fallback"] for f in fields(self) if getattr(self, f.name) is None}
        return replace(self, **{name: value for name, value in fallbacks.items() if value is not None})

    def validate(self) -> "Placement":
        """Every value within its declared bounds (the command line and the API checked it already;
        this catches a Placement built directly)."""
        Schema(Placement).check(self)
        return self


class BackendBase:
    """What a backend need not do: the hooks with nothing to do for most backends."""

    def follow(self, refresh: Callable[[], None]) -> None:
        """The driver's ``refresh`` (read the runs' events, redraw): a backend that trains in the
        driver's own process calls it between epochs; one with workers elsewhere has no need."""


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

    def follow(self, refresh: Callable[[], None]) -> None:
        """See BackendBase.follow."""

    def close(self) -> None:
        """Let the workers go, after the last task."""
