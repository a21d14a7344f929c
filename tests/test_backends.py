"""`--backend ray` and `--backend slurm`: the same plan, resume-by-config-hash and failure isolation
as the local backend (their live table and studies: test_backend_progress.py, test_backend_studies.py), on a real local Ray instance and submitit's local
executor (real job processes), logging to a real sqlite MLflow store; and the rule that an option of
another backend is refused."""

from __future__ import annotations

import dataclasses
import os
import shutil
import typing
from pathlib import Path

import pytest
from support import cli, store_args
from typer.testing import CliRunner

from bench import tracking
from bench.cli import app
from bench.config.spec import GradFlowConfig, RunSpec, TrainConfig
from bench.core.errors import BenchError
from bench.execution import backends
from bench.execution.backends.driver import run_plan
from bench.execution.planning import plan_runs

ONE_EPOCH = TrainConfig(max_epochs=1)
ONE_BATCH = GradFlowConfig(num_batches=1)
GRID_FLAGS = ["--datasets", "digits", "--max-epochs", "1", "--set", "gradflow.num_batches=1"]


@pytest.fixture
def store(ready_store) -> dict:
    """Each test here starts from an empty, migrated store: creating one is not what they test."""
    return ready_store


def _spec(dataset: str, model: str, seed: int) -> RunSpec:
    # The spec `bench run` builds from GRID_FLAGS, so the CLI finds these runs by their config hash.
    return RunSpec(dataset, model, seed, train=ONE_EPOCH, gradflow=ONE_BATCH).validate()


def _plan(store, experiment: str, specs: list[RunSpec], label: str):
    experiment_id = tracking.prepare(store["uri"], experiment)
    return experiment_id, plan_runs(specs, store["uri"], experiment_id, label)


def _destination(store) -> backends.Destination:
    return backends.Destination(store["uri"], store["data"], store["checkpoints"])


def _assert_finished(store, run_id: str) -> None:
    run = tracking.get_run(store["uri"], run_id)
    assert run.status == "FINISHED"
    assert run.tags["device"] == "cpu"  # set by the worker, not the parent's "ray"/"slurm" label
    assert [step for step, _ in tracking.metric_history(store["uri"], run_id, "val/acc")] == [1]
    assert "test/top1" in run.metrics
    assert {"history.csv", "gradflow", "evaluation"} <= set(tracking.list_artifacts(store["uri"], run_id))
    assert len(tracking.logged_models(store["uri"], run_id)) == 1  # the headline weights, as the run's model


def _assert_failed_on_missing_cifar10(store, state) -> None:
    assert state.status == "failed" and "cifar10" in state.error.lower()
    run = tracking.get_run(store["uri"], state.run_id)
    assert run.status == "FAILED" and "cifar" in run.tags["failure"].lower()


def _rerun_is_a_no_op(store, experiment: str, *flags: str, finished: int) -> None:
    result = CliRunner().invoke(app, ["run", *GRID_FLAGS, *flags, *store_args(store, experiment, devices=None)])
    assert result.exit_code == 0, result.output
    assert f"0 run(s) to do, {finished} already finished" in result.output


# -- Ray ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_runs_a_digits_grid_isolates_a_failure_and_resumes_by_config_hash(local_ray, store, monkeypatch):
    monkeypatch.setenv("BENCH_OUTBOX_DIR", str(store["root"] / "outbox"))
    grid = [_spec("digits", model, seed) for model in ("resnet18", "senet18") for seed in (1, 2)]
    broken = _spec("cifar10", "resnet18", 1)  # its files are not in the empty data folder: fails in its task
    _, plan = _plan(store, "ray", [*grid, broken], "ray")
    backend = backends.create("ray", backends.Placement(cpus_per_run=1))
    assert "instance on this machine" in backend.description and backend.gpus == 0
    seen = []
    states = run_plan(backend, plan, _destination(store), lambda s: seen.append([x.status for x in s]))
    assert [s.status for s in states] == ["finished"] * 4 + ["failed"]
    for state in states[:4]:
        _assert_finished(store, state.run_id)
        assert state.test_top1 is not None and state.wall_s > 0
    _assert_failed_on_missing_cifar10(store, states[4])
    assert seen and seen[0] == ["submitted"] * 5
    # The CLI with --backend ray plans the same grid, finds every configuration finished and skips it.
    _rerun_is_a_no_op(store, "ray", "--backend", "ray", "--models", "resnet18,senet18", "--seeds", "1,2", finished=4)


def test_ray_refuses_a_run_bigger_than_the_cluster(local_ray):
    with pytest.raises(BenchError, match="the Ray cluster has 0 GPU"):
        backends.create("ray", backends.Placement(gpus_per_run=1))


# -- Slurm (submitit) --------------------------------------------------------------------------------


