"""Where runs execute on this machine: CUDA devices (pinned through CUDA_VISIBLE_DEVICES) or shares of
the CPU. Imports no torch at import time: workers are pinned before torch is first imported."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.core.errors import BenchError


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
