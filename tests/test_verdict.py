"""The verdict across datasets and the per-dataset statistics it rests on, on real MLflow stores:
one of runs the tests' small models trained on digits, synthetic data and a folder of images, one of
runs logged as the runner logs them (modes, baselines, failed seeds, single seeds), without training."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support import TINY_MODEL, cli, isolated_catalogue, log_finished_run, store_args

import bench as bench_api
from bench import tracking
from bench.config.spec import RunSpec
from bench.results import significance, verdict
from bench.results.cost import CostRatio
from bench.results.rows import Options, comparison_table
from bench.results.runs import collect_runs

SEEDS = (1, 2, 3)


# -- the verdict's numbers against a direct computation, on runs that trained --------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tiny and tiny-wide, three seeds each, on digits, synthetic data and a folder of images."""
    from data_fixtures import write_image_folder

    root = tmp_path_factory.mktemp("trained")
    store = {"uri": f"sqlite:///{root / 'mlflow.db'}", "checkpoints": root / "checkpoints", "data": root / "data", "root": root}
    write_image_folder(root / "shapes", per_class=12, size=16)
    args = ["--datasets", f"digits,synthetic,folder:{root / 'shapes'}", "--models", "tiny,tiny-wide", "--seeds", "1,2,3",
            "--max-epochs", "2", "--set", "gradflow.num_batches=1", "--no-log-model", "--no-system-metrics", *TINY_MODEL]
    with isolated_catalogue():  # in this process (the inline backend): 18 tiny runs, no worker to start for each
        found = bench_api.run(
            datasets=args[1], models="tiny,tiny-wide", seeds="1,2,3", max_epochs=2, settings={"gradflow.num_batches": 1},
            log_model=False, system_metrics=False, plugins=TINY_MODEL[1], backend="inline", progress=False,
            tracking_uri=store["uri"], checkpoint_dir=str(store["checkpoints"]), data_dir=str(store["data"]), experiment="test",
        )
    assert found.attrs["exit_code"] == 0 and len(found) == 18, found.to_string()
    store["args"] = args
    return store


def _reference(runs: pd.DataFrame, model: str, baseline: str):
    """P(improvement), IQM of normalised scores and mean ranks, written out directly (rliable's definitions)."""
    datasets = sorted(set(runs[runs.model == model].dataset) & set(runs[runs.model == baseline].dataset))
    poi = []
    for dataset in datasets:
        x = runs[(runs.model == model) & (runs.dataset == dataset)].score.to_numpy()
        y = runs[(runs.model == baseline) & (runs.dataset == dataset)].score.to_numpy()
        poi.append(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y) / (len(x) * len(y)))

    def iqm(name):
        values = []
        for dataset in datasets:
            part = runs[(runs.model == name) & (runs.dataset == dataset)]
            chance = 100 / part.num_classes.iloc[0]
            values += list((part.score - chance) / (100 - chance))
        values = np.sort(values)
        cut = int(math.floor(0.25 * len(values)))
        return float(np.mean(values[cut : len(values) - cut]))

    means = runs.groupby(["dataset", "model"]).score.mean()
    ranks = {m: np.mean([stats.rankdata([-means[(d, n)] for n in (model, baseline)])[i] for d in datasets])
             for i, m in enumerate((model, baseline))}
    differences = [means[(d, model)] - means[(d, baseline)] for d in datasets]
    return np.mean(poi), iqm(model), iqm(baseline), ranks, differences


@pytest.mark.slow  # trains the module's runs (about 20 s)
def test_the_verdict_equals_a_direct_computation(trained, tmp_path, capsys):
    code, out, err = cli(capsys, "report", "--tracking-uri", trained["uri"], "--experiment", "test", "--baseline", "tiny",
                         "--out", str(tmp_path / "report"))
    assert code == 0, out + err
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert len(runs) == 18 and runs.dataset.nunique() == 3
    found = pd.read_csv(tmp_path / "report" / "verdict.csv").iloc[0]
    poi, iqm, iqm_base, ranks, differences = _reference(runs, "tiny-wide", "tiny")
    assert (found.model, found.baseline, found.datasets) == ("tiny-wide", "tiny", 3)
    assert found.p_improvement == pytest.approx(poi, abs=1e-9)
    assert found.iqm == pytest.approx(iqm, abs=1e-9) and found.iqm_baseline == pytest.approx(iqm_base, abs=1e-9)
    assert found["rank"] == pytest.approx(ranks["tiny-wide"], abs=1e-9) and found.rank_baseline == pytest.approx(ranks["tiny"], abs=1e-9)
    assert found.p_improvement_low <= found.p_improvement <= found.p_improvement_high
    nonzero = [d for d in differences if abs(d) > 1e-9]
    assert found.wilcoxon_p == pytest.approx(stats.wilcoxon(nonzero, method="exact").pvalue, abs=1e-9)
    assert found.better == sum(d > 1e-9 for d in differences) and found.worse == sum(d < -1e-9 for d in differences)
    assert found.verdict.startswith("tiny-wide vs tiny on 3 datasets, 3 seeds each: P(improvement) ")
    assert "no p below 0.25 is possible" in found.verdict  # three datasets cannot give an exact p under 1/4
    assert "## Across datasets" in out and found.verdict in out
    assert (tmp_path / "report" / "verdict.png").stat().st_size > 0


