"""`bench report` on a real MLflow store holding an experiment that mixes modes, settings, seed
counts and a broken baseline. The runs are real MLflow runs logged through our tracking adapter
with what a finished run logs (resolved params, tags, per-epoch and test metrics, the per-example
predictions artifact); the report only reads those records, so nothing here needs training."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support import N_TEST, bench, cli, log_finished_run

from bench import tracking
from bench.config.spec import ModelConfig, RunSpec, TrainConfig
from bench.results import significance
from bench.results.rows import comparison_table, health_table
from bench.results.runs import collect_runs

BASE = np.arange(N_TEST) < 20  # the notebook ResNet-18 gets the first 20 test examples right
NOPE = BASE.copy()
NOPE[[20, 21]] = True  # right where the baseline is wrong: b = 2
NOPE[[0, 1, 2, 3, 4, 5, 6, 7]] = False  # wrong where it is right: c = 8
PROTOCOL_BASE = {1: 80.0, 2: 81.0, 3: 79.5}
PROTOCOL_ROPE = {1: 82.0, 2: 84.0, 3: 82.5}
PROTOCOL_LPE = {1: 81.0, 2: 80.5}


@pytest.fixture(scope="module")
def report_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    store = {"uri": f"sqlite:///{root / 'mlflow.db'}", "root": root}
    exp_id = tracking.prepare(store["uri"], "mixed")
    for seed, top1 in PROTOCOL_BASE.items():
        log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=seed), top1)
    for seed, top1 in PROTOCOL_ROPE.items():
        log_finished_run(store, exp_id, RunSpec("cifar10", "gradattn-rope", seed=seed), top1)
    for seed, top1 in PROTOCOL_LPE.items():  # logged before metric sections: the report reads them alike
        log_finished_run(store, exp_id, RunSpec("cifar10", "gradattn-lpe", seed=seed), top1, flat_names=True)
    # the same seed under another max-epochs setting is another configuration
    short = RunSpec("cifar10", "gradattn-rope", seed=1, train=TrainConfig(max_epochs=2))
    log_finished_run(store, exp_id, short, 60.0)
    # notebook mode, one seed each; the baseline is broken: val at chance while train rises
    log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=1, preprocessing="notebook"), 100 * BASE.mean(),
             train_acc=(0.2, 0.4, 0.55), val_acc=(0.10, 0.11, 0.12), correct=BASE)
    log_finished_run(store, exp_id, RunSpec("cifar10", "gradattn-nope", seed=1, preprocessing="notebook"), 100 * NOPE.mean(), correct=NOPE)
    log_finished_run(store, exp_id, RunSpec("pad-ufes-20", "resnet18", seed=1), 58.0)
    # another split seed, official splits and a preset: each its own configuration
    log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=1, split_seed=7), 79.0)
    log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=1, splits="official"), 82.0)
    log_finished_run(store, exp_id, RunSpec("cifar10", "gradattn-nope", seed=1, model_config=ModelConfig(preset="nope-small")), 78.0)
    return store


@pytest.fixture(scope="module")
def table(report_store):
    from bench.results.runs import Predictions

    runs, unfinished = collect_runs(report_store["uri"], "mixed")
    return runs, comparison_table(runs, Predictions(report_store["uri"], report_store["root"] / "dl"), unfinished)


def _row(table, model, mode="protocol", **settings):
    rows = table[(table.model == model) & (table["mode"] == mode)]
    for key, value in settings.items():
        rows = rows[rows[key].astype(str) == str(value)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_every_configuration_is_its_own_row_with_the_differing_setting_as_a_column(table):
    runs, result = table
    assert len(runs) == 15 and len(result) == 10
    assert set(result["train.max_epochs"].astype(str)) == {"100", "2"}
    assert {"protocol, split seed 7", "official, split seed 42"} <= set(result.splits)
    preset = _row(result, "gradattn-nope")  # the protocol-mode preset run says what it changed
    assert preset.n == 1 and preset.other_settings == "d_model=32, dim_feedforward=2, nhead=16, preset=nope-small"
    assert _row(result, "gradattn-rope", **{"train.max_epochs": 100}).other_settings == ""
    assert _row(result, "gradattn-rope", **{"train.max_epochs": 2}).n == 1
    assert _row(result, "gradattn-rope", **{"train.max_epochs": 100}).n == 3
    assert set(result["mode"]) == {"protocol", "notebook"} and result.splits.str.fullmatch(r"\w+, split seed \d+").all()


def test_runs_logged_before_metric_sections_are_read_like_new_ones(table):
    runs, result = table
    lpe = runs[runs.model == "gradattn-lpe"]
    assert sorted(lpe.top1) == sorted(PROTOCOL_LPE.values())
    assert (lpe.top1_last == lpe.top1 - 1).all() and (lpe.health == 100).all() and (lpe.gradflow_batches == 20).all()
    assert _row(result, "gradattn-lpe").n == 2


def test_intervals_and_paired_t_with_holm_at_three_seeds(table):
    _, result = table
    rope = _row(result, "gradattn-rope", **{"train.max_epochs": 100})
    values = list(PROTOCOL_ROPE.values())
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert rope.score_mean == pytest.approx(np.mean(values)) and rope.score_high - rope.score_mean == pytest.approx(half)
    diffs = [PROTOCOL_ROPE[s] - PROTOCOL_BASE[s] for s in (1, 2, 3)]
    assert rope.delta == pytest.approx(np.mean(diffs))
    assert rope.delta_high - rope.delta_low == pytest.approx(2 * stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3))
    raw = stats.ttest_rel(list(PROTOCOL_ROPE.values()), list(PROTOCOL_BASE.values())).pvalue
    assert rope.p == pytest.approx(raw) and rope.test == significance.T_TEST
    # Holm's family is the rows compared with one baseline row by one test: the t-test of this row stands
    # alone (the notebook pair's McNemar compares with another baseline row, by another test)
    nope = _row(result, "gradattn-nope", mode="notebook")
    assert rope.p_holm == pytest.approx(rope.p) and nope.p_holm == pytest.approx(nope.p)
    assert rope.holm_family != nope.holm_family


def test_no_p_value_at_two_seeds_but_an_interval(table):
    _, result = table
    lpe = _row(result, "gradattn-lpe")
    assert lpe.n == 2 and math.isnan(lpe.p) and math.isnan(lpe.p_holm)
    assert lpe.delta_low < lpe.delta < lpe.delta_high and "needs n >= 3" in lpe.test


def test_a_single_seed_pair_gets_an_exact_mcnemar_and_a_bootstrap_interval(table):
    _, result = table
    nope = _row(result, "gradattn-nope", mode="notebook")
    assert nope.pairs == 1 and "McNemar" in nope.test
    assert nope.p == pytest.approx(2 * stats.binom.cdf(2, 10, 0.5))  # b = 2, c = 8
    assert nope.delta == pytest.approx(100 * (NOPE.mean() - BASE.mean()))
    assert nope.delta_low < nope.delta < nope.delta_high


def test_published_figures_sit_beside_the_rows_that_reproduce_them(table):
    _, result = table
    nope = _row(result, "gradattn-nope", mode="notebook")
    assert nope.reproduces and nope.published_row == 2 and nope.published == pytest.approx(12.12)
    rope = _row(result, "gradattn-rope", **{"train.max_epochs": 100})
    assert not rope.reproduces and rope.published == pytest.approx(12.51)


def test_the_broken_baseline_and_the_leaky_split_are_flagged(table):
    _, result = table
    broken = _row(result, "resnet18", mode="notebook")
    assert "far below the literature" in broken.warnings and "at chance" in broken.warnings
    assert _row(result, "resnet18", dataset="cifar10", splits="protocol, split seed 42", **{"train.max_epochs": 100}).warnings == ""
    pad = result[result.dataset == "pad-ufes-20"].iloc[0]
    assert "leaky" in pad.warnings


def test_health_table_is_grouped_like_the_comparison(table):
    runs, result = table
    health = health_table(runs)
    assert len(health) == len(result)
    assert list(zip(health.dataset, health.model, health["mode"])) == list(zip(result.dataset, result.model, result["mode"]))
    assert set(health.analysed) == {"20 x 128 train (train mode)", "20 x 128 test (train mode)"}


def test_bench_report_writes_every_file_without_crashing(report_store):
    out = report_store["root"] / "out"
    result = bench("report", "--tracking-uri", report_store["uri"], "--experiment", "mixed", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("results.md", "results.csv", "results.tex", "results.png", "gradient_health.csv", "runs.csv"):
        assert (out / name).stat().st_size > 0, name
    markdown = (out / "results.md").read_text()
    assert "train.max_epochs" in markdown and "(12.51) †" in markdown and "12.12 (row 2)" in markdown
    assert "exact McNemar" in markdown and "Holm" in markdown and "⚠" in markdown
    assert len(pd.read_csv(out / "results.csv")) == 10



def test_report_log_writes_the_files_to_one_report_run_that_no_reader_counts(report_store, capsys):
    uri, out = report_store["uri"], report_store["root"] / "logged"
    exp_id = tracking.experiment_id(uri, "mixed")
    trained = {run.run_id for run in tracking.grid_runs(uri, exp_id)}
    for _ in range(2):  # logged again: the same run, its files replaced
        code, stdout, stderr = cli(capsys, "report", "--tracking-uri", uri, "--experiment", "mixed", "--out", str(out), "--log")
        assert code == 0, stdout + stderr
        assert len(pd.read_csv(out / "results.csv")) == 10  # the report run is no configuration's seed
    (report,) = [run for run in tracking.runs_of(uri, exp_id) if run.run_id not in trained]
    assert report.name == "report" and report.status == tracking.FINISHED and report.tags[tracking.REPORT_TAG] == "true"
    assert {"results.md", "results.csv", "results.png", "verdict.csv"} <= set(tracking.list_artifacts(uri, report.run_id))
    assert {run.run_id for run in tracking.grid_runs(uri, exp_id)} == trained
    assert f"/#/experiments/{exp_id}/runs/{report.run_id}?workflowType=machine_learning" in stdout
