"""Finishing is idempotent: a command killed after the test metrics reached the store, resumed, logs
each metric once; a live claim is left alone, a stale or orphaned one taken over; a run that finishes drops
the failure marks of earlier attempts; leftover checkpoint folders are removed or reported.

Real `bench run` processes on a real sqlite store; the kill is SIGKILL of the whole process group.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from servers import wait_until
from support import bench, cli, store_args

from bench import tracking
from bench.execution import checkpoints, planning

ARGS = ("run", "--datasets", "digits", "--models", "resnet18", "--max-epochs", "1", "--set", "gradflow.num_batches=1")


def _logged(database, key: str) -> bool:
    try:
        with sqlite3.connect(database) as connection:
            return connection.execute("SELECT count(*) FROM metrics WHERE key = ?", (key,)).fetchone()[0] > 0
    except sqlite3.Error:  # not created yet
        return False


@pytest.mark.slow
def test_killed_after_the_test_metrics_then_resumed_logs_each_metric_once(store, capsys, monkeypatch):
    env = {"BENCH_OUTBOX_DIR": str(store["root"] / "outbox")}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *ARGS, *store_args(store)],
        env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    wait_until(lambda: _logged(store["root"] / "mlflow.db", "test_top1") or process.poll() is not None, 600, "test metrics logged", 0.05)
    os.killpg(process.pid, signal.SIGKILL)  # during the artifacts that follow the test metrics
    process.wait()
    uri = store["uri"]
    experiment_id = tracking.experiment_id(uri, "test")
    (run,) = tracking.runs_of(uri, experiment_id)
    run_id = run.run_id
    assert run.status == tracking.RUNNING  # killed before it could end
    assert (store["checkpoints"] / run_id / "last.pt").exists()

    # An earlier attempt's failure marks, and the folder of a run deleted in MLflow.
    logger = tracking.RunLogger(uri, run_id, outbox_dir=store["root"] / "marks")
    logger.set_tags({"failure": "RuntimeError: an earlier attempt"})
    logger.log_text("Traceback of an earlier attempt\n", "failure/traceback.txt")
    deleted = tracking.create_run(uri, experiment_id, "deleted", {})
    tracking.delete_run(uri, deleted)
    (store["checkpoints"] / deleted).mkdir()
    (store["checkpoints"] / deleted / "last.pt").write_bytes(b"x" * 2_000_000)

    # The killed command's heartbeat is fresh, but its process is gone from this host: taken over at once.
    resumed = bench(*ARGS, *store_args(store), env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 run(s) to do" in resumed.stdout
    assert "1 checkpoint folder(s) of runs deleted in MLflow hold 2.0 MB" in resumed.stdout
    monkeypatch.setenv("BENCH_OUTBOX_DIR", env["BENCH_OUTBOX_DIR"])
    code, pruned, _ = cli(capsys, *ARGS, *store_args(store), "--prune-checkpoints")  # planning only: in this process
    assert code == 0 and "0 run(s) to do, 1 already finished" in pruned, pruned
    run = tracking.get_run(uri, run_id)
    assert run.status == tracking.FINISHED
    for key in run.metrics:
        steps = Counter(step for step, _ in tracking.metric_history(uri, run_id, key))
        assert set(steps.values()) == {1}, (key, steps)
    assert "test/top1" in run.metrics and "failure" not in run.tags
    assert not tracking.list_artifacts(uri, run_id, "failure")
    [model] = tracking.logged_models(uri, run_id)  # one model, however often finishing was cut short
    assert model.status == "READY" and not tracking.list_artifacts(uri, run_id, "checkpoint")
    assert not store["checkpoints"].exists()  # the finished run's folder, then the deleted run's, are gone


def test_tidy_checkpoints_removes_finished_and_reports_deleted_runs(store):
    uri = store["uri"]
    experiment_id = tracking.prepare(uri, "tidy")
    finished, deleted, live = (tracking.create_run(uri, experiment_id, name, {}) for name in ("f", "d", "l"))
    tracking.set_status(uri, finished, tracking.FINISHED)
    tracking.delete_run(uri, deleted)
    unknown = "0" * 32  # a run of another store sharing the folder
    for run_id in (finished, deleted, live, unknown):
        (store["checkpoints"] / run_id).mkdir(parents=True)
        (store["checkpoints"] / run_id / "last.pt").write_bytes(b"x" * 1000)
    found = checkpoints.tidy_checkpoints(uri, store["checkpoints"])
    assert found.removed == [finished] and [p.name for p in found.deleted] == [deleted] and found.deleted_bytes == 1000
    assert sorted(p.name for p in store["checkpoints"].iterdir()) == sorted([deleted, live, unknown])
    assert checkpoints.tidy_checkpoints(uri, store["checkpoints"], remove_deleted=True).removed == [deleted]
    assert sorted(p.name for p in store["checkpoints"].iterdir()) == sorted([live, unknown])


def test_a_claim_is_alive_while_its_owner_beats_and_exists(store):
    uri = store["uri"]
    experiment_id = tracking.prepare(uri, "claims")
    elsewhere = "another-host:4242:abcd1234"  # a process this host cannot see: only its heartbeat tells
    here_gone = f"{socket.gethostname()}:{_dead_pid()}:abcd1234"
    cases = {
        "fresh, elsewhere": (tracking.claim_tags(elsewhere), True),
        "stale, elsewhere": ({"claim_owner": elsewhere, "claim_heartbeat": str(time.time() - tracking.CLAIM_STALE_S - 1)}, False),
        "released": ({"claim_owner": elsewhere, "claim_heartbeat": "0"}, False),
        "fresh, gone from this host": (tracking.claim_tags(here_gone), False),
        "never claimed": ({}, False),
    }
    for name, (tags, alive) in cases.items():
        run_id = tracking.create_run(uri, experiment_id, name, tags)
        assert planning.claim_alive(tracking.get_run(uri, run_id)) is alive, name
    ended = tracking.create_run(uri, experiment_id, "ended", tracking.claim_tags(elsewhere))
    tracking.set_status(uri, ended, tracking.FAILED)
    assert not planning.claim_alive(tracking.get_run(uri, ended))  # not RUNNING: nobody trains it


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