@pytest.mark.slow  # trains the module's runs (about 20 s)
def test_the_report_sets_each_rows_cost_beside_its_score(trained, tmp_path, capsys):
    code, out, err = cli(capsys, "report", "--tracking-uri", trained["uri"], "--experiment", "test", "--baseline", "tiny",
                         "--out", str(tmp_path))
    assert code == 0, out + err
    runs, table = pd.read_csv(tmp_path / "runs.csv"), pd.read_csv(tmp_path / "results.csv")
    for column in ("parameters", "gflops", "train_images_per_s", "peak_memory_mib", "train_time_s"):
        means = runs.groupby(["dataset", "model"])[column].mean()
        assert all(row[f"{column}_mean"] == pytest.approx(means[(row["dataset"], row["model"])]) for row in table.to_dict("records"))
    assert "### Cost" in out and "GFLOPs/image" in out
    assert (tmp_path / "cost_front.png").stat().st_size > 0
    found = pd.read_csv(tmp_path / "verdict.csv").iloc[0]
    rows = {(r["dataset"], r["model"]): r for r in table.to_dict("records")}
    ratios = [rows[(d, "tiny-wide")]["parameters_mean"] / rows[(d, "tiny")]["parameters_mean"] for d in found.dataset_names.split(",")]
    assert found.parameters_ratio == pytest.approx(np.exp(np.mean(np.log(ratios))))
    assert found.parameters_ratio > 1 and found.flops_ratio > 1
    assert f"; at +{100 * (found.parameters_ratio - 1):.0f} % parameters, +{100 * (found.flops_ratio - 1):.0f} % FLOPs" in found.verdict


@pytest.mark.slow  # trains the module's runs (about 20 s)
def test_balanced_accuracy_as_the_metric(trained, tmp_path, capsys):
    code, out, err = cli(capsys, "report", "--tracking-uri", trained["uri"], "--experiment", "test", "--metric", "balanced_acc",
                         "--baseline", "tiny", "--out", str(tmp_path))
    assert code == 0, out + err
    table = pd.read_csv(tmp_path / "results.csv")
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert (runs.score == runs.balanced).all() and not (runs.score == runs.top1).all()
    first = table.iloc[0]
    assert first.score_mean == pytest.approx(runs[(runs.dataset == first.dataset) & (runs.model == first.model)].balanced.mean())
    assert "balanced accuracy % (mean [95% CI])" in out


@pytest.mark.slow  # trains the module's runs (about 20 s)
def test_report_files_are_readable_as_the_umask_allows(trained, tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        code, out, err = cli(capsys, "report", "--tracking-uri", trained["uri"], "--experiment", "test", "--out", str(tmp_path))
    finally:
        os.umask(previous)
    assert code == 0, out + err
    written = [p for p in tmp_path.iterdir() if p.is_file()]
    assert len(written) >= 8 and {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o644}


@pytest.mark.slow  # trains the module's runs (about 20 s)
def test_an_analysis_setting_does_not_retrain_a_finished_run(trained, capsys):
    args = [a for a in trained["args"]]
    args[args.index("gradflow.num_batches=1")] = "gradflow.num_batches=3"
    code, out, err = cli(capsys, "run", *args, "--set", "gradflow.mode=eval", "--set", "train.restore_best=false", *store_args(trained))
    assert code == 0, out + err
    assert "0 run(s) to do, 18 already finished" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, says",
    [
        (["--metric", "accuracy_please"], "No run of experiment 'test' logged test/accuracy_please; choose --metric from:"),
        (["--metric", "ece"], "--metric ece: lower is better for ece"),
        (["--baseline", "resnet18"], "--baseline resnet18 has no finished runs in this experiment; choose from: tiny, tiny-wide."),
        (["--baseline", "tiny", "--primary", "cbam18"], "--primary cbam18 has no finished runs in this experiment"),
        (["--experiment", "empty"], "Experiment 'empty' has no finished runs; start some with `bench run` first."),
    ],
)
def test_bad_report_options_are_one_sentence_and_exit_2(trained, tmp_path, capsys, options, says):
    base = ["--tracking-uri", trained["uri"], "--experiment", "test", "--out", str(tmp_path)]
    code, out, err = cli(capsys, "report", *base, *options)
    assert code == 2, out + err
    assert err.startswith(f"error: {says}") and len(err.strip().splitlines()) == 1, err


