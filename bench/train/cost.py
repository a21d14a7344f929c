"""What training costs, as the run goes: peak memory, energy, and the budget that ends a fit when spent.

The engine asks a `Meter` for the device's peak memory and its energy counter around every epoch and
keeps both in the epoch's record (so a resumed run's totals include the epochs before the kill); a
`Budget` tells the training pass, step by step, when the time or FLOPs it was given are spent;
`run_cost` turns the records into the run's `cost/` metrics.
"""

from __future__ import annotations

import glob
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from bench.models.flops import Flops

RAPL_GLOB = "/sys/class/powercap/intel-rapl:[0-9]*"  # one folder per CPU package (sub-zones have a second colon)


class Meter:
    """Peak memory and an energy counter of one training device.

    Peak memory: CUDA's ``max_memory_allocated`` on a GPU (tensors only, what the model and batch
    need), else the process's peak resident set. Energy: NVML's total-energy counter of the GPU, or
    the CPU packages' RAPL counters where the kernel lets this user read them; ``energy_source`` is
    None where neither is available, and no energy is recorded rather than an estimate.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._nvml_handle = _nvml_handle(device) if device.type == "cuda" else None
        self._rapl = [] if device.type == "cuda" else _rapl_zones()
        self.energy_source = "nvml" if self._nvml_handle is not None else "rapl" if self._rapl else None
        self.memory_source = "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS"

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux

    def energy_mark(self) -> tuple[float, ...] | None:
        """An opaque reading; `energy_j(start, end)` is what was used between two."""
        if self._nvml_handle is not None:
            import pynvml

            return (pynvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml_handle) / 1000.0,)  # mJ -> J
        if self._rapl:
            return tuple(zone.read() for zone in self._rapl)
        return None

    def energy_j(self, start: tuple[float, ...] | None, end: tuple[float, ...] | None) -> float | None:
        if start is None or end is None:
            return None
        if self._rapl:
            return sum(zone.used(a, b) for zone, a, b in zip(self._rapl, start, end))
        return end[0] - start[0]


@dataclass(frozen=True)
class _RaplZone:
    folder: Path

    def read(self) -> float:
        return int((self.folder / "energy_uj").read_text()) / 1e6

    def used(self, start: float, end: float) -> float:
        if end >= start:
            return end - start
        return end + int((self.folder / "max_energy_range_uj").read_text()) / 1e6 - start  # the counter wrapped


def _rapl_zones() -> list[_RaplZone]:
    zones = []
    for folder in sorted(glob.glob(RAPL_GLOB)):
        zone = _RaplZone(Path(folder))
        try:
            zone.read()  # root-only on most kernels since 2020
        except (OSError, ValueError):
            return []
        zones.append(zone)
    return zones


def _nvml_handle(device: torch.device):
    try:
        import pynvml

        pynvml.nvmlInit()
        index = torch.cuda._get_nvml_device_index(device)  # honours CUDA_VISIBLE_DEVICES
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # Volta and later
        return handle
    except Exception:  # no NVML library or package, or a GPU without the counter
        return None


@dataclass
class Budget:
    """The time (seconds of training and validation) and training FLOPs a fit may spend; None: no limit.

    ``spent_s`` and ``spent_flops`` start from the epochs already done (a resumed fit), and the
    training pass charges each step as it goes, so the fit stops at the step that spends the budget.
    """

    max_time_s: float | None = None
    max_flops: float | None = None
    flops_per_image: int | None = None  # training-step FLOPs per image (bench.models.flops)
    spent_s: float = 0.0
    spent_flops: float = 0.0

    @property
    def limited(self) -> bool:
        return self.max_time_s is not None or self.max_flops is not None

    def spent(self, seconds_now: float = 0.0, images_now: int = 0) -> bool:
        """True once the epochs before plus the pass in progress (`seconds_now`, `images_now`) used it up."""
        if self.max_time_s is not None and self.spent_s + seconds_now >= self.max_time_s:
            return True
        return self.max_flops is not None and self.spent_flops + images_now * (self.flops_per_image or 0) >= self.max_flops

    def charge(self, seconds: float, images: int) -> None:
        self.spent_s += seconds
        self.spent_flops += images * (self.flops_per_image or 0)


def run_cost(history: Sequence, best_epoch: int, parameters: int, flops: Flops) -> dict[str, float]:
    """The `cost/` metrics of a run from its epoch records (all of them, across resumes).

    Throughputs leave the first epoch out (its warm-up: allocator, kernels, caches) unless it is the
    only one; none counts the gradient-flow analysis or the checkpoints, which run between epochs.
    """
    measured = list(history[1:] if len(history) > 1 else history)
    trained_images = sum(r.train_images for r in history)
    metrics = {
        "cost/parameters": float(parameters),
        "cost/forward_gflops_per_image": flops.forward / 1e9,
        "cost/forward_gmacs_per_image": flops.forward_macs / 1e9,
        "cost/train_step_gflops_per_image": flops.train_step / 1e9,
        "cost/train_gflops": flops.train_step * trained_images / 1e9,
        "cost/train_images_per_s": _rate(sum(r.train_images for r in measured), sum(r.train_s for r in measured)),
        "cost/eval_images_per_s": _rate(sum(r.val_images for r in measured), sum(r.val_s for r in measured)),
        "cost/train_time_s": sum(r.epoch_time_s for r in history),
        "cost/time_to_best_s": sum(r.epoch_time_s for r in history if r.epoch <= best_epoch),
        "cost/budget_spent": float(any(r.budget_spent for r in history)),
    }
    peaks = [r.peak_memory_bytes for r in history if r.peak_memory_bytes is not None]
    if peaks:
        metrics["cost/peak_memory_mib"] = max(peaks) / 2**20
    energies = [r.energy_j for r in history]
    if energies and all(e is not None for e in energies):  # a total over part of the epochs would mislead
        metrics["cost/energy_j"] = float(sum(energies))
    return {key: value for key, value in metrics.items() if value == value}  # NaN: nothing was measured


def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("nan")
