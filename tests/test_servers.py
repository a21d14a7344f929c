"""The grid against real tracking servers on loopback: an `mlflow server` process (sqlite or
PostgreSQL backend, artifacts proxied through the server), one that is unreachable or not MLflow,
one that goes away mid-run and comes back, and an Optuna study stored in PostgreSQL."""

from __future__ import annotations

import csv
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import new_store
from mlflow.tracking import MlflowClient
from servers import MlflowServer, free_port, mlflow_server, postgres, postgres_mlflow_server  # noqa: F401 (fixtures)

from bench import tracking
from bench.errors import BenchError

REPO = Path(__file__).resolve().parents[1]

EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "train/lr", "train/epoch_time_s", "val/improved")
ARTIFACTS = ("gradflow/gradflow.json", "evaluation/confusion_matrix.csv", "history.csv")


def _env(root: Path, **extra: str) -> dict:
    return os.environ | {"PYTHONUNBUFFERED": "1", "BENCH_OUTBOX_DIR": str(root / "outbox")} | extra


def _run_args(url: str, root: Path, experiment: str, *extra: str) -> list[str]:
    # The small synthetic set: what these tests check is the tracking, not the data.
    return [
        sys.executable, "-m", "bench", "run",
        "--datasets", "synthetic", "--set", "gradflow.num_batches=1", "--devices", "cpu",
        "--tracking-uri", url, "--experiment", experiment,
        "--checkpoint-dir", str(root / "checkpoints"), "--data-dir", str(root / "data"),
        *extra,
    ]


