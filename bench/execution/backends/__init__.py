"""Where runs execute: this machine's worker processes, a Ray cluster, or Slurm jobs.

A backend starts tasks (a grid's runs or a study's trials) in workers (`bench.execution.worker`) and reports
the tasks whose worker ended; `bench.execution.backends.driver` runs every backend through one loop, so
`bench run` and `bench study` show the same live table, exit status and Ctrl-C behaviour whichever
backend ran them. A run that fails is marked FAILED and the others go on.

    backend = backends.create("ray", Placement(ray_address="auto"))   # connects, checks options
    states = driver.run_plan(backend, plan, destination, on_update)

The local backend needs nothing more; `ray` needs the `bench[ray]` extra, `slurm` the `bench[slurm]`
extra (submitit). Ray and submitit are imported in their own module only. This module imports
nothing heavy: the command line builds its backend options from `Placement`.
"""

from __future__ import annotations

from typing import Callable

from bench.core.registry import Registry
from bench.execution.backends._base import CANCELLED, Backend, Context, Destination, Placement

__all__ = ["BACKENDS", "CANCELLED", "Backend", "Context", "Destination", "Placement", "check", "create"]


BACKENDS: Registry[Callable[[Placement], Backend]] = Registry("backend")


def check(name: str, placement: Placement) -> Callable[[Placement], Backend]:
    """The factory of backend `name`, once `placement` gives it no option of another backend."""
    factory = BACKENDS.get(name)
    placement.check_belongs(name)
    return factory


def create(name: str, placement: Placement) -> Backend:
    """The backend `name` set up for `placement` (a BenchError when its extra, its cluster, or an
    option that belongs to another backend is missing or given)."""
    return check(name, placement)(placement.resolved().validate())


def _local(placement: Placement) -> Backend:
    from bench.execution.backends.local import LocalBackend

    return LocalBackend.from_placement(placement)


def _ray(placement: Placement) -> Backend:
    from bench.execution.backends.ray_backend import RayBackend

    return RayBackend(placement)


def _slurm(placement: Placement) -> Backend:
    from bench.execution.backends.slurm_backend import SlurmBackend

    return SlurmBackend(placement)


def _inline(placement: Placement) -> Backend:
    from bench.execution.backends.inline import InlineBackend

    return InlineBackend(placement)


BACKENDS.add("local", _local)
BACKENDS.add("inline", _inline)
BACKENDS.add("ray", _ray)
BACKENDS.add("slurm", _slurm)
