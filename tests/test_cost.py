"""What each run costs, as a real grid records it: counted FLOPs against an independent count, MLflow's
clock against the queue, and a budget that ends training; the engine's budget to the step."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch
from mlflow.tracking import MlflowClient
from support import TINY_MODEL, bench, cli, new_store, store_args

from bench import data, tracking
from bench.config.spec import RunSpec, TrainConfig
from bench.data.pipeline import BatchLoader
from bench.tracking import metric_names
from bench.train import checkpoint
from bench.train.engine import Trainer


@pytest.fixture(scope="module")
def grid(tmp_path_factory, migrated_store):
    """tiny and tiny-wide on synthetic data in one slot, so the second waits for the first; timed."""
    store = new_store(tmp_path_factory.mktemp("cost"), migrated_store)
    args = ["--datasets", "synthetic", "--models", "tiny,tiny-wide", "--max-epochs", "3", "--set", "gradflow.num_batches=1",
            "--jobs-per-device", "1", "--no-log-model", "--no-system-metrics", *TINY_MODEL, *store_args(store)]
    started = time.time()
    result = bench("run", *args)
    store["wall"] = (started, time.time())
    assert result.returncode == 0, result.stdout + result.stderr
    store["args"] = args
    client = MlflowClient(store["uri"])
    store["experiment"] = client.get_experiment_by_name("test").experiment_id
    store["runs"] = sorted(client.search_runs([store["experiment"]]), key=lambda r: r.info.start_time)
    return store


def _sectioned(run) -> dict[str, float]:
    """A run's metrics by the names the project reads them under (results are logged flat)."""
    return {metric_names.canonical(name): value for name, value in run.data.metrics.items()}


def _plugin_builders():
    spec = importlib.util.spec_from_file_location("tiny_models_for_counting", TINY_MODEL[1])
    module = importlib.util.module_from_spec(spec)
    from bench import models

    with models.isolated():  # the plugin registers its models; forget them after
        spec.loader.exec_module(module)
    return {"tiny": module.tiny, "tiny-wide": module.tiny_wide}


@pytest.mark.slow  # the module's grid trains (about 20 s)
def test_logged_forward_flops_equal_an_independent_count(grid):
    from torch.utils.flop_counter import FlopCounterMode

    builders = _plugin_builders()
    for run in grid["runs"]:
        channels, height, width = (int(v) for v in run.data.tags["cost.input"].split("x"))
        model = builders[run.data.tags["model"]](int(run.data.tags["num_classes"]), channels).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, channels, height, width))
        assert "cost_forward_gflops_per_image" in run.data.metrics  # a result: flat, after the curves in the UI
        metrics = _sectioned(run)
        assert metrics["cost/forward_gflops_per_image"] * 1e9 == pytest.approx(counter.get_total_flops(), rel=1e-9)
        assert metrics["cost/forward_gmacs_per_image"] == pytest.approx(metrics["cost/forward_gflops_per_image"] / 2)
        assert metrics["cost/train_step_gflops_per_image"] > 2 * metrics["cost/forward_gflops_per_image"]
        assert metrics["cost/parameters"] == sum(p.numel() for p in model.parameters())
        assert metrics["cost/train_images_per_s"] > 0 and metrics["cost/eval_images_per_s"] > 0
        assert metrics["cost/peak_memory_mib"] > 10  # the worker's peak resident memory, torch included
        assert 0 < metrics["cost/time_to_best_s"] <= metrics["cost/train_time_s"]
        assert metrics["cost/budget_spent"] == 0
        assert run.data.tags["cost.memory"] == "process peak RSS" and run.data.tags["cost.energy"].startswith("not measured")
        assert "cost/energy_j" not in metrics  # not guessed where no counter is readable


