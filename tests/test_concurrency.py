"""Two `bench run` commands on one overlapping grid, at the same moment and 10 s apart, against a
sqlite store, a real `mlflow server` and a throwaway PostgreSQL database: every configuration is
trained by one process only and ends FINISHED once, in one run, with every metric once per step.

Each command is the real CLI in its own process with two worker slots; the stores are fresh, so the
two also race to create the store and the experiment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support import TINY_MODEL

from bench import tracking

# Two configurations of the tests' small model: what races is the planning and the logging, not the model.
SEEDS = ("1", "2")
NAMES = [f"digits/tiny/{seed}" for seed in SEEDS]


def _start(uri: str, root: Path, name: str, experiment: str) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "bench", "run", "--datasets", "digits", "--models", "tiny", "--seeds", ",".join(SEEDS),
        "--max-epochs", "1", "--set", "gradflow.num_batches=1", "--devices", "cpu", "--jobs-per-device", "2",
        "--tracking-uri", uri, "--experiment", experiment,
        "--checkpoint-dir", str(root / "checkpoints"), "--data-dir", str(root / "data"), *TINY_MODEL,
    ]
    # The two planners race with the product's pause before reading claims back (conftest shortens it).
    env = os.environ | {"PYTHONUNBUFFERED": "1", "BENCH_OUTBOX_DIR": str(root / f"outbox-{name}"), "BENCH_CLAIM_SETTLE_S": "2"}
    log = open(root / f"{name}.log", "w")
    return subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _race(uri: str, root: Path, delay_s: float, experiment: str) -> list[str]:
    first = _start(uri, root, "a", experiment)
    time.sleep(delay_s)
    second = _start(uri, root, "b", experiment)
    codes = [first.wait(timeout=600), second.wait(timeout=600)]
    logs = [(root / f"{n}.log").read_text() for n in ("a", "b")]
    assert codes == [0, 0], "\n\n".join(logs)
    return logs


def _trained_by(log: str) -> set[str]:
    """Configurations this command trained itself: its live log says `<run> [slot] finished`."""
    return {line.split(" [", 1)[0] for line in log.splitlines() if "] finished:" in line}


def _assert_once(uri: str, root: Path, logs: list[str], experiment: str) -> None:
    runs = tracking.runs_of(uri, tracking.experiment_id(uri, experiment))
    assert sorted(r.name for r in runs) == NAMES, [(r.name, r.status) for r in runs]
    assert len({r.tags["config_hash"] for r in runs}) == len(NAMES)  # one run per config hash
    assert all(r.status == "FINISHED" for r in runs), [r.tags.get("failure") for r in runs]
    for run in runs:
        for key in run.metrics:
            steps = Counter(step for step, _ in tracking.metric_history(uri, run.run_id, key))
            assert all(n == 1 for n in steps.values()), (run.name, key, steps)
        assert sorted(step for step, _ in tracking.metric_history(uri, run.run_id, "val/acc")) == [1]
    trained = [_trained_by(log) for log in logs]
    assert not trained[0] & trained[1], trained  # no configuration (and so no checkpoint folder) trained twice
    assert trained[0] | trained[1] == set(NAMES), logs
    held = sum(log.count("being trained by another process") + log.count("another process (run") for log in logs)
    assert held >= 1 or not all(trained), logs  # whoever stepped back said so
    assert not list((root / "checkpoints").glob("*/last.pt"))  # finished runs leave no checkpoint behind


# Two trainings side by side take about a minute on two cores: the whole suite runs it, not the fast subset.
@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0, 10])
def test_two_commands_on_sqlite(tmp_path, delay_s):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _assert_once(uri, tmp_path, _race(uri, tmp_path, delay_s, "race"), "race")


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0, 10])
def test_two_commands_on_an_mlflow_server(mlflow_server, tmp_path, delay_s):  # noqa: F811
    experiment = f"race-{delay_s}"  # one server for the module: an experiment per case
    _assert_once(mlflow_server.url, tmp_path, _race(mlflow_server.url, tmp_path, delay_s, experiment), experiment)


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0, 10])
def test_two_commands_on_postgresql(postgres, tmp_path, delay_s):  # noqa: F811
    uri = postgres.createdb(f"race{delay_s}")  # a fresh store: the two also race to create its schema
    _assert_once(uri, tmp_path, _race(uri, tmp_path, delay_s, "race"), "race")


_LOG_ONE_DATASET = """
import sys, time
from bench import tracking
uri, run_id, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
logger = tracking.RunLogger(uri, run_id, retries=0)
print("ready", flush=True)
start = float(sys.stdin.readline())  # the same moment for every process
for n in range(rounds):  # all processes log round n's dataset at the same moment
    time.sleep(max(0.0, start + n / 2 - time.time()))
    logger.log_dataset(f"digits-{n}", f"digest{n}", "sklearn://digits", {"train": 1})
"""


def test_runs_of_one_grid_log_one_dataset_at_once(ready_store):
    """Every run of a grid logs the same dataset input as it starts: the store's first writer creates
    the dataset's row, the others (which lost the race to insert it) link their runs to it."""
    uri, rounds = ready_store["uri"], 4
    experiment = tracking.prepare(uri, "datasets")
    run_ids = [tracking.create_run(uri, experiment, f"run-{i}", {}) for i in range(4)]
    writers = [
        subprocess.Popen([sys.executable, "-c", _LOG_ONE_DATASET, uri, run_id, str(rounds)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for run_id in run_ids
    ]
    for writer in writers:  # every process has imported MLflow and opened the store
        assert writer.stdout.readline().strip() == "ready", writer.communicate()[0]
    start = f"{time.time() + 0.5}\n"
    for writer in writers:
        writer.stdin.write(start)
        writer.stdin.flush()
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert [w.returncode for w in writers] == [0] * len(writers), "\n".join(outputs)
    c = MlflowClient(uri)  # the dataset inputs as MLflow stores them
    for run_id in run_ids:
        names = sorted(d.dataset.name for d in c.get_run(run_id).inputs.dataset_inputs)
        assert names == [f"digits-{n}" for n in range(rounds)]
