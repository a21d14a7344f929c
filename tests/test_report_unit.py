"""The comparison table's arithmetic on a hand-made set of runs (the CLI path is in test_grid)."""

import math

import pandas as pd
import pytest

from bench.report import comparison_table, published_results, to_latex, to_markdown, health_table


def _runs():
    rows = []
    for seed, (base, ours) in zip((1, 2, 3), ((90.0, 92.0), (91.0, 94.0), (89.0, 92.5))):
        rows.append({"dataset": "svhn", "model": "resnet18", "seed": seed, "preprocessing": "protocol", "top1": base, "health": 100.0, "health_notebook": 100.0, "vanishing": 0, "exploding": 0})
        rows.append({"dataset": "svhn", "model": "gradattn-rope", "seed": seed, "preprocessing": "protocol", "top1": ours, "health": 97.0, "health_notebook": 90.0, "vanishing": 1, "exploding": 0})
    return pd.DataFrame(rows)


def test_mean_std_delta_and_paired_test():
    from scipy import stats

    table = comparison_table(_runs()).set_index("model")
    rope = table.loc["gradattn-rope"]
    assert rope.top1_mean == pytest.approx((92 + 94 + 92.5) / 3)
    assert rope.top1_std == pytest.approx(pd.Series([92, 94, 92.5]).std(ddof=1))
    assert rope.n == 3
    assert rope.delta_vs_resnet18 == pytest.approx(rope.top1_mean - 90.0)
    assert rope.p_paired == pytest.approx(stats.ttest_rel([92, 94, 92.5], [90, 91, 89]).pvalue)
    assert bool(rope.best) and not bool(table.loc["resnet18"].best)
    assert math.isnan(table.loc["resnet18"].delta_vs_resnet18)
    # the published SVHN figures sit beside ours
    assert table.loc["resnet18"].published_top1 == pytest.approx(97.98)
    assert rope.published_top1 == pytest.approx(98.15)


def test_outputs_mark_the_best_in_bold():
    runs = _runs()
    table = comparison_table(runs)
    markdown = to_markdown(table, health_table(runs))
    assert "**92.83 ± 1.04**" in markdown
    assert r"\textbf{92.83 $\pm$ 1.04}" in to_latex(table)


def test_published_results_are_package_data_for_every_dataset():
    published = published_results()
    assert published.dataset.notna().all() and published.model.notna().all()
    assert set(published.dataset) == {"cifar10", "fashionmnist", "svhn", "bloodmnist", "tissuemnist", "pcam", "pad-ufes-20", "tiny-imagenet"}
    assert len(published) == 36  # current notebooks plus Tiny ImageNet 2025, superseded runs left out


def test_rows_follow_the_papers_order_and_no_negative_zero():
    rows = []
    for dataset in ("svhn", "cifar10"):
        for model in ("gradattn-rope", "cbam18", "my-new-model", "resnet18"):
            for seed in (1, 2):
                top1 = 90.0 + seed if model != "cbam18" else 90.0 + seed - 1e-13  # equal up to rounding
                rows.append({"dataset": dataset, "model": model, "seed": seed, "preprocessing": "protocol", "top1": top1, "health": 100.0, "health_notebook": 100.0, "vanishing": 0, "exploding": 0})
    runs = pd.DataFrame(rows)
    table = comparison_table(runs)
    paper_order = ["resnet18", "cbam18", "gradattn-rope", "my-new-model"]  # registry order, unknown names last
    assert list(zip(table.dataset, table.model)) == [(d, m) for d in ("cifar10", "svhn") for m in paper_order]
    health = health_table(runs)
    assert list(zip(health.dataset, health.model)) == [(d, m) for d in ("cifar10", "svhn") for m in paper_order]
    assert "-0.00" not in to_markdown(table, health)
    assert "| cbam18 | protocol | 91.50 ± 0.71 | 2 | 0.00 |" in to_markdown(table, health)
