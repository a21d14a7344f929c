"""The report's statistics and checks on hand-made numbers (the report itself: test_report.py)."""

import math

import numpy as np
import pytest
from scipy import stats

from bench.results import references, significance
from bench.results.render import _fmt
from bench.results.rows import published_results


def test_t_interval_is_students_with_n_minus_one_degrees_of_freedom():
    values = [92.0, 94.0, 92.5]
    mean, half = significance.t_interval(values)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert (mean - half, mean + half) == pytest.approx((low, high))
    assert math.isnan(significance.t_interval([90.0])[1])


def test_paired_over_seeds_gives_p_only_from_three_pairs():
    ours, base = {1: 92.0, 2: 94.0, 3: 92.5, 9: 50.0}, {1: 90.0, 2: 91.0, 3: 89.0}
    three = significance.paired_over_seeds(ours, base)
    assert three.pairs == 3 and three.p == pytest.approx(stats.ttest_rel([92, 94, 92.5], [90, 91, 89]).pvalue)
    two = significance.paired_over_seeds({1: 92.0, 2: 94.0}, base)
    assert two.pairs == 2 and math.isnan(two.p) and two.low < two.delta < two.high
    constant = significance.paired_over_seeds({1: 91.0, 2: 92.0, 3: 90.0}, base)
    assert math.isnan(constant.p) and "undefined" in constant.test  # not the p = 0.000 of a constant shift
    assert significance.paired_over_seeds({5: 1.0}, base) is None


def test_exact_mcnemar_is_a_binomial_test_of_the_discordant_pairs():
    rng = np.random.default_rng(3)
    ours, base = rng.random(200) < 0.8, rng.random(200) < 0.7
    b, c = int(np.sum(ours & ~base)), int(np.sum(~ours & base))
    assert significance.mcnemar_exact(ours, base) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)
    assert significance.mcnemar_exact(ours, ours) == 1.0


def test_paired_bootstrap_is_reproducible_and_brackets_the_observed_difference():
    rng = np.random.default_rng(4)
    ours, base = rng.random(300) < 0.8, rng.random(300) < 0.7
    comparison = significance.paired_over_examples(ours, base)
    assert comparison.low < comparison.delta < comparison.high
    assert (comparison.low, comparison.high) == significance.paired_bootstrap(ours, base)


def _bootstrap_in_one_draw(ours, base, samples=significance.BOOTSTRAP_SAMPLES):
    """The interval as paired_bootstrap first computed it: every resample drawn at once (resamples x n)."""
    rng = np.random.default_rng(significance.BOOTSTRAP_SEED)
    diff = ours.astype(float) - base.astype(float)
    draws = rng.integers(0, diff.size, size=(samples, diff.size))
    means = 100 * diff[draws].mean(axis=1)
    tail = 100 * (1 - significance.LEVEL) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


@pytest.mark.parametrize(
    "n, samples",
    [(1, 2000), (37, 2000), (300, 2000), (5_000, 2000), (2_000_000, 3)],  # the last: one resample per chunk
)
def test_paired_bootstrap_in_chunks_gives_the_one_draw_interval_exactly(n, samples):
    rng = np.random.default_rng(n)
    ours, base = rng.random(n) < 0.8, rng.random(n) < 0.7
    assert significance.paired_bootstrap(ours, base, samples) == _bootstrap_in_one_draw(ours, base, samples)


def test_paired_bootstrap_memory_does_not_grow_with_resamples_times_examples():
    import tracemalloc

    rng = np.random.default_rng(5)
    n = 200_000  # one draw of 2,000 resamples would hold 3.2 GB of indices and 3.2 GB of differences
    ours, base = rng.random(n) < 0.8, rng.random(n) < 0.7
    tracemalloc.start()
    try:
        significance.paired_bootstrap(ours, base)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6


def test_holm_adjusts_within_the_family_and_ignores_missing_p():
    adjusted = significance.holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert significance.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize(
    "dataset, top1, flagged",
    [("cifar10", 14.07, True), ("fashionmnist", 64.11, True), ("cifar10", 85.0, False), ("bloodmnist", 95.97, False), ("unknown", 1.0, False)],
)
def test_a_baseline_far_below_the_literature_is_flagged(dataset, top1, flagged):
    # the notebooks' CIFAR-10 and FashionMNIST ResNet-18 figures (protocol 7.1) are the ones to catch
    assert (references.baseline_warning(dataset, top1) is not None) == flagged


def test_every_reference_has_a_source_and_every_dataset_a_reference():
    from bench import data

    table = references.table()
    assert set(data.names()) - {"synthetic"} <= set(table)
    assert all(r.source and (r.top1 is None or 0 < r.top1 < 100) for r in table.values())
    # a row without a published figure says so, is not "approximate", and never warns
    assert all(not r.approximate and references.baseline_warning(r.dataset, 1.0) is None
               for r in table.values() if r.top1 is None)


def test_val_at_chance_while_train_accuracy_rose():
    # CIFAR-10's notebook ResNet-18 sat near 10 % validation accuracy while training rose (protocol 7.1)
    assert references.at_chance_while_training(0.12, [0.2, 0.35, 0.52], 10)
    assert not references.at_chance_while_training(0.60, [0.2, 0.35, 0.52], 10)
    assert not references.at_chance_while_training(0.10, [0.2, 0.21], 10)  # nothing learnt at all: another problem


def test_published_results_are_package_data_for_every_dataset():
    published = published_results()
    assert published.dataset.notna().all() and published.model.notna().all()
    assert set(published.dataset) == {"cifar10", "fashionmnist", "svhn", "bloodmnist", "tissuemnist", "pcam", "pad-ufes-20", "tiny-imagenet"}
    assert len(published) == 36  # current notebooks plus Tiny ImageNet 2025, superseded runs left out


def test_no_negative_zero():
    assert _fmt(-1e-13) == "0.00" and _fmt(-1e-13, sign=True) == "+0.00" and _fmt(math.nan) == ""
