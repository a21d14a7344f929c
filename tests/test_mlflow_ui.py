"""The MLflow UI opens on the runs table: the experiment tag, the link the harness prints, and a
real headless Chromium on a real `mlflow server` following that link."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient
from servers import MlflowServer
from support import bench

from bench import tracking


def test_experiments_carry_the_model_training_kind_and_links_the_runs_view(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.prepare(uri, "tagged")
    experiment = MlflowClient(uri).get_experiment(experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.experiment_url(uri, experiment_id) == f"http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning"
    assert tracking.experiment_url("http://user:pw@host:8080/mlflow", "7") == "http://host:8080/mlflow/#/experiments/7?workflowType=machine_learning"
    assert f"mlflow ui --backend-store-uri {uri}" in tracking.ui_hint(uri, experiment_id)


def _dom(url: str) -> str:
    """The page as Chromium has rendered it after running its scripts."""
    result = subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200",
         "--virtual-time-budget=60000", "--dump-dom", url],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _text(page: str) -> str:
    """The words a person reads on the rendered page."""
    page = re.sub(r"<script.*?</script>|<style.*?</style>", "", page, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium); the browser check needs it")
def test_the_printed_link_lands_on_the_runs_table_in_a_real_browser(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "server").start()
    try:
        result = bench(
            "run", "--datasets", "synthetic", "--models", "resnet18", "--max-epochs", "1", "--set", "gradflow.num_batches=1",
            "--tracking-uri", server.url, "--checkpoint-dir", str(tmp_path / "ck"), "--experiment", "ui", "--devices", "cpu",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (link,) = re.findall(r"MLflow UI: (\S+)", result.stdout)
        assert link.startswith(server.url) and link.endswith("?workflowType=machine_learning")
        page = _dom(link)
        assert "synthetic/resnet18/42" in page  # the run's row in the runs table
        assert "Run Name" in page and "No data available" not in page  # not the GenAI traces overview
        plain = _dom(link.split("?")[0])  # what the same page shows without the view parameter
        assert "synthetic/resnet18/42" not in plain

        experiment_id = tracking.experiment_id(server.url, "ui")
        (run,) = tracking.runs_of(server.url, experiment_id)
        base = f"{server.url}/#/experiments/{experiment_id}"
        charts = _text(_dom(f"{base}/runs/{run.run_id}/model-metrics?workflowType=machine_learning"))
        for section in ("train", "val", "test", "gradflow"):  # the metric charts, grouped by section
            assert re.search(rf"\b{section} \(\d+\)", charts), charts[:2000]
        assert "Model metrics (0)" in charts  # MLflow's section for unsectioned metrics stays empty
        models = _text(_dom(f"{base}/models?workflowType=machine_learning"))
        assert re.search(r"\bmodel Ready .* synthetic/resnet18/42", models), models[:2000]  # the run's logged model
    finally:
        server.stop()
