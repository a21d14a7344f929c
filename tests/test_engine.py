"""The training engine through a real run: determinism, best-weight restore, untouched state.

Each run goes through `bench.runner.execute` into a real sqlite MLflow store, on the synthetic
dataset (512 training images) for two epochs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench import checkpoint, tracking
from bench.engine import BEST, LAST, Trainer
from bench.runner import RunContext, execute
from bench.spec import GradFlowConfig, RunSpec, TrainConfig

SPEC = RunSpec(
    "synthetic",
    "resnet18",
    seed=3,
    train=TrainConfig(max_epochs=2),
    gradflow=GradFlowConfig(num_batches=1),
)


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = tracking.prepare(uri, "engine")
    torch.set_num_threads(2)
    return RunContext(tracking_uri=uri, data_dir=root / "data", checkpoint_root=root / "checkpoints"), experiment


def _run(context, spec):
    ctx, experiment = context
    run_id = tracking.create_run(ctx.tracking_uri, experiment, spec.run_name, {"config_hash": spec.config_hash()})
    outcome = execute(spec, ctx, run_id)
    assert outcome.status == tracking.FINISHED
    return tracking.client(ctx.tracking_uri).get_run(run_id).data.metrics


@pytest.fixture(scope="module")
def reference(context):
    return _run(context, SPEC)


def test_same_spec_twice_gives_identical_test_metrics(context, reference):
    again = _run(context, SPEC)
    test_keys = [k for k in reference if k.startswith("test_")]
    assert len(test_keys) >= 10
    assert {k: again[k] for k in test_keys} == {k: reference[k] for k in test_keys}


def test_gradient_flow_during_training_leaves_the_trajectory_untouched(context, reference):
    analysed = _run(context, dataclasses.replace(SPEC, gradflow=GradFlowConfig(num_batches=1, every=1)))
    for key in ("test_top1", "test_loss", "val_acc", "train_loss", "best_val_acc"):
        assert analysed[key] == reference[key], key
    assert "gradient_health" in analysed


def test_a_different_seed_gives_a_different_run(context, reference):
    other = _run(context, dataclasses.replace(SPEC, seed=4))
    assert other["test_loss"] != reference["test_loss"]


def _tiny_trainer(tmp_path, restore_best: bool, max_epochs: int = 4):
    from bench import data, models

    bundle = data.get("synthetic").load(seed=0)
    checkpoint.seed_everything(0)
    model = models.build("resnet18", bundle.num_classes, bundle.in_channels)
    from bench.data.pipeline import BatchLoader

    loaders = {
        name: BatchLoader(getattr(bundle, name), batch_size=64, transform=transform, device="cpu", shuffle=shuffle, seed=0)
        for name, transform, shuffle in (("train", bundle.train_transform, True), ("val", bundle.eval_transform, False))
    }
    # lr 0.5 makes validation accuracy collapse after the first epochs, so best != last
    config = TrainConfig(max_epochs=max_epochs, lr=0.5, early_stopping_patience=10)
    return Trainer(model, loaders["train"], loaders["val"], config, device=torch.device("cpu"), checkpoint_dir=tmp_path, restore_best=restore_best)


def test_best_weights_really_restored_and_last_kept_in_notebook_mode(tmp_path):
    trainer = _tiny_trainer(tmp_path / "best", restore_best=True)
    result = trainer.fit()
    best = checkpoint.load(tmp_path / "best" / BEST)
    assert result.final_weights == "best" and best["epoch"] == result.best_epoch
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, best["model"][key]), key
    last = checkpoint.load(tmp_path / "best" / LAST)["model"]
    if result.best_epoch != result.epochs_run:  # the saved copy is independent of later updates
        assert any(not torch.equal(last[k], best["model"][k]) for k in last)

    trainer = _tiny_trainer(tmp_path / "last", restore_best=False)
    result = trainer.fit()
    last = checkpoint.load(tmp_path / "last" / LAST)["model"]
    assert result.final_weights == "last"
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, last[key]), key


def test_fit_resumes_from_the_last_checkpoint_in_process(tmp_path):
    whole = _tiny_trainer(tmp_path / "whole", restore_best=True, max_epochs=3).fit()
    first = _tiny_trainer(tmp_path / "split", restore_best=True, max_epochs=2).fit()
    assert first.epochs_run == 2
    resumed_trainer = _tiny_trainer(tmp_path / "split", restore_best=True, max_epochs=3)
    resumed = resumed_trainer.fit()
    assert resumed.resumed_from_epoch == 2
    assert [r.val_acc for r in resumed.history] == [r.val_acc for r in whole.history]
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in whole.history]