@pytest.mark.slow
def test_slurm_jobs_on_the_local_executor_run_each_run_and_isolate_a_failure(store, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is not installed; pip install 'gradattn-bench[slurm]'")
    monkeypatch.setenv("BENCH_OUTBOX_DIR", str(store["root"] / "outbox"))
    _, plan = _plan(store, "slurm", [_spec("digits", "resnet18", 3), _spec("cifar10", "resnet18", 3)], "slurm")
    placement = backends.Placement(slurm_executor="local", cpus_per_run=1, gpus_per_run=0, slurm_time_min=30)
    backend = backends.create("slurm", placement)
    states = run_plan(backend, plan, _destination(store))
    assert [s.status for s in states] == ["finished", "failed"]
    assert all(s.slot.startswith("job ") for s in states)
    _assert_finished(store, states[0].run_id)
    _assert_failed_on_missing_cifar10(store, states[1])
    # One submitit job folder per run, with its pickled call and log files.
    assert len([p for p in (store["checkpoints"] / "slurm").iterdir() if p.name.isdigit()]) == 2
    _rerun_is_a_no_op(store, "slurm", "--backend", "slurm", "--slurm-executor", "local", "--models", "resnet18", "--seeds", "3", finished=1)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has Slurm")
def test_slurm_backend_without_slurm_says_so():
    pytest.importorskip("submitit", reason="submitit is not installed; pip install 'gradattn-bench[slurm]'")
    with pytest.raises(BenchError, match="no sbatch on PATH.*--slurm-executor local"):
        backends.create("slurm", backends.Placement())


# -- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, placement, says",
    [
        ("kubernetes", backends.Placement(), "Unknown backend 'kubernetes'; choose one of: local, inline, ray, slurm"),
        ("ray", backends.Placement(cpus_per_run=0), "--cpus-per-run must be at least 1"),
        ("slurm", backends.Placement(gpus_per_run=-1), "--gpus-per-run must be at least 0"),
        ("slurm", backends.Placement(slurm_executor="pbs"), "--slurm-executor must be one of slurm, local"),
        ("slurm", backends.Placement(slurm_executor="local", gpus_per_run=0.5), "whole GPUs"),
        ("local", backends.Placement(devices="99", jobs_per_device=1), "CUDA device"),
    ],
)
def test_bad_backend_options_are_clear_errors(name, placement, says):
    with pytest.raises(BenchError, match=says.replace("(", r"\(").replace(")", r"\)")):
        backends.create(name, placement)


def _misplaced_options():
    """(flag, value, a backend the option does not belong to, the backends it belongs to) for every
    Placement option: the rule is tested on all of them, so a new option is covered by declaring it."""
    hints = typing.get_type_hints(backends.Placement)
    values = {str: "x", int: "1", float: "1", Path: "folder"}
    for setting in dataclasses.fields(backends.Placement):
        value = values[next(t for t in typing.get_args(hints[setting.name]) if t is not type(None))]
        owners = setting.metadata["backends"]
        for backend in ("local", "ray", "slurm"):
            if backend not in owners:
                yield setting.metadata["flag"], value, backend, owners


MISPLACED = list(_misplaced_options())


def test_every_backend_option_is_declared_for_some_but_not_all_backends():
    flags = {flag for flag, _, _, _ in MISPLACED}
    assert flags == {f.metadata["flag"] for f in dataclasses.fields(backends.Placement)}
    assert {"--cpus-per-run", "--ray-address", "--slurm-executor", "--devices", "--jobs-per-device"} <= flags


@pytest.mark.parametrize("command", [["run"], ["study", "depth-width", "--dataset", "digits"]], ids=["run", "study"])
def test_an_option_of_another_backend_is_refused_in_one_sentence(capsys, tmp_path, command):
    for flag, value, backend, owners in MISPLACED:
        code, out, err = cli(capsys, *command, "--backend", backend, flag, value, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert code == 2, (flag, backend, out)
        assert err.startswith(f"error: {flag} belongs to the {' and '.join(owners)} backend"), err
        assert f"under --backend {backend}" in err and err.count(". ") == 0 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # refused before any work


def test_the_rule_holds_for_backends_built_in_code_too():
    with pytest.raises(BenchError, match="--jobs-per-device belongs to the local backend .* under --backend ray"):
        backends.create("ray", backends.Placement(jobs_per_device=2))
    # the defaults of options not given are not "given": --cpus-per-run has one, yet local accepts none
    assert backends.Placement().cpus_per_run is None and backends.Placement().resolved().cpus_per_run == 2
    backends.create("local", backends.Placement(devices="cpu"))


def test_local_backend_is_the_scheduler_with_its_slots():
    backend = backends.create("local", backends.Placement(devices="cpu", jobs_per_device=2))
    assert backend.description == "2 slot(s): cpu#0, cpu#1" and backend.device_label == "cpu"


def test_without_jobs_per_device_a_cpu_gets_one_thread_runs_per_core_and_a_gpu_one_run():
    from bench.execution.slots import default_cpu_jobs, resolve_slots

    assert [default_cpu_jobs(c) for c in (1, 2, 4, 8, 16)] == [1, 2, 4, 2, 4]
    cores = os.cpu_count() or 1
    slots = resolve_slots("cpu", None, cuda_count=0)
    assert len(slots) == default_cpu_jobs(cores) and {s.threads for s in slots} == {max(1, cores // len(slots))}
    assert [s.name for s in resolve_slots("auto", None, cuda_count=2)] == ["cuda:0", "cuda:1"]
    assert backends.create("local", backends.Placement(devices="cpu")).description.startswith(f"{len(slots)} slot(s)")
