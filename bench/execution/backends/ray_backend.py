"""Runs as Ray tasks: one task per run, `num_gpus`/`num_cpus` per run, on any Ray cluster.

`--ray-address` joins an existing cluster (`auto`, `ray://head:10001`); without it a Ray instance
starts on this machine. A GPU run gets a fresh worker process (`max_calls=1`), so CUDA starts on the
GPU Ray assigned; a run that raises or whose worker dies is not retried, its run is marked FAILED
and the others go on, as with local workers. Every node needs the package, the datasets under the
same `--data-dir` and a checkpoint folder shared by all nodes (a resumed run finds its checkpoint
wherever it lands, and the mailbox lives there): the Docker image and a shared filesystem give both.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

from bench.core.errors import BenchError
from bench.execution import worker
from bench.execution.backends._base import CANCELLED, BackendBase, Context, Placement

try:
    import ray
except ImportError:  # the optional extra is missing; RayBackend says how to add it
    ray = None

# Settings a run needs wherever it executes; a Ray task gets them from its parent.
FORWARDED_ENV_PREFIXES = ("MLFLOW_", "BENCH_")


def run_task(task, context: Context, gpus: float, threads: int) -> None:
    """The body of one Ray task; its settings (``context.env``) travel with it."""
    worker.run_allocated_task(task, context, gpus, threads, env=context.env)


class RayBackend(BackendBase):
    device_label = "ray"

    def __init__(self, placement: Placement) -> None:
        if ray is None:
            raise BenchError("--backend ray needs Ray; install it with: pip install 'gradattn-bench[ray]'.")
        self.address = placement.ray_address
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(include_dashboard=False, log_to_driver=False)
            except Exception as error:  # ConnectionError, a version mismatch, a bad address
                raise BenchError(
                    f"Cannot join the Ray cluster at {self.address or 'this machine'} ({error.__class__.__name__}: "
                    f"{str(error).splitlines()[0][:160] if str(error) else ''}); check --ray-address and that `ray status` works there."
                ) from error
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        self.gpus = placement.gpus_per_run if placement.gpus_per_run is not None else float(gpus > 0)
        self.cpus = placement.cpus_per_run
        if self.gpus > gpus or self.cpus > cpus:
            raise BenchError(
                f"A run asks for {self.gpus:g} GPU(s) and {self.cpus} CPU(s) but the Ray cluster has "
                f"{gpus:g} GPU(s) and {cpus:g} CPU(s) in all; lower --gpus-per-run or --cpus-per-run."
            )
        self.capacity = int(min(cpus // self.cpus, gpus // self.gpus if self.gpus else math.inf))
        self.description = (
            f"Ray {'cluster at ' + self.address if self.address else 'instance on this machine'} "
            f"({cpus:g} CPU, {gpus:g} GPU; per run {self.cpus} CPU, {self.gpus:g} GPU)"
        )
        # A GPU task gets a fresh worker process: CUDA binds to the GPU Ray assigned the first task of
        # a process and cannot move. CPU workers are reused, which saves an import of torch per run.
        self._remote = ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=0, max_calls=1 if self.gpus > 0 else 0)(run_task)
        self._pending: dict = {}  # object ref -> task index

    def submit(self, tasks, context):
        context = replace(context, env={k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)})
        for index, task in tasks:
            self._pending[self._remote.remote(task, context, self.gpus, self.cpus)] = index
        return [("submitted", "ray")] * len(tasks)

    def ended(self) -> dict[int, str | None]:
        from ray.exceptions import RayTaskError, TaskCancelledError

        if not self._pending:
            return {}
        done, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
        ended = {}
        for ref in done:
            index = self._pending.pop(ref)
            try:
                ray.get(ref)
                ended[index] = None
            except TaskCancelledError:
                ended[index] = CANCELLED
            except RayTaskError as error:  # raised outside the run (the run's own errors are events)
                cause = error.cause if getattr(error, "cause", None) is not None else error
                ended[index] = f"{cause.__class__.__name__}: {str(cause)[:300]}"
            except Exception as error:  # the worker process died (out of memory, node lost)
                ended[index] = f"Ray worker died: {error.__class__.__name__}: {str(error)[:300]}"
        return ended

    def release(self, index: int) -> None:
        pass  # its object ref completes and leaves through `ended`

    def cancel(self, indices: list[int]) -> None:
        for ref, index in self._pending.items():
            if index in indices:
                ray.cancel(ref, force=False)  # a task still queued is dropped; a running one goes on

    def kill(self) -> None:
        for ref in self._pending:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        self._pending = {}
