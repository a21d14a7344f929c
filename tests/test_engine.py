"""The training engine: determinism, best-weight restore, resume, untouched state.

The runs through `bench.execution.runner.execute` (a registered model, a real sqlite MLflow store) train
ResNet-18 on the synthetic dataset (256 training images of 16 px) for two epochs; the `Trainer`
tests train a tiny network, since restoring and resuming do not depend on the model.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from support import new_store

from bench import data, tracking
from bench.config.spec import GradFlowConfig, RunSpec, TrainConfig
from bench.data.pipeline import BatchLoader
from bench.execution.runner import RunContext, execute
from bench.train import checkpoint
from bench.train.engine import BEST, LAST, Trainer

SPEC = RunSpec(
    "synthetic",
    "resnet18",
    seed=3,
    train=TrainConfig(max_epochs=2),
    gradflow=GradFlowConfig(num_batches=1),
)


@pytest.fixture(scope="module")
def context(tmp_path_factory, migrated_store):
    store = new_store(tmp_path_factory.mktemp("engine"), migrated_store)
    experiment = tracking.prepare(store["uri"], "engine")
    return RunContext(tracking_uri=store["uri"], data_dir=store["data"], checkpoint_root=store["checkpoints"]), experiment


def _run(context, spec):
    ctx, experiment = context
    run_id = tracking.create_run(ctx.tracking_uri, experiment, spec.run_name, {"config_hash": spec.config_hash()})
    outcome = execute(spec, ctx, run_id)
    assert outcome.status == tracking.FINISHED
    return tracking.get_run(ctx.tracking_uri, run_id).metrics


@pytest.fixture(scope="module")
def reference(context):
    return _run(context, SPEC)


def test_same_spec_twice_gives_identical_test_metrics(context, reference):
    again = _run(context, SPEC)
    test_keys = [k for k in reference if k.startswith("test/")]
    assert len(test_keys) >= 10
    assert {k: again[k] for k in test_keys} == {k: reference[k] for k in test_keys}


def test_gradient_flow_during_training_leaves_the_trajectory_untouched(context, reference):
    analysed = _run(context, dataclasses.replace(SPEC, gradflow=GradFlowConfig(num_batches=1, every=1)))
    for key in ("test/top1", "test/loss", "val/acc", "train/loss", "val/best_acc"):
        assert analysed[key] == reference[key], key
    assert "gradflow/health" in analysed


def test_a_different_seed_gives_a_different_run(context, reference):
    other = _run(context, dataclasses.replace(SPEC, seed=4))
    assert other["test/loss"] != reference["test/loss"]


class TinyNet(nn.Module):
    """A convolution, batch statistics (buffers are restored and resumed too) and a linear head."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _tiny_trainer(tmp_path, restore_best: bool, max_epochs: int):
    bundle = data.get("synthetic").load(seed=0)
    checkpoint.seed_everything(0)
    model = TinyNet(bundle.in_channels, bundle.num_classes)
    loaders = {
        name: BatchLoader(getattr(bundle, name), batch_size=64, transform=transform, device="cpu", shuffle=shuffle, seed=0)
        for name, transform, shuffle in (("train", bundle.train_transform, True), ("val", bundle.eval_transform, False))
    }
    # lr 0.5 makes validation accuracy jump about: with these seeds it peaks at epoch 2 of 3, so best != last
    config = TrainConfig(max_epochs=max_epochs, lr=0.5, early_stopping_patience=10, restore_best=restore_best)
    return Trainer(model, loaders["train"], loaders["val"], config, device=torch.device("cpu"), checkpoint_dir=tmp_path)


def test_best_weights_really_restored_and_last_kept_in_notebook_mode(tmp_path):
    trainer = _tiny_trainer(tmp_path / "best", restore_best=True, max_epochs=3)
    result = trainer.fit()
    best = checkpoint.load(tmp_path / "best" / BEST)
    assert result.final_weights == "best" and best["epoch"] == result.best_epoch < result.epochs_run
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, best["model"][key]), key
    last = checkpoint.load(tmp_path / "best" / LAST)["model"]
    # the saved best copy is independent of the updates after the best epoch
    assert any(not torch.equal(last[k], best["model"][k]) for k in last)

    trainer = _tiny_trainer(tmp_path / "last", restore_best=False, max_epochs=3)
    result = trainer.fit()
    last = checkpoint.load(tmp_path / "last" / LAST)["model"]
    assert result.final_weights == "last" and result.best_epoch < result.epochs_run
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, last[key]), key


@pytest.mark.parametrize("best_file", ["stale", "missing"])
def test_a_kill_between_last_and_best_checkpoint_resumes_with_the_best_weights(tmp_path, best_file):
    # The files a kill leaves after last.pt of epoch 2 (its best so far) and before best.pt of epoch 2.
    whole = _tiny_trainer(tmp_path / "whole", restore_best=True, max_epochs=3)
    assert whole.fit().best_epoch == 2
    _tiny_trainer(tmp_path / "split", restore_best=True, max_epochs=2).fit()
    if best_file == "stale":
        _tiny_trainer(tmp_path / "one", restore_best=True, max_epochs=1).fit()
        shutil.copy(tmp_path / "one" / BEST, tmp_path / "split" / BEST)
    else:
        (tmp_path / "split" / BEST).unlink()
    resumed = _tiny_trainer(tmp_path / "split", restore_best=True, max_epochs=3)
    result = resumed.fit()
    assert (result.resumed_from_epoch, result.best_epoch, result.final_weights) == (2, 2, "best")
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert checkpoint.load(tmp_path / "split" / BEST)["epoch"] == 2


def test_fit_resumes_from_the_last_checkpoint_in_process(tmp_path):
    whole = _tiny_trainer(tmp_path / "whole", restore_best=True, max_epochs=3).fit()
    first = _tiny_trainer(tmp_path / "split", restore_best=True, max_epochs=2).fit()
    assert first.epochs_run == 2
    resumed_trainer = _tiny_trainer(tmp_path / "split", restore_best=True, max_epochs=3)
    resumed = resumed_trainer.fit()
    assert resumed.resumed_from_epoch == 2
    assert [r.val_acc for r in resumed.history] == [r.val_acc for r in whole.history]
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in whole.history]
    # the resumed model ends with the very weights of the uninterrupted one
    whole_trainer_weights = checkpoint.load(tmp_path / "whole" / LAST)["model"]
    resumed_weights = checkpoint.load(tmp_path / "split" / LAST)["model"]
    assert all(torch.equal(resumed_weights[k], whole_trainer_weights[k]) for k in whole_trainer_weights)
