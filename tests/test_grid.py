"""The grid through the real CLI: worker processes, a real sqlite MLflow store, kills and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from support import TINY_MODEL, bench, cli, store_args, worker_pids

from bench import tracking
from bench.core.errors import BenchError

SYNTH = ["--datasets", "synthetic", "--set", "gradflow.num_batches=1"]


@pytest.fixture
def store(ready_store) -> dict:
    """Each test here starts from an empty, migrated store: creating one is not what they test."""
    return ready_store


def _runs(store, experiment="test") -> list[tracking.Run]:
    try:
        return tracking.runs_of(store["uri"], tracking.experiment_id(store["uri"], experiment))
    except BenchError:  # no such experiment yet
        return []


def _steps(store, run_id, key="val/acc"):
    return sorted(step for step, _ in tracking.metric_history(store["uri"], run_id, key))


def _start(args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


def _wait_for_epoch(store, epoch: int, process: subprocess.Popen, timeout: float = 300) -> str:
    """Poll the store until some run has logged `epoch`; returns that run's id."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()
        for run in _runs(store):
            if run.status == "RUNNING" and epoch in _steps(store, run.run_id):
                return run.run_id
        time.sleep(0.5)
    raise AssertionError(f"no run reached epoch {epoch} in {timeout} s")


@pytest.mark.slow
def test_two_slots_log_every_run_exactly_once_rerun_skips_and_report(store, capsys):
    args = [*SYNTH, "--models", "resnet18,gradattn-nope", "--seeds", "1,2", "--max-epochs", "1", "--jobs-per-device", "2", *store_args(store)]
    result = bench("run", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cpu#0" in result.stdout and "cpu#1" in result.stdout
    runs = _runs(store)
    assert len(runs) == 4 and {r.status for r in runs} == {"FINISHED"}
    assert len({r.tags["config_hash"] for r in runs}) == 4
    assert not store["checkpoints"].exists()  # every run finished and removed its checkpoints, then the folder went
    assert {r.tags["mlflow.runName"] for r in runs} == {
        f"synthetic/{m}/{s}" for m in ("resnet18", "gradattn-nope") for s in (1, 2)
    }
    code, again, _ = cli(capsys, "run", *args)  # planning only: in this process
    assert code == 0 and "0 run(s) to do, 4 already finished" in again
    assert len(_runs(store)) == 4

    out = store["root"] / "report"
    code, report, err = cli(capsys, "report", "--tracking-uri", store["uri"], "--experiment", "test", "--out", str(out))
    assert code == 0, err
    for name in ("results.md", "results.csv", "results.tex", "results.png", "gradient_health.csv"):
        assert (out / name).stat().st_size > 0, name
    import pandas as pd

    table = pd.read_csv(out / "results.csv")
    assert set(table.model) == {"resnet18", "gradattn-nope"} and set(table.n) == {2}
    assert table.score_low.notna().all() and table.p.isna().all()  # two seeds: intervals, no p-value
    assert table.test.str.contains("needs n >= 3").sum() == 1
    assert "synthetic" in report


@pytest.mark.slow
def test_worker_killed_mid_training_resumes_to_the_same_final_metrics(store):
    args = [*SYNTH, "--models", "resnet18", "--seeds", "5", "--max-epochs", "4"]
    first = _start(["run", *args, *store_args(store)])
    run_id = _wait_for_epoch(store, 2, first)
    for pid in worker_pids(first.pid):
        os.kill(pid, signal.SIGKILL)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 1, out  # the run is reported FAILED, nothing is lost
    assert tracking.run_status(store["uri"], run_id) == "FAILED"

    resumed = bench("run", *args, *store_args(store))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = _runs(store)
    assert [r.run_id for r in runs] == [run_id]  # same MLflow run, continued
    run = runs[0]
    assert run.status == "FINISHED" and int(run.tags["resumed_from_epoch"]) >= 2
    assert _steps(store, run_id) == [1, 2, 3, 4]

    reference = bench("run", *args, *store_args(store, experiment="uninterrupted"))
    assert reference.returncode == 0, reference.stderr
    expected = _runs(store, "uninterrupted")[0].metrics
    got = run.metrics
    for key in ("test/top1", "test/loss", "test/f1_macro", "val/best_acc", "val/acc"):
        assert got[key] == expected[key], key


@pytest.mark.slow
def test_parent_killed_mid_grid_then_rerun_finishes_without_duplicates(store):
    args = [*SYNTH, "--models", "resnet18,gradattn-lpe", "--max-epochs", "3", *store_args(store)]
    first = _start(["run", *args])
    interrupted = _wait_for_epoch(store, 1, first)
    first.kill()  # SIGKILL: no chance to clean up; workers notice and exit
    first.wait(timeout=30)
    time.sleep(2)
    rerun = bench("run", *args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    runs = _runs(store)
    assert len(runs) == 2 and {r.status for r in runs} == {"FINISHED"}
    resumed = next(r for r in runs if r.run_id == interrupted)
    assert int(resumed.tags["resumed_from_epoch"]) >= 1
    assert _steps(store, interrupted) == [1, 2, 3]


def _planned_run(store, args) -> tracking.Run:
    """A run planned and claimed by a command killed before any worker took it (during the planner's
    pause before it reads its claims back): never started, its owner gone."""
    planner = subprocess.Popen([sys.executable, "-m", "bench", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=os.environ | {"BENCH_CLAIM_SETTLE_S": "30"})
    deadline = time.time() + 120
    while not _runs(store):
        assert planner.poll() is None and time.time() < deadline, planner.communicate()[0]
        time.sleep(0.2)
    planner.kill()
    planner.wait(timeout=30)
    [planned] = _runs(store)
    return planned


@pytest.mark.slow
def test_a_planned_run_replaced_when_training_begins_leaves_no_checkpoint_folder(store):
    """A worker killed between taking a planned run's checkpoint folder and logging anything leaves
    the folder with its lock file; the next command trains the configuration in a fresh run
    (tracking.start_clock) and removes the old run's folder with it."""
    args = [*SYNTH, "--models", "tiny", "--max-epochs", "1", *TINY_MODEL, *store_args(store)]
    planned = _planned_run(store, args)
    from bench.train import checkpoint

    with checkpoint.exclusive(store["checkpoints"] / planned.run_id):  # as a worker takes the folder, then is killed
        pass
    rerun = bench("run", *args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    [run] = _runs(store)
    assert run.status == "FINISHED" and run.run_id != planned.run_id
    assert not store["checkpoints"].exists(), sorted(store["checkpoints"].rglob("*"))


@pytest.mark.slow
def test_a_planned_run_whose_logging_waits_in_the_outbox_is_resumed_not_replaced(store, tmp_path):
    """A worker logged a run's first calls while the store was away (they wait in its outbox) and was
    killed: the store shows nothing of the run, yet training began in it. The next command trains
    that same run and delivers what waited, leaving no outbox entry behind."""
    args = [*SYNTH, "--models", "tiny", "--max-epochs", "1", *TINY_MODEL, *store_args(store)]
    planned = _planned_run(store, args)
    outbox = tmp_path / "outbox"
    tracking.Outbox(outbox / planned.run_id).put("tags", {"tags": {"queued": "while the store was away"}})
    rerun = bench("run", *args, env={"BENCH_OUTBOX_DIR": str(outbox)})
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    [run] = _runs(store)
    assert run.run_id == planned.run_id and run.status == "FINISHED"
    assert run.tags["queued"] == "while the store was away"
    assert not list(outbox.rglob("*.json"))


@pytest.mark.slow
def test_ctrl_c_once_checkpoints_and_marks_killed(store):
    # Epochs to spare: on a loaded machine the press can land a couple of epochs after the first is logged.
    args = [*SYNTH, "--models", "resnet18", "--max-epochs", "6", *store_args(store)]
    first = _start(["run", *args])
    run_id = _wait_for_epoch(store, 1, first)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 130, out
    assert "run the same command again" in out
    assert tracking.run_status(store["uri"], run_id) == "KILLED"
    assert any((store["checkpoints"] / run_id).iterdir())  # the interrupted run's checkpoint stays
    assert _steps(store, run_id)[-1] < 6
    rerun = bench("run", *args)
    assert rerun.returncode == 0
    assert tracking.run_status(store["uri"], run_id) == "FINISHED"
    assert _steps(store, run_id) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_failing_run_is_isolated_and_missing_datasets_skipped(store):
    store["data"].mkdir(parents=True)
    (store["data"] / "bloodmnist.npz").write_bytes(b"this is not a zip archive")
    # One worker: the failing run and the finished one share its process.
    args = ["--datasets", "synthetic,bloodmnist,cifar10", "--models", "tiny", "--max-epochs", "1", "--set", "gradflow.num_batches=1",
            "--jobs-per-device", "1", *store_args(store)]
    refused = bench("run", *args, *TINY_MODEL)
    assert refused.returncode == 2
    assert "cifar10" in refused.stderr and "--skip-missing" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _runs(store) == []  # nothing created before the check

    result = bench("run", *args, "--skip-missing", *TINY_MODEL)
    assert result.returncode == 1, result.stdout + result.stderr
    by_dataset = {r.tags["dataset"]: r for r in _runs(store)}
    assert set(by_dataset) == {"synthetic", "bloodmnist"}
    assert by_dataset["synthetic"].status == "FINISHED"
    failed = by_dataset["bloodmnist"]
    assert failed.status == "FAILED"
    assert "failure/traceback.txt" in tracking.list_artifacts(store["uri"], failed.run_id, "failure")
    assert "bloodmnist" in result.stdout


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--models", "resnet99"], "Unknown model"),
        (["--datasets", "imagenet"], "Unknown dataset"),
        (["--devices", "3"], "does not exist"),
        (["--jobs-per-device", "0"], "--jobs-per-device"),
        (["--seeds", "a,b"], "--seeds"),
        (["--set", "model.nhead=7"], "divisible"),
        (["--set", "preprocessing=fancy"], "preprocessing (command line: --set preprocessing=fancy) must be one of protocol, notebook"),
        (["--study", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(store, capsys, extra, fragment):
    # the entry point in this process: these stop before any worker starts
    code, out, err = cli(capsys, "run", "--max-epochs", "1", *store_args(store), *extra)
    assert code == 2, out + err
    assert fragment in err and err.startswith("error:") and err.strip().count("\n") == 0
