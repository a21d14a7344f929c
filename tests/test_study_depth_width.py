"""`bench study depth-width` on digits: real sqlite Optuna storage, a real sqlite MLflow store,
real training runs as trials, pruning, resuming, and two worker processes on one study."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest
from support import REPO, bench, cli, new_store, store_args

from bench import tracking
from bench.core.errors import BenchError
from bench.studies import depth_width as dw
from bench.studies import storage as study_storage
from bench.studies import summary

# A tiny space with a fixed dropout. With this sampler seed the first four (random) trials are
# (layers, d_model, heads, ff) = (2,16,2,1), (2,16,2,2), (1,16,2,2), (2,32,4,2). On two CPU slots
# trials 0 and 1 train together and complete; 2 and 3 start as they end and fall below the median
# of the completed ones by epoch 2 of 3, so they are pruned before their last epoch (checked below).
TINY_STUDY = """
model = "gradattn-rope"
n_trials = 4
[space]
num_layers = [1, 2]
d_model = [16, 32]
nhead = [2, 4]
ff_multiplier = [1, 2]
dropout = [0.1, 0.1]
[sampler]
n_startup_trials = 4
seed = 0
[pruner]
n_startup_trials = 1
n_warmup_steps = 0
[train]
max_epochs = 3
[gradflow]
num_batches = 1
"""
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
NAME = "depth-width-digits-gradattn-rope"


def _trial_runs(uri: str, experiment: str = "test") -> dict[int, object]:
    exp = tracking.experiment_id(uri, experiment)
    runs = tracking.runs_of(uri, exp)
    return {int(r.tags["trial_number"]): r for r in runs if "trial_number" in r.tags}


def _parent_runs(uri: str, experiment: str = "test") -> list:
    exp = tracking.experiment_id(uri, experiment)
    return [r for r in tracking.runs_of(uri, exp) if r.tags.get("study_kind") == "depth-width"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, migrated_store):
    """The 4-trial study, run once through the real CLI; a snapshot of it before other tests extend it."""
    root = tmp_path_factory.mktemp("depth_width")
    store = new_store(root, migrated_store)
    config = root / "tiny.toml"
    config.write_text(TINY_STUDY)
    args = ["study", "depth-width", "--dataset", "digits", "--config", str(config), "--jobs-per-device", "2", *store_args(store)]
    result = bench(*args, cwd=root, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    storage = f"sqlite:///{root / 'optuna.db'}"  # beside the sqlite MLflow store
    loaded = optuna.load_study(study_name=NAME, storage=storage)
    return SimpleNamespace(
        store=store, args=args, storage=storage, output=result.stdout,
        trials=loaded.get_trials(), runs=_trial_runs(store["uri"]), parents=_parent_runs(store["uri"]),
    )


# -- the first invocation --------------------------------------------------------------------------


@pytest.mark.slow
def test_four_trials_each_a_tracked_run_nested_under_the_study(study):
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert sorted(study.runs) == [0, 1, 2, 3]
    (parent,) = study.parents
    assert parent.status == tracking.FINISHED
    assert parent.tags["optuna_study"] == NAME and parent.tags["optuna_storage"] == study.storage
    for trial in study.trials:
        run = study.runs[trial.number]
        tags, params = run.tags, run.params
        assert trial.user_attrs["mlflow_run_id"] == run.run_id
        assert tags["mlflow.parentRunId"] == parent.run_id
        assert tags["optuna_study"] == NAME
        assert tags["optuna_state"] == trial.state.name
        assert {k: tags[f"optuna_param.{k}"] for k in trial.params} == {k: str(v) for k, v in trial.params.items()}
        # the sampled shape is what the run trained
        assert params["model_config.num_layers"] == str(trial.params["num_layers"])
        assert params["model_config.d_model"] == str(trial.params["d_model"])
        assert params["model_config.nhead"] == str(trial.params["nhead"])
        assert params["model_config.dim_feedforward"] == str(trial.params["ff_multiplier"] * trial.params["d_model"])
        # secondary attributes: parameter count (as the run logged it) and mean epoch time
        assert trial.user_attrs["parameters"] == int(tags["parameters"])
        assert trial.user_attrs["epoch_time_s"] > 0
        # per-epoch validation accuracy: reported to the trial and logged to the run
        history = dict(tracking.metric_history(study.store["uri"], run.run_id, "val/acc"))
        assert trial.intermediate_values == pytest.approx(history)


@pytest.mark.slow
def test_poor_trials_are_pruned_and_marked_in_mlflow(study):
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == len(study.trials)
    for trial in pruned:
        run = study.runs[trial.number]
        # stopped gracefully after an epoch before the last: the run ends KILLED, tagged PRUNED
        assert run.status == tracking.KILLED and run.tags["optuna_state"] == "PRUNED"
        last = max(trial.intermediate_values)
        assert sorted(trial.intermediate_values) == list(range(1, last + 1)) and last < 3
        assert trial.user_attrs["pruned_after_epoch"] == last and "test/top1" not in run.metrics
        assert trial.intermediate_values[last] < max(t.intermediate_values[last] for t in complete)
    for trial in complete:
        run = study.runs[trial.number]
        assert run.status == tracking.FINISHED and sorted(trial.intermediate_values) == [1, 2, 3]
        # objective = best validation accuracy
        assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
        assert trial.value == pytest.approx(run.metrics["val/best_acc"])


@pytest.mark.slow
def test_parent_run_holds_the_summary_artifacts(study):
    (parent,) = study.parents
    uri = study.store["uri"]
    files = set(tracking.list_artifacts(uri, parent.run_id, "study"))
    expected = {"trials.csv", "top_trials.csv", "top_trials.md", "best_trial.json", "importances.json", "config.json",
                "optimization_history.png", "parallel_coordinate.png"}
    assert {f"study/{name}" for name in expected} <= files
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    assert parent.tags["best_trial"] == str(best.number)
    assert parent.metrics["study/best_val_acc"] == pytest.approx(best.value)
    assert f"best trial {best.number}" in study.output
    # two or more completed trials (this sampler seed gives them): importances, and their figure
    assert len(complete) >= 2
    importances = tracking.download_artifact(uri, parent.run_id, "study/importances.json", study.store["root"] / "dl")
    document = json.loads(importances.read_text())
    assert document["note"] is None and set(document["importances"]) == {"num_layers", "d_model", "nhead", "ff_multiplier", "dropout"}
    assert "study/param_importances.png" in files


def test_importances_of_a_study_with_one_completed_trial_say_why_there_are_none():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert summary.importances(study) == ({}, "parameter importances need at least 2 completed trials; the study has 1")


# -- continuing the study -------------------------------------------------------------------------


@pytest.mark.slow
def test_running_again_with_two_workers_adds_distinct_trials_to_the_same_study(study):
    args = [*study.args, "--n-trials", "2", "--max-epochs", "1"]
    result = bench(*args, cwd=study.store["root"], env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = optuna.load_study(study_name=NAME, storage=study.storage).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5]  # the same study, two more trials
    assert all(t.state.is_finished() for t in trials)
    new = trials[4:]
    # two real worker processes pulled one trial each from the shared storage
    assert len({t.user_attrs["worker"] for t in new}) == 2
    assert not {t.user_attrs["worker"] for t in new} & {t.user_attrs["worker"] for t in trials[:4]}
    runs = _trial_runs(study.store["uri"])
    assert sorted(runs) == [0, 1, 2, 3, 4, 5]
    assert len({r.run_id for r in runs.values()}) == 6
    assert {t.user_attrs["mlflow_run_id"] for t in new} == {runs[4].run_id, runs[5].run_id}
    (parent,) = _parent_runs(study.store["uri"])  # the parent run is reused, not duplicated
    assert parent.run_id == study.parents[0].run_id
    assert {r.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.run_id}
    assert all(r.status in (tracking.FINISHED, tracking.KILLED) for r in runs.values())


# -- settings and storage, no training -----------------------------------------------------------------


def test_study_file_matches_the_builtin_defaults():
    assert dw.configure(dw.load(REPO / "studies" / "depth-width.toml")) == dw.DepthWidthStudy()
    space = dw.DepthWidthStudy().space
    assert (space.num_layers, space.d_model, space.nhead, space.ff_multiplier, space.dropout) == (
        (1, 6), (64, 128, 256, 512), (2, 4, 8), (1, 2, 4), (0.0, 0.3)
    )


def test_options_override_the_study_file(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('n_trials = 5\n[space]\nd_model = [16, 32]\n[train]\nlr = 0.01\n')
    values = dw.load(path) | dw.SCHEMA.parse(["space.d_model=32", "train.max_epochs=2"]) | {"dataset": "digits", "n_trials": 3}
    config = dw.configure(values)
    assert (config.dataset, config.n_trials, config.space.d_model, config.space.nhead) == ("digits", 3, (32,), (2, 4, 8))
    # the study's run defaults stay where the file and the options leave them
    assert config.settings == {"train.max_epochs": 2, "gradflow.num_batches": 5, "train.lr": 0.01} and config.name == NAME
    assert config.base_spec().train.lr == 0.01 and config.base_spec().gradflow.num_batches == 5


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[space]\nd_model = [64, 'wide']\n", "space.d_model \\(study file .*, table \\[space\\]\\) must be a list of integers"),
        ("[space]\nnum_layers = [1, 2, 3]\n", "space.num_layers .* must be a list of 2 integers"),
        ("[model]\nd_model = 64\n", "model .* must be text"),  # the study searches the transformer
        ("[gradflow]\nnum_batchs = 5\n", "Unknown setting gradflow.num_batchs .*such as gradflow.num_batches"),
        ("n_trial = 5\n", "Unknown key n_trial"),
    ],
)
def test_bad_study_files_name_the_file_and_table(tmp_path, text, fragment):
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(BenchError, match=fragment):
        dw.load(path)


def test_heads_are_checked_against_the_model():
    # RoPE needs an even head dimension: 12 / 4 = 3 is rejected there, but not without RoPE
    space = dw.SearchSpace(d_model=(12, 16), nhead=(2, 4, 8))
    rope = dw.valid_heads(dw.DepthWidthStudy(dataset="digits", space=space))
    nope = dw.valid_heads(dw.DepthWidthStudy(dataset="digits", model="gradattn-nope", space=space))
    assert rope == {12: (2,), 16: (2, 4, 8)}
    assert nope == {12: (2, 4), 16: (2, 4, 8)}
    # every default combination is valid
    assert dw.valid_heads(dw.DepthWidthStudy(dataset="digits")) == {d: (2, 4, 8) for d in (64, 128, 256, 512)}


def test_default_storage_sits_beside_a_sqlite_tracking_store():
    assert study_storage.default_storage("sqlite:////data/runs/mlflow.db") == "sqlite:////data/runs/optuna.db"
    assert study_storage.default_storage("sqlite:///mlflow.db") == "sqlite:///optuna.db"
    assert study_storage.default_storage("http://mlflow:5000") == "sqlite:///optuna.db"
    assert tracking.shown_uri("postgresql://bench:secret@db/optuna") == "postgresql://bench:***@db/optuna"  # one masking for both stores


def test_journal_storage_holds_a_study(tmp_path):
    url = f"journal:{tmp_path / 'shared' / 'optuna.log'}"
    study = study_storage.create_or_load(study_storage.open_storage(url), "s", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = study_storage.create_or_load(study_storage.open_storage(url), "s", direction="maximize")
    assert len(again.trials) == 2 and (tmp_path / "shared" / "optuna.log").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dataset", "digits", "--model", "resnet18"], "no transformer to search"),
        (["--dataset", "digits", "--set", "space.d_model=12", "--set", "space.nhead=8"], "No head count"),
        (["--dataset", "digits", "--set", "space.d_model=64,abc"], "space.d_model (command line: --set space.d_model=64,abc) must be a list of integers"),
        (["--dataset", "digits", "--set", "space.dropout=0,1.5"], "space.dropout (command line: --set space.dropout=0,1.5) must be below 1"),
        (["--dataset", "digits", "--set", "space.dropout=0.3,0.1"], "space.dropout range must satisfy low <= high"),
        (["--dataset", "digits", "--set", "model.d_model=64"], "Unknown setting model.d_model (command line: --set model.d_model=64): use one that `bench study depth-width --help` lists"),
        (["--dataset", "digits", "--n-trials", "0"], "--n-trials"),
        (["--dataset", "digits", "--study-name", "a b"], "Study name"),
        (["--model", "gradattn-rope"], "--dataset"),
        (["--dataset", "nosuchset"], "Unknown dataset"),
        (["--dataset", "digits", "--storage", "nosuchdb://x"], "Optuna storage"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, args, fragment):
    code, _, err = cli(capsys, "study", "depth-width", *args, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                    "--devices", "cpu", "--experiment", "test")
    assert code == 2
    assert fragment in err and err.startswith("error:")
