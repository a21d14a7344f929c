"""What a run is and records, through the real CLI on CIFAR-10 files in their real format: the
mode's model choices, split seeds apart from training seeds, both weight sets on test, and a run
identity that ignores analysis-only settings and spelled-out defaults."""

from __future__ import annotations

import csv
import io

import pytest
import torch
from data_fixtures import write_cifar10
from support import cli, store_args

import bench as bench_api
from bench import models, tracking
from bench.config.spec import RunSpec
from bench.data.split_record import ARTIFACT, read_split_indices

pytestmark = pytest.mark.slow  # seven real trainings through the CLI (about a minute on 2 cores)

FAST = ["--datasets", "cifar10", "--max-epochs", "1", "--set", "gradflow.num_batches=1", "--jobs-per-device", "1"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Three small grids in one store: notebook-mode GradAttn, protocol mode over two seeds, and one
    run on another split seed."""
    root = tmp_path_factory.mktemp("identity")
    store = {"uri": f"sqlite:///{root / 'mlflow.db'}", "checkpoints": root / "ckpt", "data": root / "data", "root": root}
    write_cifar10(store["data"], per_batch=8)
    places = {"tracking_uri": store["uri"], "checkpoint_dir": str(store["checkpoints"]), "data_dir": str(store["data"]), "experiment": "test"}
    grids = [  # in this process (the inline backend): seven runs, no worker to start for each
        {"models": "gradattn-nope,gradattn-lpe", "settings": {"preprocessing": "notebook"}, "seeds": 1},
        {"models": "senet18,gradattn-rope", "seeds": "1,2"},
        {"models": "senet18", "seeds": 1, "split_seeds": 7},
    ]
    for grid in grids:
        settings = {"gradflow.num_batches": 1} | grid.pop("settings", {})
        found = bench_api.run(datasets="cifar10", max_epochs=1, backend="inline", progress=False, settings=settings, **grid, **places)
        assert found.attrs["exit_code"] == 0 and set(found.state) == {"finished"}, found.to_string()
    exp = tracking.experiment_id(store["uri"], "test")
    runs = {r.name: r for r in tracking.runs_of(store["uri"], exp)}
    return store, runs


def _built_count(model: str, **options) -> int:
    with torch.device("meta"):
        return models.count_parameters(models.build(model, 10, 3, **options))


def _artifact(store, run, path: str) -> str:
    local = tracking.download_artifact(store["uri"], run.run_id, path, store["root"] / "dl" / run.run_id)
    return local.read_text()


def test_notebook_mode_builds_no_pe_as_the_cifar10_notebook_did(grid):
    store, runs = grid
    nope, lpe = runs["cifar10/gradattn-nope/1"], runs["cifar10/gradattn-lpe/1"]
    sizes = ("model_config.d_model", "model_config.nhead", "model_config.dim_feedforward")
    assert [nope.params[k] for k in sizes] == ["32", "16", "2"]
    assert [lpe.params[k] for k in sizes] == ["256", "8", "512"]
    # the built models are the published cells' (protocol 1.10: 11,049,488 and 12,851,274)
    assert int(nope.tags["parameters"]) == 11_049_488
    assert int(lpe.tags["parameters"]) == 12_851_274
    assert nope.params["model_config.init"] == "per-model" and nope.params["model_config.encoder"] == "published"
    # each records the published cell it reproduces, and how it deviates from it
    assert nope.tags["published_cell"] == "2" and lpe.tags["published_cell"] == "3"
    assert "train.max_epochs=1" in nope.tags["published_deviations"]


def test_protocol_mode_uses_one_init_policy_and_the_shared_encoder(grid):
    store, runs = grid
    senet, rope = runs["cifar10/senet18/1"], runs["cifar10/gradattn-rope/1"]
    assert senet.params["model_config.init"] == rope.params["model_config.init"] == "uniform"
    assert rope.params["model_config.encoder"] == "shared"
    assert int(rope.tags["parameters"]) == _built_count("gradattn-rope", encoder="shared")
    assert int(rope.tags["parameters"]) != _built_count("gradattn-rope")  # not the published RoPE layer
    assert "model_config.d_model" not in senet.params  # nothing shown that the model does not take
    assert "published_cell" not in senet.tags


def test_training_seeds_share_the_split_unless_the_split_seed_varies(grid):
    store, runs = grid
    one, two, other = runs["cifar10/senet18/1"], runs["cifar10/senet18/2"], runs["cifar10/senet18/1/split7"]
    assert (one.tags["split_seed"], two.tags["split_seed"], other.tags["split_seed"]) == ("42", "42", "7")
    assert (one.tags["seed"], other.tags["seed"]) == ("1", "1")
    splits = [
        read_split_indices(tracking.download_artifact(store["uri"], r.run_id, ARTIFACT, store["root"] / "dl" / r.run_id))
        for r in (one, two, other)
    ]
    assert splits[0] == splits[1]
    assert splits[0]["test"] != splits[2]["test"]


def test_both_weight_sets_are_measured_on_test_and_the_headline_follows_the_mode(grid):
    store, runs = grid
    for name, headline in (("cifar10/senet18/1", "best"), ("cifar10/gradattn-nope/1", "last")):
        run = runs[name]
        metrics = run.metrics
        for key in ("top1", "loss", "f1_macro", "ece"):
            assert f"test/best_{key}" in metrics and f"test/last_{key}" in metrics
        assert metrics["test/top1"] == metrics[f"test/{headline}_top1"]
        assert run.tags["final_weights"] == headline
        [model] = tracking.logged_models(store["uri"], run.run_id)  # the weights the headline came from
        assert model.tags["weights"] == headline
        rows = list(csv.DictReader(io.StringIO(_artifact(store, run, "evaluation/test_predictions.csv"))))
        assert len(rows) == 8 and set(rows[0]) == {"label", "pred_best", "pred_last"}  # 50 - 35 - 7
        accuracy = sum(r["label"] == r[f"pred_{headline}"] for r in rows) / len(rows)
        assert accuracy == pytest.approx(metrics["test/top1"])


def test_every_run_records_its_environment_and_gradflow_sample(grid):
    _, runs = grid
    run = runs["cifar10/senet18/2"]
    assert run.tags["env.python"].count(".") == 2 and run.tags["env.torch_version"] == torch.__version__
    assert run.tags["env.cpu"] and int(run.tags["env.torch_threads"]) >= 1
    assert run.params["gradflow.split"] == "train"  # protocol 7.7: seeded training batches
    assert run.metrics["gradflow/batches"] == 1 and run.metrics["gradflow/batch_size"] == 35  # the whole 35-image train split
    assert runs["cifar10/gradattn-nope/1"].params["gradflow.split"] == "test"


@pytest.mark.parametrize(
    "options",
    [
        ["--set", "gradflow.vanishing=1e-7", "--set", "gradflow.exploding=100"],  # analysis-only: rescored, never retrained
        ["--set", "model.d_model=256", "--set", "train.batch_size=128", "--set", "model.init=uniform", "--set", "model.encoder=shared"],  # defaults spelled out
    ],
)
def test_analysis_settings_and_spelled_out_defaults_skip_finished_runs(grid, options, capsys):
    store, _ = grid
    code, out, err = cli(capsys, "run", *FAST, "--models", "senet18,gradattn-rope", "--seeds", "1,2", *options, *store_args(store))
    assert code == 0, out + err
    assert "0 run(s) to do, 4 already finished" in out


def test_the_config_hash_tag_is_the_resolved_specs(grid):
    _, runs = grid
    run = runs["cifar10/gradattn-rope/2"]
    spec = RunSpec("cifar10", "gradattn-rope", seed=2)
    assert run.tags["config_hash"] != spec.config_hash()  # max_epochs and gradflow batches differ
    from bench.config.spec import GradFlowConfig, TrainConfig

    same = RunSpec("cifar10", "gradattn-rope", seed=2, train=TrainConfig(max_epochs=1), gradflow=GradFlowConfig(num_batches=1))
    assert run.tags["config_hash"] == same.config_hash()