# -- per-dataset statistics, on logged records -----------------------------------------------------------


def _store(tmp_path):
    store = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "root": tmp_path}
    return store, tracking.prepare(store["uri"], "verdict")


PROTOCOL = {"resnet18": (80.0, 81.0, 79.5), "gradattn-rope": (82.0, 84.0, 82.5), "gradattn-lpe": (81.0, 80.0, 82.0)}


def _table(store, **options):
    runs, unfinished = collect_runs(store["uri"], "verdict", Options(**options).metric)
    return comparison_table(runs, None, unfinished, Options(**options))


def test_notebook_rows_leave_the_protocol_rows_adjusted_p_unchanged(tmp_path):
    store, exp_id = _store(tmp_path)
    for model, scores in PROTOCOL.items():
        for seed, score in zip(SEEDS, scores):
            log_finished_run(store, exp_id, RunSpec("cifar10", model, seed=seed), score)
    before = _table(store).set_index("model").p_holm
    for model, scores in {"resnet18": (50.0, 52.0, 49.0), "gradattn-nope": (12.0, 14.0, 11.0), "gradattn-rope": (20.0, 25.0, 21.0)}.items():
        for seed, score in zip(SEEDS, scores):
            log_finished_run(store, exp_id, RunSpec("cifar10", model, seed=seed, preprocessing="notebook"), score)
    after = _table(store)
    protocol = after[after["mode"] == "protocol"].set_index("model").p_holm
    assert protocol["gradattn-rope"] == before["gradattn-rope"] and protocol["gradattn-lpe"] == before["gradattn-lpe"]
    # the protocol family holds the two protocol rows' t-tests: Holm over exactly those
    raw = {m: stats.ttest_rel(PROTOCOL[m], PROTOCOL["resnet18"]).pvalue for m in ("gradattn-rope", "gradattn-lpe")}
    assert protocol["gradattn-rope"] == pytest.approx(significance.holm(list(raw.values()))[0])


def test_a_constant_difference_of_whole_examples_gives_no_tiny_p():
    examples = 270
    base = {seed: 100 * correct / examples for seed, correct in zip(SEEDS, (250, 253, 247))}
    ours = {seed: 100 * (round(base[seed] * examples / 100) + 5) / examples for seed in SEEDS}
    comparison = significance.paired_over_seeds(ours, base)
    assert not comparison.p < 1e-10 and "the same for every seed" in comparison.test
    assert comparison.delta == pytest.approx(100 * 5 / examples)


def test_failed_and_diverged_seeds_are_counted_in_their_row(tmp_path):
    store, exp_id = _store(tmp_path)
    for seed, score in zip(SEEDS, PROTOCOL["resnet18"]):
        log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=seed), score)
    log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=4), 0, status="FAILED", tags={"failure": "RuntimeError: out of memory"})
    log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=5), 0, status="FAILED", tags={"failure": "Diverged: Training diverged"})
    log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=6), 0, status="KILLED")
    row = _table(store).iloc[0]
    assert (row.n, row.seeds_finished, row.seeds_failed, row.seeds_diverged, row.seeds_interrupted) == (3, 3, 1, 1, 1)
    assert "seeds not finished: 1 failed, 1 diverged, 1 interrupted" in row.warnings