def _bench(args: list[str], root: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    # Run from the test folder: a worker that wrote artifacts itself would leave ./mlartifacts there.
    return subprocess.run(args, cwd=root, env=_env(root, **env), capture_output=True, text=True, timeout=timeout)


def _runs(url: str, experiment: str) -> list:
    return tracking.runs_of(url, tracking.experiment_id(url, experiment))


def _all_artifacts(url: str, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for info in MlflowClient(url).list_artifacts(run_id, path):
        found |= _all_artifacts(url, run_id, info.path) if info.is_dir else {info.path}
    return found


def _assert_complete(server, run, epochs: int, tmp: Path) -> None:
    """FINISHED, every epoch's metrics, the test metrics, and the artifacts stored by the server."""
    url, run_id = server.url, run.run_id
    assert run.status == "FINISHED", run.tags.get("failure")
    for key in EPOCH_METRICS:
        assert sorted(step for step, _ in tracking.metric_history(url, run_id, key)) == list(range(1, epochs + 1)), key
    assert "test/top1" in run.metrics and "gradflow/health" in run.metrics
    assert set(ARTIFACTS) <= _all_artifacts(url, run_id)
    [model] = tracking.logged_models(url, run_id)  # the weights, as the run's MLflow model, stored by the server
    assert model.status == "READY" and model.artifact_location.startswith("mlflow-artifacts:")
    assert "data/model.pth" in {f.path for f in MlflowClient(url).list_logged_model_artifacts(model.model_id, "data")}
    # Proxied: the run points at the server's artifact store, and the files are in the server's folder.
    assert MlflowClient(url).get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(server.artifacts.rglob(f"{run_id}/artifacts/history.csv"))
    local = tracking.download_artifact(url, run_id, "gradflow/gradflow.json", tmp / run_id)
    assert json.loads(local.read_text())
    history = tracking.download_artifact(url, run_id, "history.csv", tmp / run_id)
    assert len(list(csv.DictReader(history.open()))) == epochs


def _grid_over_http(server, tmp_path: Path) -> None:
    """Two models on two worker slots, logging over HTTP at once."""
    args = _run_args(server.url, tmp_path, "grid", "--models", "resnet18,senet18", "--max-epochs", "1", "--jobs-per-device", "2")
    result = _bench(args, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cpu#0" in result.stdout and "cpu#1" in result.stdout
    runs = _runs(server.url, "grid")
    assert sorted(r.tags["model"] for r in runs) == ["resnet18", "senet18"]
    for run in runs:
        _assert_complete(server, run, epochs=1, tmp=tmp_path / "downloads")
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()


def test_grid_logs_every_run_metric_and_artifact_through_an_mlflow_server(mlflow_server, tmp_path):
    _grid_over_http(mlflow_server, tmp_path)


def test_grid_through_an_mlflow_server_backed_by_postgresql(postgres_mlflow_server, tmp_path):
    # The same grid; the store is what differs.
    assert postgres_mlflow_server.backend_uri.startswith("postgresql")
    _grid_over_http(postgres_mlflow_server, tmp_path)


def test_optuna_study_stored_in_postgresql_is_shared_between_storages(postgres):
    import optuna

    from bench.studies.storage import create_or_load, open_storage

    url = postgres.createdb("optuna")
    study = create_or_load(open_storage(url), "shared", direction="minimize")
    study.optimize(lambda trial: (trial.suggest_float("x", -4, 4) - 1) ** 2, n_trials=4)
    # A second storage object (another process or machine would open its own) continues the study.
    again = create_or_load(open_storage(url), "shared", direction="minimize")
    again.optimize(lambda trial: (trial.suggest_float("x", -4, 4) - 1) ** 2, n_trials=2)
    loaded = optuna.load_study(study_name="shared", storage=url)
    assert len(loaded.trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in loaded.trials)
    assert loaded.best_value == min(t.value for t in loaded.trials)


# -- a server that is not there, or not MLflow ---------------------------------------------------------


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"<html>not here</html>")

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def not_mlflow_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "uri, says",
    [
        (f"http://127.0.0.1:{free_port()}", "(Connection refused)"),
        ("htp://127.0.0.1:5000", "Unsupported tracking URI scheme 'htp'"),
    ],
    ids=["closed-port", "bad-scheme"],
)
def test_unreachable_or_misconfigured_server_is_one_line_and_exit_2_before_training(uri, says, tmp_path):
    # MLflow's own retries of a refused connection would only delay the same sentence.
    args = _run_args(uri, tmp_path, "x", "--models", "resnet18", "--max-epochs", "1")
    result = _bench(args, tmp_path, timeout=120, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "run(s) to do" not in result.stdout
    assert not (tmp_path / "checkpoints").exists()  # nothing started


def test_a_web_server_that_is_not_mlflow_is_a_clear_error(not_mlflow_url):
    with pytest.raises(BenchError, match="Cannot use the MLflow tracking store http://127.0.0.1:.*check --tracking-uri"):
        tracking.prepare(not_mlflow_url, "x")


def test_basic_auth_config_shipped_for_compose_asks_for_credentials(tmp_path, monkeypatch, migrated_store):
    """docker/basic_auth.ini with this MLflow: no credentials is a clear error, the admin account works."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth] (Flask-WTF)")
    shipped = (REPO / "docker" / "basic_auth.ini").read_text()
    config = tmp_path / "basic_auth.ini"
    config.write_text(shipped.replace("sqlite:////var/lib/mlflow-auth/", f"sqlite:///{tmp_path}/"))
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only", "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-Pw-for-tests-1"}
    server = MlflowServer(new_store(tmp_path, migrated_store)["uri"], tmp_path, extra_args=("--app-name", "basic-auth"), env=env).start()
    try:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(BenchError, match=r"refused the request \(HTTP 401\); set MLFLOW_TRACKING_USERNAME"):
            tracking.prepare(server.url, "auth")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-Pw-for-tests-1")
        assert tracking.prepare(server.url, "auth")
    finally:
        server.stop()


def test_no_password_of_an_http_uri_reaches_the_console(mlflow_server, tmp_path, capfd):
    """MLflow prints "View run ... at <host>" when a run ends; with credentials in the URI that line
    would carry the password. Ours names runs itself, and MLflow's line is suppressed."""
    url = mlflow_server.url.replace("http://", "http://alice:s3cret-pass@")
    run_id = tracking.create_run(url, tracking.prepare(url, "secrets"), "secret-run", {})
    logger = tracking.RunLogger(url, run_id, outbox_dir=tmp_path / "outbox")
    logger.log_metrics({"x": 1.0}, step=1)
    logger.end(tracking.FINISHED)
    assert tracking.run_status(url, run_id) == tracking.FINISHED
    out, err = capfd.readouterr()
    assert "s3cret-pass" not in out + err and "View run" not in out


# -- a server that goes away and comes back ------------------------------------------------------------


def test_logger_queues_while_the_server_is_down_and_replays_in_order(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the logger's retries and outbox are under test, not MLflow's
    url = mlflow_server.url
    run_id = tracking.create_run(url, tracking.prepare(url, "outbox"), "outbox-run", {})
    logger = tracking.RunLogger(url, run_id, retries=0, backoff_s=0.2, outbox_dir=tmp_path / "outbox")
    logger.log_metrics({"val_acc": 0.1}, step=1)
    mlflow_server.stop()
    logger.log_metrics({"val_acc": 0.2}, step=2)  # refused: queued, and training would go on
    logger.log_text("written while the server was down\n", "notes/down.txt")
    logger.set_tags({"phase": "down"})
    assert len(logger.outbox) == 3
    mlflow_server.start()
    time.sleep(0.5)  # past the backoff: the next call replays the queue first
    logger.log_metrics({"val_acc": 0.3}, step=3)
    assert len(logger.outbox) == 0 and not (tmp_path / "outbox").exists()
    logger.end(tracking.FINISHED)
    run = tracking.get_run(url, run_id)
    assert run.status == "FINISHED" and run.tags["phase"] == "down"
    assert tracking.metric_history(url, run_id, "val_acc") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert "notes/down.txt" in _all_artifacts(url, run_id)


def _val_steps(url: str, experiment: str) -> set[int]:
    try:
        runs = _runs(url, experiment)
    except Exception:
        return set()
    return {step for run in runs for step, _ in tracking.metric_history(url, run.run_id, "val/acc")}


def test_server_stopped_mid_run_loses_no_run_or_epoch(mlflow_server, tmp_path):
    """Kill the server once epoch 1 is logged, keep it down past the end of the run, restart it on
    the same port and store, and run the same command again: the run completes with every epoch."""
    url = mlflow_server.url
    args = _run_args(url, tmp_path, "restart", "--models", "resnet18", "--max-epochs", "2")
    # No retries inside MLflow's HTTP client (seconds per call to a closed port): the logger's own
    # retries and its outbox are what is under test.
    env = _env(tmp_path, BENCH_TRACKING_WAIT_S="3", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 400
        while 1 not in _val_steps(url, "restart"):
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.poll() is not None else "no epoch 1"
            time.sleep(0.5)
        run_id = _runs(url, "restart")[0].run_id
        mlflow_server.stop(kill=True)
        out, _ = first.communicate(timeout=400)  # trains on, evaluates, waits 3 s for the server, gives up
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1, out
    assert "NOT SYNCED" in out and "run the same command again" in out.replace("\n", " ")
    assert (tmp_path / "checkpoints" / run_id / "last.pt").exists()
    queued = [json.loads(p.read_text()) for p in sorted((tmp_path / "outbox" / run_id).glob("*.json"))]
    queued_epochs = {row[3] for e in queued if e["kind"] == "metrics" for row in e["payload"]["metrics"] if row[0] == "val/acc"}
    assert 2 in queued_epochs  # the last epoch was trained while the server was down; it waits on disk
    assert any(entry["kind"] == "artifact" for entry in queued)

    mlflow_server.start()
    assert tracking.run_status(url, run_id) == "RUNNING"  # resumable, not FAILED
    again = _bench(args, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 run(s) to do" in again.stdout
    runs = _runs(url, "restart")
    assert [r.run_id for r in runs] == [run_id]  # the same run, completed; no duplicate
    _assert_complete(mlflow_server, runs[0], epochs=2, tmp=tmp_path / "downloads")
    assert not list((tmp_path / "outbox").rglob("*.json"))
