"""What a run records in MLflow beyond metrics: its dataset as a dataset input, and system metrics
sampled by MLflow's own monitor (off with an option)."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient
from support import TINY_MODEL, bench, store_args

from bench import data, tracking


@pytest.mark.slow
def test_each_run_logs_its_dataset_input_and_system_metrics(store):
    result = bench(
        "run", "--datasets", "synthetic,digits", "--models", "tiny", "--max-epochs", "1",
        "--set", "gradflow.num_batches=1", "--jobs-per-device", "1", *store_args(store), *TINY_MODEL, env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    experiment = tracking.experiment_id(store["uri"], "test")
    runs = {r.tags["dataset"]: r for r in tracking.runs_of(store["uri"], experiment)}
    digests = set()
    for name, run in runs.items():
        (entry,) = MlflowClient(store["uri"]).get_run(run.run_id).inputs.dataset_inputs  # as MLflow stores it
        dataset = entry.dataset
        bundle = data.get(name).load(store["data"])
        profile = json.loads(dataset.profile)
        assert dataset.name == name and len(dataset.digest) == 16
        assert (profile["train"], profile["val"], profile["test"]) == (len(bundle.train), len(bundle.val), len(bundle.test))
        assert [t.value for t in entry.tags if t.key == "mlflow.data.context"] == ["training"]
        digests.add(dataset.digest)
        system = [k for k in run.metrics if k.startswith("system/")]
        assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
    assert set(runs) == {"synthetic", "digits"} and len(digests) == 2  # different data, different digests


def test_system_metrics_are_sampled_while_a_run_trains_and_not_when_switched_off(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.prepare(uri, "system")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    sampled = {}
    for switch in (True, False):
        run_id = tracking.create_run(uri, experiment_id, f"run-{switch}", {})
        with tracking.system_metrics(uri, run_id, enabled=switch):
            time.sleep(1.5)
        sampled[switch] = [k for k in tracking.get_run(uri, run_id).metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in sampled[True]
    assert sampled[False] == []


def test_a_run_shorter_than_one_sampling_interval_still_logs_its_system_metrics(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.prepare(uri, "short")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "30")
    run_id = tracking.create_run(uri, experiment_id, "short", {})
    started = time.monotonic()
    with tracking.system_metrics(uri, run_id):
        time.sleep(0.2)
    assert time.monotonic() - started < 30  # stopping does not wait out the interval
    history = MlflowClient(uri).get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(history) == 1 and history[0].step == 0
