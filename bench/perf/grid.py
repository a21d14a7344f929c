"""Slot scaling of the grid: the same small grid with 1 and with 2 CPU slots, in one invocation.

With CUDA devices (`devices="auto"` or `"0,1,3"`) a slot count k means the first k of those devices,
one run each: on a machine with N GPUs, 1 against N shows how close the grid comes to N-fold.

Each slot count gets a fresh temporary sqlite MLflow store and runs the whole grid through the real
scheduler and local backend (`plan_runs`, then `run_plan` with spawned workers, each pinned to its share
of the cores). The clock covers `run_plan` only: worker start-up, data loading, training, evaluation, gradient-flow
analysis and logging, all of which a user waits for; creating the store and the runs happens before.
Target on a 2-core machine: 2 slots / 1 slot <= 0.6.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bench.config.spec import GradFlowConfig, RunSpec, TrainConfig
from bench.core.errors import BenchError

TARGET_RATIO = 0.6  # issue 7: 2 slots / 1 slot on a 2-core machine


@dataclass
class GridScaling:
    dataset: str
    runs: int
    max_epochs: int
    slot_counts: tuple[int, ...]
    wall_s: dict[int, list[float]] = field(default_factory=dict)  # slots -> seconds, one per repeat

    def median(self, slots: int) -> float:
        return statistics.median(self.wall_s[slots])

    def ratio(self, slots: int) -> float:
        """Wall time with `slots` slots over wall time with the fewest slots measured."""
        return self.median(slots) / self.median(self.slot_counts[0])


def grid_specs(dataset: str, model_names: Sequence[str], seeds: Sequence[int], max_epochs: int, gradflow_batches: int) -> list[RunSpec]:
    specs = [
        RunSpec(dataset, model, seed, train=TrainConfig(max_epochs=max_epochs), gradflow=GradFlowConfig(num_batches=gradflow_batches))
        for model in model_names
        for seed in seeds
    ]
    return [spec.validate() for spec in specs]


def on_cpu(devices: str) -> bool:
    """Whether `devices` (cpu, auto or CUDA indices) asks for CPU slots rather than CUDA devices."""
    return devices.strip().lower() == "cpu"


def slots_for(devices: str, count: int) -> list:
    """`count` CPU slots sharing the cores, or the first `count` of the CUDA devices, one run each."""
    from bench.execution.slots import resolve_slots

    if on_cpu(devices):
        return resolve_slots("cpu", count)
    gpus = resolve_slots(devices, 1)
    if count > len(gpus):
        raise BenchError(f"--slots {count} asks for more CUDA devices than --devices {devices} gives ({len(gpus)}); lower --slots.")
    return gpus[:count]


def time_grid(specs: list[RunSpec], slots: list, root: Path, data_dir: Path) -> float:
    """Wall seconds of the whole grid on `slots`, in a fresh store under `root`."""
    from bench import tracking
    from bench.execution.backends import Destination
    from bench.execution.backends.driver import run_plan
    from bench.execution.backends.local import LocalBackend
    from bench.execution.planning import plan_runs

    uri = tracking.sqlite_uri(root)
    experiment_id = tracking.prepare(uri, "grid-scaling")
    plan = plan_runs(specs, uri, experiment_id, ", ".join(slot.name for slot in slots))
    start = time.perf_counter()
    states = run_plan(LocalBackend(slots), plan, Destination(uri, data_dir, root / "checkpoints"))
    wall = time.perf_counter() - start
    unfinished = [state for state in states if state.status != "finished"]
    if unfinished:
        first = unfinished[0]
        raise BenchError(
            f"{len(unfinished)} of {len(states)} benchmark runs did not finish with {len(slots)} slot(s) "
            f"({first.task.spec.run_name}: {first.status}, {first.error or 'no error message'}); fix that run first."
        )
    return wall


def run_benchmark(
    *,
    dataset: str = "digits",
    model_names: Sequence[str] = ("resnet18",),
    seeds: Sequence[int] = (42, 43, 44, 45),
    max_epochs: int = 2,
    gradflow_batches: int = 2,
    slot_counts: Sequence[int] = (1, 2),
    repeats: int = 1,
    devices: str = "cpu",
    data_dir: Path | None = None,
    on_timing: Callable[[int, float], None] | None = None,
) -> GridScaling:
    """Time the grid once per slot count and repeat (alternating, so machine load hits each alike)."""
    from bench import data

    counts = tuple(sorted(set(int(s) for s in slot_counts)))
    if not counts or counts[0] < 1 or repeats < 1 or max_epochs < 1:
        raise BenchError("--slots needs positive slot counts, and --repeats and --max-epochs must be at least 1.")
    data_dir = data_dir or data.default_data_dir()
    missing = data.get(dataset).missing_files(data_dir)
    if missing:
        raise BenchError(f"Dataset {dataset} is not in {data_dir}: {data.get(dataset).how_to_get(data_dir)}")
    slot_sets = {count: slots_for(devices, count) for count in counts}  # bad --devices: an error before any run
    specs = grid_specs(dataset, model_names, seeds, max_epochs, gradflow_batches)
    result = GridScaling(dataset, len(specs), max_epochs, counts)
    for _ in range(repeats):
        for slots in counts:
            with tempfile.TemporaryDirectory(prefix="bench-perf-grid-") as tmp:
                wall = time_grid(specs, slot_sets[slots], Path(tmp), data_dir)
            result.wall_s.setdefault(slots, []).append(wall)
            if on_timing is not None:
                on_timing(slots, wall)
    return result