def test_one_seed_rows_carry_the_test_set_interval_in_table_and_figure(tmp_path):
    from bench.results.figures import plot_comparison
    from bench.results.render import to_markdown
    from bench.results.rows import health_table

    store, exp_id = _store(tmp_path)
    log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=1), 97.5, tags={"test_examples": "270"})
    log_finished_run(store, exp_id, RunSpec("cifar10", "gradattn-rope", seed=1), 96.0, tags={"test_examples": "270"})
    runs, unfinished = collect_runs(store["uri"], "verdict")
    table = comparison_table(runs, None, unfinished)
    row = table.set_index("model").loc["resnet18"]
    low, high = significance.wilson(round(0.975 * 270), 270)
    assert (row.score_low, row.score_high) == (pytest.approx(low), pytest.approx(high))
    assert row.interval == "one seed: Wilson over 270 test examples" and low < 97.5 < high
    markdown = to_markdown(table, health_table(runs))
    assert f"97.50 [{low:.2f}, {high:.2f}] ¹" in markdown and "A single seed measures one training run" in markdown
    assert "**" not in markdown  # the intervals overlap: no row is bold
    legend = plot_comparison(table, runs, tmp_path / "figure.png")
    assert "protocol mode: one seed, 95% test-set interval (Wilson)" in legend


def test_wilson_matches_its_formula_at_known_points():
    low, high = significance.wilson(50, 100)
    assert (round(low, 2), round(high, 2)) == (40.38, 59.62)
    low, high = significance.wilson(100, 100)
    assert high == pytest.approx(100) and round(low, 2) == 96.30


def test_attention_baselines_and_a_primary_declared_before_the_runs(tmp_path, capsys):
    store, exp_id = _store(tmp_path)
    scores = {"senet18": (80.0, 81.0, 79.0), "cbam18": (81.0, 80.0, 80.5), "gradattn-rope": (82.0, 81.5, 83.0), "gradattn-nope": (79.0, 80.0, 78.0)}
    for dataset in ("cifar10", "svhn", "fashionmnist"):
        for model, values in scores.items():
            for seed, score in zip(SEEDS, values):
                log_finished_run(store, exp_id, RunSpec(dataset, model, seed=seed), score, tags={"primary": "gradattn-rope"})
    code, out, err = cli(capsys, "report", "--tracking-uri", store["uri"], "--experiment", "verdict", "--baseline", "senet18",
                         "--baseline", "cbam18", "--out", str(tmp_path / "out"))
    assert code == 0, out + err
    found = pd.read_csv(tmp_path / "out" / "verdict.csv")
    rope = found[found.model == "gradattn-rope"]
    assert set(rope.baseline) == {"senet18", "cbam18"} and set(rope.role) == {"primary"}
    assert set(found[found.model == "gradattn-nope"].role) == {"exploratory"}
    assert "Primary comparison: gradattn-rope (declared in the study file before the runs)" in out
    assert "[exploratory] gradattn-nope vs senet18 on 3 datasets" in out
    versus = rope.set_index("baseline").loc["senet18"]
    assert versus.better == 3 and versus.p_improvement == pytest.approx(np.mean([
        sum(a > b for a in scores["gradattn-rope"] for b in scores["senet18"]) / 9] * 3))
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert rows[rows.model == "senet18"].delta.isna().all()  # the first --baseline is the rows' Δ
    assert json.loads(rows.settings.iloc[0])  # the settings that group a row are recorded with it


def test_a_study_files_primary_is_recorded_on_its_runs(tmp_path):
    from bench.config import studyfile

    study = tmp_path / "s.toml"
    study.write_text('primary = "gradattn-rope"\n[[grid]]\ndatasets = ["digits"]\nmodels = ["resnet18", "gradattn-rope"]\n')
    assert studyfile.load(study).primary == "gradattn-rope"
    study.write_text('primary = "vit"\n[[grid]]\ndatasets = ["digits"]\nmodels = ["resnet18"]\n')
    with pytest.raises(Exception, match="primary = 'vit' is not a model of its grid"):
        studyfile.load(study)


def test_runs_logged_under_the_hash_before_analysis_settings_left_it_are_found(tmp_path):
    from bench.execution import planning

    store, exp_id = _store(tmp_path)
    spec = RunSpec("digits", "resnet18", seed=1)
    new, legacy = spec.config_hashes()
    assert new != legacy
    log_finished_run(store, exp_id, spec, 97.0, tags={"config_hash": legacy})
    plan = planning.plan_runs([spec], store["uri"], exp_id, "cpu")
    assert plan.tasks == [] and len(plan.skipped) == 1


