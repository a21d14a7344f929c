"""timm models by prefixed name, trained from scratch through the same pipeline."""

from __future__ import annotations

import pytest
from support import bench, cli, store_args

from bench import models, tracking
from bench.core.errors import BenchError

timm = pytest.importorskip("timm", reason="timm is not installed; pip install 'gradattn-bench[timm]'")


def test_timm_names_are_listed_by_pattern_and_built_without_weights(capsys):
    code, listed, err = cli(capsys, "models", "--timm", "resnet1*t", "--in-channels", "1")
    assert code == 0, err
    assert "timm/resnet10t" in listed and "4,927,186" in listed
    net = models.build("timm/resnet10t", 10, 1)
    assert models.count_parameters(net) == 4_927_186
    assert models.expand("resnet18,timm/resnet10t") == ["resnet18", "timm/resnet10t"]
    assert "timm/resnet10t" not in models.names()  # `all` stays our catalogue
    with pytest.raises(BenchError, match="has no model 'resnet-nope'"):
        models.expand("timm/resnet-nope")


@pytest.mark.slow
def test_a_timm_model_trains_one_epoch_on_digits(store):
    result = bench("run", "--models", "timm/resnet10t", "--max-epochs", "1", "--set", "gradflow.num_batches=1", *store_args(store))
    assert result.returncode == 0, result.stdout + result.stderr
    experiment = tracking.experiment_id(store["uri"], "test")
    (run,) = tracking.runs_of(store["uri"], experiment)
    assert run.status == "FINISHED" and run.name == "digits/timm/resnet10t/42"
    assert 0.0 <= run.metrics["test/top1"] <= 1.0 and "gradflow/health" in run.metrics
