"""`bench sensitivity` on finished digits runs: the threshold grid as a real Optuna study, scores
recomputed from the stored gradient-flow records, results logged to a real MLflow store."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from support import bench, cli, new_store, store_args

from bench import tracking
from bench.core.errors import BenchError
from bench.studies.sensitivity import ThresholdGrid

MODELS = ["resnet18", "gradattn-rope"]


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory, migrated_store):
    """Finished digits runs of two models, trained by the real `bench run` (one epoch each, one worker)."""
    root = tmp_path_factory.mktemp("sensitivity")
    store = new_store(root, migrated_store)
    result = bench(
        "run", "--datasets", "digits", "--models", ",".join(MODELS), "--max-epochs", "1", "--set", "gradflow.num_batches=2",
        "--jobs-per-device", "1", *store_args(store), cwd=root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    exp = tracking.experiment_id(store["uri"], "test")
    runs = {r.tags["model"]: r for r in tracking.runs_of(store["uri"], exp, status=tracking.FINISHED)}
    assert sorted(runs) == sorted(MODELS)
    return SimpleNamespace(store=store, runs=runs, args=["--tracking-uri", store["uri"], "--experiment", "test"])


def _sensitivity_runs(store) -> list:
    exp = tracking.experiment_id(store["uri"], "test")
    return [r for r in tracking.runs_of(store["uri"], exp) if r.tags.get("study_kind") == "sensitivity"]


@pytest.mark.slow
def test_default_grid_reproduces_the_logged_scores_at_the_protocol_pair(digits_runs, capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "sensitivity", "digits", *digits_runs.args, "--out", str(out))
    assert code == 0, err
    table = pd.read_csv(out / "digits" / "sensitivity.csv")
    assert len(table) == 16 * len(MODELS)
    assert list(dict.fromkeys(table["model"])) == MODELS  # catalogue order
    at_protocol = table[(table.vanishing == 1e-6) & (table.exploding == 10.0)].set_index("model")
    assert at_protocol["protocol_pair"].all()
    for model, run in digits_runs.runs.items():
        logged = run.metrics
        row = at_protocol.loc[model]
        # exactly what the runs logged (both formulas and the verdict counts), without retraining
        assert row["health"] == logged["gradflow/health"]
        assert row["health_notebook"] == logged["gradflow/health_notebook"]
        assert row["n_vanishing"] == logged["gradflow/vanishing_layers"]
        assert row["n_exploding"] == logged["gradflow/exploding_layers"]
    # the grid is an Optuna study (GridSampler) in the default storage beside the MLflow store
    (run,) = _sensitivity_runs(digits_runs.store)
    storage = f"sqlite:///{digits_runs.store['root'] / 'optuna.db'}"
    study = optuna.load_study(study_name=run.tags["optuna_study"], storage=storage)
    pairs = {(t.params["vanishing"], t.params["exploding"]) for t in study.trials}
    assert len(study.trials) == 16 and pairs == set(ThresholdGrid().pairs)
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    protocol_trial = next(t for t in study.trials if (t.params["vanishing"], t.params["exploding"]) == (1e-6, 10.0))
    assert protocol_trial.user_attrs["models"]["resnet18"]["health"] == digits_runs.runs["resnet18"].metrics["gradflow/health"]
    # the sensitivity run links its sources and holds the table and figures
    assert run.status == tracking.FINISHED
    assert set(run.tags["source_run_ids"].split(",")) == {r.run_id for r in digits_runs.runs.values()}
    assert run.tags["source_run.resnet18"] == digits_runs.runs["resnet18"].run_id
    files = set(tracking.list_artifacts(digits_runs.store["uri"], run.run_id, "sensitivity"))
    expected = {"sensitivity.csv", "sensitivity.md", "ranking.png", "sources.json", *(f"heatmap_{m}.png" for m in MODELS)}
    assert {f"sensitivity/{name}" for name in expected} == files
    assert all((out / "digits" / name).stat().st_size > 0 for name in expected - {"sources.json"})
    assert "## Health score (%)" in stdout
    # the same command again reuses the finished grid study instead of adding trials
    code, _, err = cli(capsys, "sensitivity", "digits", *digits_runs.args, "--out", str(out))
    assert code == 0, err
    assert len(optuna.load_study(study_name=study.study_name, storage=storage).trials) == 16
    assert len(_sensitivity_runs(digits_runs.store)) == 1


def _mean_norms(store, run) -> dict[str, float]:
    path = tracking.download_artifact(store["uri"], run.run_id, "gradflow/gradflow.json", store["root"] / "dl" / run.run_id)
    records = json.loads(path.read_text())["records"]
    return {name: float(np.mean(norms)) for name, norms in records.items() if norms}


@pytest.mark.slow
def test_verdicts_move_with_the_thresholds_for_the_named_run(digits_runs, capsys, tmp_path):
    run = digits_runs.runs["gradattn-rope"]
    norms = _mean_norms(digits_runs.store, run)
    # thresholds taken from the data, so both verdicts actually occur
    values = sorted(norms.values())
    vanishing, exploding = values[len(values) // 4], values[3 * len(values) // 4]
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "sensitivity", "digits", "--run-id", run.run_id, "--vanishing", f"{vanishing!r},1e-6",
        "--exploding", f"{exploding!r},10", *digits_runs.args, "--out", str(out),
    )
    assert code == 0, err
    table = pd.read_csv(out / "digits" / "sensitivity.csv")
    assert set(table["model"]) == {"gradattn-rope"}  # only the named run
    row = table[(table.vanishing == vanishing) & (table.exploding == exploding)].iloc[0]
    n_vanishing = sum(v < vanishing for v in norms.values())
    n_exploding = sum(v > exploding for v in norms.values())
    assert (row.n_vanishing, row.n_exploding, row.n_layers) == (n_vanishing, n_exploding, len(norms))
    assert n_vanishing > 0 and n_exploding > 0
    assert row.health == pytest.approx((len(norms) - n_vanishing - n_exploding) / len(norms))
    protocol = table[(table.vanishing == 1e-6) & (table.exploding == 10)].iloc[0]
    assert protocol.health == run.metrics["gradflow/health"]


@pytest.mark.slow
def test_a_dataset_without_finished_runs_says_which_run_to_start(digits_runs, capsys, tmp_path):
    code, _, err = cli(capsys, "sensitivity", "synthetic", *digits_runs.args, "--out", str(tmp_path))
    assert code == 2
    assert "bench run --datasets synthetic --models all" in err


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--vanishing", "1e-6,abc"], "--vanishing must be a comma-separated list"),
        (["--exploding", ""], "--exploding needs at least one"),
        (["--vanishing", "-1e-6"], "positive"),
        (["--vanishing", "1e-6,20"], "below every exploding"),
        (["--exploding", "10,inf"], "positive finite numbers"),
        (["--run-id", "0123456789abcdef"], "not in the tracking store"),
    ],
)
def test_bad_thresholds_and_runs_exit_2(ready_store, capsys, tmp_path, options, fragment):
    # checked before any run is read: an empty store will do
    args = ["--tracking-uri", ready_store["uri"], "--experiment", "test", "--out", str(tmp_path)]
    code, _, err = cli(capsys, "sensitivity", "digits", *options, *args)
    assert code == 2
    assert fragment in err


@pytest.mark.slow
def test_a_run_of_another_dataset_is_refused(digits_runs, capsys, tmp_path):
    run = digits_runs.runs["resnet18"]
    code, _, err = cli(capsys, "sensitivity", "svhn", "--run-id", run.run_id, *digits_runs.args, "--out", str(tmp_path))
    assert code == 2 and "is a run of 'digits'" in err


def test_threshold_lists_are_sorted_and_deduplicated():
    grid = ThresholdGrid.parse("1e-5,1e-8,1e-5", "100,1")
    assert grid.vanishing == (1e-8, 1e-5) and grid.exploding == (1.0, 100.0)
    assert grid.pairs == [(1e-8, 1.0), (1e-8, 100.0), (1e-5, 1.0), (1e-5, 100.0)]
    with pytest.raises(BenchError):
        ThresholdGrid.parse("1e-6", "1e-7")