def test_the_verdict_sentence_says_what_was_shown():
    shown = verdict.Comparison(
        "gradattn-rope", "resnet18", "protocol", ["a"] * 8, [3] * 8, verdict.Estimate(0.61, 0.48, 0.74),
        verdict.Estimate(0.5, 0.4, 0.6), verdict.Estimate(0.5, 0.4, 0.6), verdict.Estimate(1.5, 1, 2), verdict.Estimate(1.5, 1, 2),
        verdict.SignedRank(8, 5, 3, 0, 0.25, "exact", 2 / 256), "primary",
    )
    assert shown.sentence() == ("gradattn-rope vs resnet18 on 8 datasets, 3 seeds each: P(improvement) 0.61 [0.48, 0.74], "
                                "better on 5 of 8 (Wilcoxon p = 0.25): not shown to help")
    shown.cost = CostRatio(1.149, 1.21, 1.34)
    assert shown.sentence().endswith("not shown to help; at +15 % parameters, +21 % FLOPs, 1.3 times the training time")


def test_seeds_on_different_hardware_are_flagged(tmp_path):
    store, exp_id = _store(tmp_path)
    for seed, cpu in zip(SEEDS, ("AMD EPYC 7B13", "AMD EPYC 7B13", "Intel Xeon 8481C")):
        log_finished_run(store, exp_id, RunSpec("cifar10", "resnet18", seed=seed), 80.0 + seed, tags={"env.cpu": cpu})
    assert "seeds ran on different hardware or software" in _table(store).iloc[0].warnings


def test_how_many_seeds_follows_the_paired_t_power_formula(tmp_path):
    from bench.results.across import across_datasets

    store, exp_id = _store(tmp_path)
    for model, scores in (("resnet18", PROTOCOL["resnet18"]), ("gradattn-rope", PROTOCOL["gradattn-rope"])):
        for seed, score in zip(SEEDS, scores):
            log_finished_run(store, exp_id, RunSpec("cifar10", model, seed=seed), score)
    runs, unfinished = collect_runs(store["uri"], "verdict")
    table = comparison_table(runs, None, unfinished)
    seeds = across_datasets(runs, table, Options()).seeds.iloc[0]
    pooled = math.sqrt((np.var(PROTOCOL["resnet18"], ddof=1) + np.var(PROTOCOL["gradattn-rope"], ddof=1)) / 2)
    expected = (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) * math.sqrt(2) * pooled / math.sqrt(3)
    assert seeds.pooled_seed_sd == pytest.approx(pooled) and seeds.resolvable_difference == pytest.approx(expected)
    observed = np.mean(PROTOCOL["gradattn-rope"]) - np.mean(PROTOCOL["resnet18"])
    needed = seeds.seeds_needed
    assert verdict.resolvable_difference(pooled, needed) <= observed < verdict.resolvable_difference(pooled, needed - 1)


def test_one_seed_per_dataset_gives_no_interval_across_datasets(tmp_path):
    from bench.results.across import across_datasets

    store, exp_id = _store(tmp_path)
    for dataset in ("cifar10", "svhn"):
        log_finished_run(store, exp_id, RunSpec(dataset, "resnet18", seed=1), 80.0)
        log_finished_run(store, exp_id, RunSpec(dataset, "gradattn-rope", seed=1), 81.0)
    runs, unfinished = collect_runs(store["uri"], "verdict")
    comparison = across_datasets(runs, comparison_table(runs, None, unfinished), Options()).comparisons[0]
    assert comparison.improvement.value == 1.0 and math.isnan(comparison.improvement.low)
    assert "P(improvement) 1.00 [no interval: one seed]" in comparison.sentence()
    assert "one seed measures one training run, not the architecture" in comparison.sentence()


def test_two_configurations_of_a_model_are_compared_apart(tmp_path):
    from bench.config.spec import ModelConfig
    from bench.results.across import across_datasets

    store, exp_id = _store(tmp_path)
    for dataset in ("cifar10", "svhn"):
        for seed, score in zip(SEEDS, PROTOCOL["resnet18"]):
            log_finished_run(store, exp_id, RunSpec(dataset, "resnet18", seed=seed), score)
            log_finished_run(store, exp_id, RunSpec(dataset, "gradattn-rope", seed=seed), score + 2)
            log_finished_run(store, exp_id, RunSpec(dataset, "gradattn-rope", seed=seed, model_config=ModelConfig(d_model=64)), score - 2)
    runs, unfinished = collect_runs(store["uri"], "verdict")
    found = {c.model: c for c in across_datasets(runs, comparison_table(runs, None, unfinished), Options()).comparisons}
    assert set(found) == {"gradattn-rope (d_model=256)", "gradattn-rope (d_model=64)"}
    assert found["gradattn-rope (d_model=256)"].improvement.value == 1.0 and found["gradattn-rope (d_model=64)"].improvement.value == 0.0
