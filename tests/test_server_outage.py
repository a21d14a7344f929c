"""A tracking server that goes away and comes back: the logger queues what the server could not take
and replays it in order; a run whose server vanished mid-run stays resumable and the same command
completes it, with every epoch, in the same run."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from servers import all_artifacts, assert_complete, bench_at, run_args, runs_of, server_env
from support import TINY_MODEL

from bench import tracking
from bench.core.errors import BenchError


def _reap(command, server) -> None:
    """After a test killed the server under a command: the command ended, the server up for the next test."""
    if command.poll() is None:
        command.kill()
    if server.process is None:
        server.start()


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
    assert "notes/down.txt" in all_artifacts(url, run_id)


def test_a_model_logged_while_the_server_is_down_waits_for_it(mlflow_server, tmp_path, monkeypatch):
    """The server is away when the run logs its model and back a few seconds later: the run gets its
    logged model, READY, not a file in its place nor a model left half created."""
    import torch.nn as nn

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = mlflow_server.url
    run_id = tracking.create_run(url, tracking.prepare(url, "model-outage"), "model-run", {})
    logger = tracking.RunLogger(url, run_id, retries=0, backoff_s=0.2, outbox_dir=tmp_path / "outbox", final_wait_s=120)
    mlflow_server.stop(kill=True)
    back = threading.Timer(2, mlflow_server.start)
    back.start()
    try:
        model_id = logger.log_model(nn.Linear(2, 2), "model-run", 1, {}, [])
    finally:
        back.join()
    [model] = tracking.logged_models(url, run_id)
    assert model.model_id == model_id and str(model.status).endswith("READY")


def _val_steps(url: str, experiment: str) -> set[int]:
    try:
        runs = runs_of(url, experiment)
    except Exception:
        return set()
    return {step for run in runs for step, _ in tracking.metric_history(url, run.run_id, "val/acc")}


def test_server_stopped_mid_run_loses_no_run_or_epoch(mlflow_server, tmp_path):
    """Kill the server once epoch 1 is logged, keep it down past the end of the run, restart it on
    the same port and store, and run the same command again: the run completes with every epoch."""
    url = mlflow_server.url
    args = run_args(url, tmp_path, "restart", "--models", "resnet18", "--max-epochs", "2")
    # No retries inside MLflow's HTTP client (seconds per call to a closed port): the logger's own
    # retries and its outbox are what is under test.
    env = server_env(tmp_path, BENCH_TRACKING_WAIT_S="1", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 400
        while 1 not in _val_steps(url, "restart"):
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.poll() is not None else "no epoch 1"
            time.sleep(0.5)
        run_id = runs_of(url, "restart")[0].run_id
        mlflow_server.stop(kill=True)
        out, _ = first.communicate(timeout=400)  # trains on, evaluates, waits 1 s for the server, gives up
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
    again = bench_at(args, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 run(s) to do" in again.stdout
    runs = runs_of(url, "restart")
    assert [r.run_id for r in runs] == [run_id]  # the same run, completed; no duplicate
    assert_complete(mlflow_server, runs[0], epochs=2, tmp=tmp_path / "downloads")
    assert not list((tmp_path / "outbox").rglob("*.json"))


@pytest.mark.slow
def test_server_gone_while_the_grid_is_planned_is_one_sentence_and_the_rerun_finishes(mlflow_server, tmp_path):
    """The server dies after the planner created the grid's runs, while it waits to read its claims
    back: the command stops with one sentence and exit 2, and once the server is back the same
    command trains each configuration once, in the runs planned before."""
    url = mlflow_server.url
    args = run_args(url, tmp_path, "planned", "--models", "tiny", "--seeds", "1,2", "--max-epochs", "1", *TINY_MODEL)
    # A long pause before the claims are read back: the moment the server is killed in.
    env = server_env(tmp_path, BENCH_CLAIM_SETTLE_S="8", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_runs(url, "planned")) < 2:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        planned = {r.run_id for r in _runs(url, "planned")}
        mlflow_server.stop(kill=True)
        out, err = first.communicate(timeout=120)
    finally:
        _reap(first, mlflow_server)
    assert first.returncode == 2, out + err
    assert err.startswith(f"error: MLflow at {url} stopped answering while the grid was being planned"), err
    assert err.strip().count("\n") == 0 and "run the same command again" in err

    again = bench_at(args, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = _runs(url, "planned")
    assert sorted(r.name for r in runs) == ["synthetic/tiny/1", "synthetic/tiny/2"]
    assert {r.status for r in runs} == {"FINISHED"} and len(planned) == 2


def _runs(url: str, experiment: str) -> list:
    try:
        return runs_of(url, experiment)
    except BenchError:  # the command has not created the experiment yet
        return []


@pytest.mark.slow
def test_a_grid_that_ends_with_the_server_away_still_shows_its_finished_rows(mlflow_server, tmp_path):
    """The server dies once the grid is planned: the run left to train cannot start and the command
    ends with the server still away, showing the configuration finished earlier (as read when the
    grid was planned) without a traceback; once the server is back the same command finishes the rest."""
    url = mlflow_server.url
    base = run_args(url, tmp_path, "rows", "--models", "tiny", "--max-epochs", "1", *TINY_MODEL)
    assert bench_at([*base, "--seeds", "1"], tmp_path).returncode == 0
    env = server_env(tmp_path, BENCH_TRACKING_WAIT_S="1", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    second = subprocess.Popen([*base, "--seeds", "1,2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in second.stdout:  # planned: one run to train, one finished before
            lines.append(line)
            if "1 run(s) to do, 1 already finished" in line:
                mlflow_server.stop(kill=True)
                break
        out, _ = second.communicate(timeout=300)
    finally:
        _reap(second, mlflow_server)
    out = "".join(lines) + out
    assert second.returncode == 1, out
    assert "Traceback" not in out, out
    assert [line for line in out.splitlines() if "│ 1 " in line and "skipped" in line], out  # seed 1's row: finished before

    again = bench_at([*base, "--seeds", "1,2"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r.status for r in _runs(url, "rows")} == {"FINISHED"} and len(_runs(url, "rows")) == 2
