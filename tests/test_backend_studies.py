"""A depth-width study trains its trials on `--backend ray` and `--backend slurm` as on the local
backend: each trial a tracked run nested under the study's, its epochs in the live table."""

from __future__ import annotations

import re

import optuna
import pytest
from support import BACKEND_FLAGS, backend_ready, bench, store_args

from bench import tracking

NAME = "depth-width-digits-gradattn-rope"  # the study's default name: depth-width-DATASET-MODEL


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ray", "slurm"])
def test_a_depth_width_study_trains_its_trials_on_the_backend(backend, ready_store, request):
    backend_ready(backend, request)
    shape = ["--set", "space.num_layers=1,1", "--set", "space.d_model=16", "--set", "space.nhead=2", "--set", "space.ff_multiplier=1"]
    args = ["study", "depth-width", "--dataset", "digits", "--n-trials", "2", "--max-epochs", "1", "--set", "gradflow.num_batches=1",
            *shape, *BACKEND_FLAGS[backend], *store_args(ready_store, devices=None)]
    result = bench(*args, cwd=ready_store["root"], env={"NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{ready_store['root'] / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    experiment = tracking.experiment_id(ready_store["uri"], "test")
    runs = {r.run_id: r for r in tracking.runs_of(ready_store["uri"], experiment)}
    (parent,) = [r for r in runs.values() if r.tags.get("study_kind") == "depth-width"]
    assert parent.status == "FINISHED"
    for trial in trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.status == "FINISHED" and run.tags["optuna_state"] == "COMPLETE"
        assert run.tags["mlflow.parentRunId"] == parent.run_id and run.tags["device"] == "cpu"
        assert trial.value == pytest.approx(run.metrics["val/best_acc"])
    # each trial's epochs in the live table, by the trial's name, as bench run shows its runs
    for trial in trials:
        assert re.search(rf"^{NAME}/trial-{trial.number:03d} \[.*\] running: epoch 1/1 train loss", result.stdout, re.MULTILINE)