@pytest.mark.slow  # the module's grid trains (about 20 s)
def test_mlflow_clock_of_a_run_that_waited_counts_no_queue(grid):
    first, second = grid["runs"]
    grid_start, grid_end = grid["wall"]
    assert second.info.start_time >= first.info.end_time  # created when its worker started, after the first ended
    waited = second.info.start_time / 1000 - grid_start
    duration = (second.info.end_time - second.info.start_time) / 1000
    assert waited > (first.info.end_time - first.info.start_time) / 1000
    assert _sectioned(second)["cost/train_time_s"] < duration < (grid_end - grid_start) - waited
    # the runs planned with the grid were replaced, not kept beside them: one run per configuration
    client = MlflowClient(grid["uri"])
    deleted = client.search_runs([grid["experiment"]], run_view_type=2)  # ViewType.DELETED_ONLY
    assert sorted(r.info.run_name for r in deleted) == sorted(r.info.run_name for r in grid["runs"])
    assert all(r.data.tags[tracking.CLAIM_OWNER] == first.data.tags[tracking.CLAIM_OWNER] for r in grid["runs"])


def test_a_budget_ends_training_early_and_is_recorded(grid, capsys):
    # in this process (the inline backend): no worker to start for one tiny run
    args = [a for a in grid["args"] if a not in ("--jobs-per-device", "1", "--devices", "cpu")]
    code, out, err = cli(capsys, "run", *args, "--models", "tiny", "--set", "train.max_time_s=0.001", "--backend", "inline")
    assert code == 0, out + err
    client = MlflowClient(grid["uri"])
    runs = client.search_runs([grid["experiment"]], "tags.model = 'tiny'")
    budgeted = [r for r in runs if r.data.params.get("train.max_time_s") == "0.001"]
    assert len(runs) == 2 and len(budgeted) == 1  # a configuration of its own: the budget is in the hash
    metrics = _sectioned(budgeted[0])
    assert metrics["cost/budget_spent"] == 1 and metrics["train/epochs_run"] == 1  # of 3
    assert len({r.data.tags["config_hash"] for r in runs}) == 2


# -- the engine's budget, to the step ---------------------------------------------------------------------


def _trainer(folder, **budget):
    bundle = data.get("synthetic").load(seed=0)  # 256 training images: 4 batches of 64
    checkpoint.seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(bundle.in_channels, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, bundle.num_classes))
    loaders = [BatchLoader(getattr(bundle, name), batch_size=64, transform=bundle.eval_transform, device="cpu", shuffle=name == "train", seed=0)
               for name in ("train", "val")]
    config = TrainConfig(max_epochs=5, early_stopping_patience=10, channels_last=False, **budget)
    return Trainer(model, *loaders, config, device=torch.device("cpu"), checkpoint_dir=folder, flops_per_image=1000)


def test_a_flop_budget_ends_at_the_step_that_spends_it_and_stays_spent_on_resume(tmp_path):
    # 1.5 epochs of 1000 FLOPs per image: the whole first epoch, then two of the second's four batches
    fit = _trainer(tmp_path, max_gflops=1000 * 384 / 1e9).fit()
    assert [r.train_images for r in fit.history] == [256, 128]
    assert [r.budget_spent for r in fit.history] == [False, True] and fit.budget_spent and not fit.interrupted
    again = _trainer(tmp_path, max_gflops=1000 * 384 / 1e9).fit()  # resumed from the checkpoint: nothing left to spend
    assert again.resumed_from_epoch == 2 and again.epochs_run == 2 and len(again.history) == 2


def test_a_time_budget_ends_within_the_first_epoch(tmp_path):
    fit = _trainer(tmp_path, max_time_s=1e-6).fit()
    assert [r.train_images for r in fit.history] == [64] and fit.budget_spent


def test_a_budget_is_part_of_the_hash_only_when_set():
    # the hashes of configurations logged before the budget settings existed are unchanged
    assert RunSpec("cifar10", "resnet18").config_hash() == "70a39720eb5984f7"
    assert RunSpec("digits", "gradattn-rope", seed=7).config_hash() == "839a171efd6ad9c5"
    assert RunSpec("cifar10", "resnet18", train=TrainConfig(max_gflops=5.0)).config_hash() != "70a39720eb5984f7"
    assert RunSpec("cifar10", "resnet18", train=TrainConfig(max_time_s=60.0)).flat_params()["train.max_time_s"] == 60.0
