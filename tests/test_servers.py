"""The grid against real tracking servers on loopback: an `mlflow server` process (sqlite or
PostgreSQL backend, artifacts proxied through the server), one that is unreachable or not MLflow,
and an Optuna study stored in PostgreSQL. test_server_outage has one that goes away mid-run."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
from servers import MlflowServer, assert_complete, bench_at, free_port, run_args, run_options, runs_of
from support import TINY_MODEL, cli, new_store

from bench import tracking
from bench.core.errors import BenchError

REPO = Path(__file__).resolve().parents[1]


def _grid_over_http(server, tmp_path: Path) -> None:
    """Two runs (of the tests' small model) on two worker slots, logging over HTTP at once."""
    args = run_args(server.url, tmp_path, "grid", "--models", "tiny", "--seeds", "1,2", "--max-epochs", "1", "--jobs-per-device", "2")
    result = bench_at([*args, *TINY_MODEL], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cpu#0" in result.stdout and "cpu#1" in result.stdout
    runs = runs_of(server.url, "grid")
    assert sorted(r.name for r in runs) == ["synthetic/tiny/1", "synthetic/tiny/2"]
    for run in runs:
        assert_complete(server, run, epochs=1, tmp=tmp_path / "downloads")
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
def test_unreachable_or_misconfigured_server_is_one_line_and_exit_2_before_training(uri, says, tmp_path, capsys, monkeypatch):
    # The entry point in this process: it stops before planning. MLflow's own retries of a refused
    # connection would only delay the same sentence.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *run_options(uri, tmp_path, "x", "--models", "resnet18", "--max-epochs", "1"))
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert "Traceback" not in err and "run(s) to do" not in out
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
