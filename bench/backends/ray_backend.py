"""The grid as Ray tasks: one task per run, `num_gpus`/`num_cpus` per run, on any Ray cluster.

`--ray-address` joins an existing cluster (`auto`, `ray://head:10001`); without it a Ray instance
starts on this machine. A GPU run gets a fresh worker process (`max_calls=1`), so CUDA starts on the
GPU Ray assigned; a run that raises or whose worker dies is not retried, its run is marked FAILED
and the grid goes on, as with the local scheduler. Every node needs the package, the
datasets under the same `--data-dir` and a checkpoint folder shared by all nodes (so a resumed run
finds its checkpoint wherever it lands): the Docker image and a shared filesystem give both.

Ctrl-C once cancels the tasks (running ones end as KILLED and resume on the next `bench run`);
twice kills them at once.
"""

from __future__ import annotations

import signal
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
    import ray
except ImportError:  # the optional extra is missing; RayBackend says how to add it
    ray = None


def run_task(spec: dict, run_id: str, context: dict, gpus: float, threads: int) -> dict:
    """The body of one Ray task. Ray pins the task's GPUs through CUDA_VISIBLE_DEVICES."""
    return execute_remote(spec, run_id, context, "cuda:0" if gpus > 0 else "cpu", threads)


class RayBackend:
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
        self.gpus = placement.gpus_per_run if placement.gpus_per_run is not None else float(resources.get("GPU", 0) > 0)
        self.cpus = placement.cpus_per_run
        if self.gpus > resources.get("GPU", 0) or self.cpus > resources.get("CPU", 0):
            raise BenchError(
                f"A run asks for {self.gpus:g} GPU(s) and {self.cpus} CPU(s) but the Ray cluster has "
                f"{resources.get('GPU', 0):g} GPU(s) and {resources.get('CPU', 0):g} CPU(s) in all; lower --gpus-per-run or --cpus-per-run."
            )
        self.description = (
            f"Ray {'cluster at ' + self.address if self.address else 'instance on this machine'} "
            f"({resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU; per run {self.cpus} CPU, {self.gpus:g} GPU)"
        )

    def run(self, plan: Plan, destination: Destination, on_update: Callable[[list[TaskState]], None]) -> list[TaskState]:
        states = [TaskState(task, status="submitted", slot="ray") for task in plan.tasks]
        if not states:
            return states
        # A GPU task gets a fresh worker process: CUDA binds to the GPU Ray assigned the first task of
        # a process and cannot move. CPU workers are reused, which saves an import of torch per run.
        max_calls = 1 if self.gpus > 0 else 0
        remote = ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=0, max_calls=max_calls)(run_task)
        context = job_context(destination, plan.owner)
        pending = {
            remote.remote(task.spec.to_dict(), task.run_id, context, self.gpus, self.cpus): index
            for index, task in enumerate(plan.tasks)
        }
        progress = ProgressReader(destination.tracking_uri)
        interrupts = {"count": 0}

        def on_sigint(signum, frame):
            interrupts["count"] += 1
            for ref in pending:  # KeyboardInterrupt inside the task: it ends its run as KILLED
                ray.cancel(ref, force=interrupts["count"] >= 2)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    index = pending.pop(ref)
                    self._collect(ref, index, states, destination.tracking_uri)
                progress.poll(states, set(pending.values()))
                on_update(states)
        finally:
            signal.signal(signal.SIGINT, previous)
        on_update(states)
        return states

    @staticmethod
    def _collect(ref, index: int, states: list[TaskState], uri: str) -> None:
        from ray.exceptions import RayTaskError, TaskCancelledError

        try:
            record_outcome(states, index, ray.get(ref))
        except TaskCancelledError:
            record_failure(states, index, "cancelled", uri, status=tracking.KILLED)
        except RayTaskError as error:  # the run raised: execute already logged it as FAILED
            cause = error.cause if getattr(error, "cause", None) is not None else error
            if isinstance(cause, KeyboardInterrupt):
                record_failure(states, index, "cancelled", uri, status=tracking.KILLED)
            else:
                record_failure(states, index, f"{cause.__class__.__name__}: {cause}", uri)
        except Exception as error:  # the worker process died (out of memory, node lost)
            record_failure(states, index, f"Ray worker died: {error.__class__.__name__}: {str(error)[:300]}", uri)
