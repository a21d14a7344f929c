"""The MLflow UI as a researcher uses it, in a real headless Chromium on a real `mlflow server`: the
links the harness prints land in the model-training view, a run's metrics tab opens on the learning
curves, the Models page tells the runs' models apart, the grouped view has a row per configuration;
and what `bench run` writes to a pipe."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient
from servers import MlflowServer
from support import TINY_MODEL, bench, new_store

from bench import tracking

CHROMIUM = pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium); the browser checks need it")
GENAI_VIEW = ("Evaluation runs", "Agent versions")  # the GenAI view's left bar, absent from the model-training one


def test_experiments_carry_the_model_training_kind_the_grouped_view_and_links_to_them(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.prepare(uri, "tagged")
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.bench-by-configuration"])  # the UI's saved-view envelope
    assert view["name"] and json.loads(view["state"])["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "configuration"}]
    assert tracking.experiment_url(uri, experiment_id) == f"http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning"
    assert tracking.experiment_url("http://user:pw@host:8080/mlflow", "7") == "http://host:8080/mlflow/#/experiments/7?workflowType=machine_learning"
    assert tracking.configurations_url(uri, "7").endswith("/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=bench-by-configuration")
    assert f"mlflow ui --backend-store-uri {uri}" in tracking.ui_hint(uri, experiment_id)
    assert tracking.prepare(uri, "tagged") == experiment_id and MlflowClient(uri).get_experiment(experiment_id).tags == tags


def _dom(url: str, width: int = 1600) -> str:
    """The page as a Chromium window (`width` x 1200) has rendered it after running its scripts. The UI
    draws only what the window shows (metric charts, table columns): what the DOM holds of them is
    the first screen."""
    result = subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},1200",
         "--virtual-time-budget=60000", "--run-all-compositor-stages-before-draw", "--dump-dom", url],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _text(page: str) -> str:
    """The words a person reads on the rendered page."""
    page = re.sub(r"<script.*?</script>|<style.*?</style>", "", page, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


RUN_NAMES = [f"synthetic/{model}/{seed}" for model in ("tiny", "tiny-wide") for seed in (42, 43)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, migrated_store):
    """Two configurations (tiny, tiny-wide) at two seeds, two epochs each, on a real server, and the
    report logged: what the browser checks look at."""
    root = tmp_path_factory.mktemp("ui")
    server = MlflowServer(new_store(root, migrated_store)["uri"], root / "server").start()
    try:
        places = ("--tracking-uri", server.url, "--experiment", "ui")
        ran = bench(
            "run", "--datasets", "synthetic", "--models", "tiny,tiny-wide", "--seeds", "42,43", "--max-epochs", "2",
            "--set", "gradflow.num_batches=1", "--devices", "cpu", "--checkpoint-dir", str(root / "ck"), *places, *TINY_MODEL,
            cwd=root,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        reported = bench("report", "--out", str(root / "report"), "--log", *places, cwd=root)
        assert reported.returncode == 0, reported.stdout + reported.stderr
        yield server, ran.stdout, reported.stdout, tracking.experiment_id(server.url, "ui")
    finally:
        server.stop()


@pytest.mark.slow
def test_progress_written_to_a_pipe_has_no_empty_fields(grid):
    _, printed, _, _ = grid
    lines = [line for line in printed.splitlines() if line.startswith(tuple(RUN_NAMES))]
    assert any(" queued" in line for line in lines) and any(" epoch 2/2 " in line for line in lines)
    for line in lines:
        assert "[]" not in line and not line.rstrip().endswith(":") and "  " not in line, line
        assert not re.search(r"\b(epoch|loss|acc|best|lr|ETA) (?=[a-zA-Z]|$)", line.split(": ", 1)[-1]), line  # a name without its value


@pytest.mark.slow
@CHROMIUM
def test_every_printed_link_lands_in_the_model_training_view(grid):
    server, printed, reported, experiment_id = grid
    links = re.findall(r"https?://\S+/#/\S+", printed + reported)  # the UI links (not the tracking URI it names)
    assert len(links) == 3 and all(link.startswith(server.url) and "workflowType=machine_learning" in link for link in links)
    runs_table, grouped, report_run = (_text(_dom(link)) for link in links)
    for page in (runs_table, grouped, report_run):
        assert not any(marker in page for marker in GENAI_VIEW), page[:2000]
    assert all(name in runs_table for name in RUN_NAMES) and "Run Name" in runs_table  # the runs table
    assert "Artifacts" in report_run and "report" in report_run  # the report's run page
    plain = _text(_dom(links[0].split("?")[0]))  # the same page without the view parameter: GenAI
    assert any(marker in plain for marker in GENAI_VIEW) and RUN_NAMES[0] not in plain

    groups = re.findall(r"Group: (\S+)", grouped)  # the grouped view: a row per configuration, not the report
    assert sorted(groups) == ["synthetic/tiny", "synthetic/tiny-wide"], grouped[:3000]
    assert "(average)" in grouped and "test_top1" in grouped


@pytest.mark.slow
@CHROMIUM
def test_a_runs_metrics_tab_opens_on_the_training_and_validation_curves(grid):
    server, _, _, experiment_id = grid
    run = next(r for r in tracking.grid_runs(server.url, experiment_id) if r.name == RUN_NAMES[0])
    page = _dom(tracking.run_url(server.url, experiment_id, run.run_id).replace("?", "/model-metrics?"))
    charted = re.findall(rf"{re.escape(run.name)} \(([\w/]+)\)", _text(page))  # each drawn chart's legend
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(charted), charted
    assert not [key for key in charted if not key.startswith(("train/", "val/"))], charted  # no single value before them
    sections = re.findall(r"\b(train|val|Model metrics) \((\d+)\)", _text(page))
    assert [name for name, _ in sections] == ["train", "val", "Model metrics"], sections  # the results after the curves


@pytest.mark.slow
@CHROMIUM
def test_the_models_page_tells_the_runs_models_apart_with_their_test_metrics(grid):
    server, _, _, experiment_id = grid
    models_page = f"{tracking.experiment_url(server.url, experiment_id).split('?')[0]}/models?workflowType=machine_learning"
    models = _text(_dom(models_page, width=3400))  # wide enough for the metric columns after the model's attributes
    for name in RUN_NAMES:
        assert re.search(rf"\b{name.replace('/', '-')} Ready .*{re.escape(name)}", models), models[:3000]  # named after its source run
    assert re.search(r"Dataset: synthetic \(#\w+\) .*\btest_top1\b", models), models[:3000]  # its test metrics, on its dataset
