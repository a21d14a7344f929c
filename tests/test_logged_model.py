"""The weights of a finished run are its MLflow model: listed under the run's logged models,
registrable, and loaded back by `mlflow.pytorch.load_model` into a model that takes the dataset's
uint8 images and predicts the test split with the accuracy the run logged."""

from __future__ import annotations

from collections import Counter

import mlflow
import mlflow.pytorch
import pytest
import torch
import torch.nn as nn
from mlflow.tracking import MlflowClient
from support import new_store

from bench import data, tracking
from bench.config.spec import GradFlowConfig, RunSpec, TrainConfig
from bench.execution.runner import RunContext, execute

SPEC = RunSpec("digits", "resnet18", seed=1, train=TrainConfig(max_epochs=1), gradflow=GradFlowConfig(num_batches=1))


def _finished(store: dict, experiment: str, spec: RunSpec, **context) -> str:
    ctx = RunContext(tracking_uri=store["uri"], data_dir=store["data"], checkpoint_root=store["checkpoints"], **context)
    run_id = tracking.create_run(store["uri"], experiment, spec.run_name, {"config_hash": spec.config_hash()})
    assert execute(spec, ctx, run_id).status == tracking.FINISHED
    return run_id


def _models_of(uri: str, run_id: str) -> list:
    return tracking.logged_models(uri, run_id)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, migrated_store):
    store = new_store(tmp_path_factory.mktemp("model"), migrated_store)
    experiment = tracking.prepare(store["uri"], "model")
    return store, experiment, _finished(store, experiment, SPEC)


def _accuracy(model_uri: str, store: dict) -> float:
    bundle = data.get(SPEC.dataset).load(store["data"], preprocessing=SPEC.preprocessing, splits=SPEC.splits, seed=SPEC.split_seed)
    model = mlflow.pytorch.load_model(model_uri)
    with torch.no_grad():
        predicted = model(bundle.test.take(torch.arange(len(bundle.test)))).argmax(dim=1)
    return float((predicted == bundle.test.labels).float().mean())


def test_the_logged_model_predicts_the_test_split_as_the_run_logged(finished):
    store, _, run_id = finished
    mlflow.set_tracking_uri(store["uri"])
    [model] = _models_of(store["uri"], run_id)
    assert model.name == "digits-resnet18-1" and model.status == "READY"  # named after its run, digits/resnet18/1
    assert model.tags["weights"] == "best" and model.tags["model"] == "resnet18" and model.tags["seed"] == "1"
    run = tracking.get_run(store["uri"], run_id)
    assert run.tags["weights"] == f"logged model {model.model_id}"
    assert _accuracy(f"models:/{model.model_id}", store) == pytest.approx(run.metrics["test/top1"], abs=1e-6)


def test_the_headline_test_metrics_are_the_models_measured_on_the_runs_dataset(finished):
    store, _, run_id = finished
    [model] = _models_of(store["uri"], run_id)
    run = tracking.get_run(store["uri"], run_id)
    logged = {m.key: m for m in MlflowClient(store["uri"]).get_logged_model(model.model_id).metrics}
    assert logged["test_top1"].value == run.metrics["test/top1"] and "test_f1_macro" in logged
    assert not any(key.startswith(("test_best_", "test_last_")) for key in logged)  # the headline's only
    [dataset] = MlflowClient(store["uri"]).get_run(run_id).inputs.dataset_inputs
    tested = [m for key, m in logged.items() if key.startswith("test_")]
    assert {(m.dataset_name, m.dataset_digest) for m in tested} == {("digits", dataset.dataset.digest)}
    assert tracking.model_name("folder:/data/pets.v2/resnet18/42") == "folder-data-pets-v2-resnet18-42"  # what MLflow accepts


def test_the_logged_model_can_be_registered_and_loaded_by_name(finished):
    store, _, run_id = finished
    mlflow.set_tracking_uri(store["uri"])
    [model] = _models_of(store["uri"], run_id)
    version = mlflow.register_model(f"models:/{model.model_id}", "digits-resnet18")
    accuracy = tracking.get_run(store["uri"], run_id).metrics["test/top1"]
    assert _accuracy(f"models:/digits-resnet18/{version.version}", store) == pytest.approx(accuracy, abs=1e-6)


def test_the_model_replaces_the_checkpoint_artifact_and_doubles_no_metric(finished):
    store, _, run_id = finished
    assert tracking.list_artifacts(store["uri"], run_id, "checkpoint") == []
    for key in tracking.get_run(store["uri"], run_id).metrics:
        steps = Counter(step for step, _ in tracking.metric_history(store["uri"], run_id, key))
        assert set(steps.values()) == {1}, (key, steps)


def test_a_model_is_logged_once_per_run_and_a_half_logged_one_is_replaced(finished):
    store, experiment, _ = finished
    run_id = tracking.create_run(store["uri"], experiment, "again", {})
    name = tracking.model_name("again/1")
    stale = MlflowClient(store["uri"]).create_logged_model(experiment, name=name, source_run_id=run_id)  # a kill before it was finalised
    logger = tracking.RunLogger(store["uri"], run_id, outbox_dir=store["root"] / "outbox" / run_id)
    first = logger.log_model(nn.Linear(2, 2), name, 1, {}, ["torch"])
    again = logger.log_model(nn.Linear(2, 2), name, 1, {}, ["torch"])
    assert first == again != stale.model_id
    assert [m.model_id for m in _models_of(store["uri"], run_id)] == [first]


def test_no_log_model_keeps_no_weights(finished, tmp_path):
    store, experiment, _ = finished
    spec = RunSpec("synthetic", "resnet18", seed=2, train=TrainConfig(max_epochs=1), gradflow=GradFlowConfig(num_batches=1))
    run_id = _finished(store, experiment, spec, log_model=False)
    assert _models_of(store["uri"], run_id) == [] and tracking.list_artifacts(store["uri"], run_id, "checkpoint") == []
    assert tracking.get_run(store["uri"], run_id).tags["weights"] == "not logged (--no-log-model)"
