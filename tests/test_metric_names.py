"""Metric names: every metric a run logs has a section, and the flat names of older runs still read."""

import dataclasses
import math

import pytest

from bench.tracking import metric_names
from bench.train.engine import EpochRecord
from bench.train.metrics import classification_metrics


def test_every_epoch_record_field_is_logged_in_a_section():
    # the cost fields feed the run's cost/ totals instead (bench.train.cost.run_cost)
    fields = [f.name for f in dataclasses.fields(EpochRecord) if f.name != "epoch" and f.name not in metric_names.COST_RECORD_FIELDS]
    assert metric_names.COST_RECORD_FIELDS < {f.name for f in dataclasses.fields(EpochRecord)}
    sections = {metric_names.sectioned(name).split("/", 1)[0] for name in fields}
    assert sections <= set(metric_names.SECTIONS) and {"train", "val", "gradflow"} <= sections


def test_test_metrics_are_in_the_test_section_per_weight_set():
    import torch

    scalars = classification_metrics(torch.eye(3) * 4, torch.arange(3)).scalars
    assert len(scalars) >= 10
    for name in scalars:
        metric = name.removeprefix("test_")
        assert metric_names.test_key(metric) == metric_names.sectioned("test_" + metric) == f"test/{metric}"
        assert metric_names.legacy(metric_names.test_key(metric, "best")) == f"test_best_{metric}"


def test_a_metric_reads_from_old_and_new_runs_alike():
    assert metric_names.read({"val_acc": 0.5}, "val/acc") == 0.5
    assert metric_names.read({"val/acc": 0.7, "val_acc": 0.5}, "val/acc") == 0.7  # the sectioned name first
    assert metric_names.read({"best_val_acc": 0.9}, "val/best_acc") == 0.9
    assert metric_names.read({"test_last_top1": 0.4}, "test/last_top1") == 0.4
    assert math.isnan(metric_names.read({}, "gradflow/health")) and metric_names.read({}, "gradflow/health", None) is None
    assert metric_names.has({"gradient_health": 1.0}, "gradflow/health") and not metric_names.has({}, "test/top1")


def test_a_metric_with_no_section_is_a_clear_error():
    with pytest.raises(KeyError, match="no section for metric 'accuracy'"):
        metric_names.sectioned("accuracy")


def test_results_are_logged_flat_and_read_back_by_their_sectioned_names():
    for key in ("test/top1", "test/best_f1_macro", "gradflow/health", "gradflow/layers", "val/best_acc", "train/epochs_run"):
        assert "/" not in metric_names.result(key) and metric_names.canonical(metric_names.result(key)) == key
    assert metric_names.canonical("val/acc") == "val/acc" and metric_names.canonical("system/cpu_utilization_percentage") == "system/cpu_utilization_percentage"
