"""A disk that fills up during training: the checkpoint folder, and the folder of a local MLflow
artifact store, each on a small tmpfs filled while a run trains. The command stops with one sentence
naming the folder and the lack of space (exit 2), the run is left resumable with nothing torn, and
once space is freed the same command finishes it with the metrics of an uninterrupted run.

Mounting a tmpfs needs root (or CAP_SYS_ADMIN); elsewhere these tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import TINY_MODEL, bench, new_store, store_args

from bench import tracking
from bench.train import checkpoint

DISK_BYTES = 4 * 1024 * 1024
# The small model on the small set for many epochs: the disk fills while it trains, long before its end.
GRID = ["--datasets", "synthetic", "--models", "tiny", "--seeds", "3", "--max-epochs", "8", "--set", "gradflow.num_batches=1",
        "--set", "train.early_stopping_patience=100", *TINY_MODEL]
COMPARED = ("test/top1", "test/loss", "test/f1_macro", "val/best_acc", "val/acc", "train/loss", "gradflow/health")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted for the test, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run as root (or in a container with CAP_SYS_ADMIN) to test a full disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}); a full disk is not tested")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, keep_bytes: int) -> Path:
    """Write a file that leaves `keep_bytes` free on the disk (or none, when it is already fuller)."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    size = max(0, stats.f_bavail * stats.f_frsize - keep_bytes)
    with open(filler, "wb") as file:
        file.write(b"\0" * size)
    return filler


def _start(store: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *GRID, *store_args(store)], cwd=cwd, env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the command ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s"
        time.sleep(0.05)


def _only_run(store: dict) -> tracking.Run:
    [run] = tracking.runs_of(store["uri"], tracking.experiment_id(store["uri"], "test"))
    return run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, migrated_store) -> dict:
    """The final metrics of the grid's run when nothing interrupts it."""
    store = new_store(tmp_path_factory.mktemp("uninterrupted"), migrated_store)
    done = bench("run", *GRID, *store_args(store), cwd=store["root"])
    assert done.returncode == 0, done.stdout + done.stderr
    return _only_run(store).metrics


def _assert_stopped_for_space(process: subprocess.Popen, folder: Path) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, out + err
    [sentence] = [line for line in err.splitlines() if line.startswith("error:")]
    assert sentence.startswith(f"error: No space left in {folder}") and "run the same command again" in sentence, err
    assert "Traceback" not in out + err
    return sentence


def _assert_finished_as_uninterrupted(store: dict, run_id: str, expected: dict, tmp_path: Path) -> None:
    run = _only_run(store)
    assert run.run_id == run_id and run.status == "FINISHED", run.tags.get("failure")
    for key in COMPARED:
        assert run.metrics[key] == expected[key], key
    [model] = tracking.logged_models(store["uri"], run_id)
    assert str(model.status).endswith("READY")
    history = tracking.download_artifact(store["uri"], run_id, "history.csv", tmp_path / "downloads")
    assert len(history.read_text().splitlines()) == 1 + int(run.metrics["train/epochs_run"])
    flow = tracking.download_artifact(store["uri"], run_id, "gradflow/gradflow.json", tmp_path / "downloads")
    assert json.loads(flow.read_text())  # whole, not cut off where the disk filled


@pytest.mark.slow
def test_checkpoint_folder_filled_mid_training_stops_resumably(ready_store, small_disk, tmp_path, uninterrupted):
    store = dict(ready_store, checkpoints=small_disk / "checkpoints")
    first = _start(store, tmp_path)
    _wait_for(lambda: list(store["checkpoints"].glob("*/last.pt")), first, "first checkpoint")
    [last] = store["checkpoints"].glob("*/last.pt")
    # Room for the workers' progress lines (the mailbox shares the folder), not for another checkpoint.
    assert last.stat().st_size > 3 * 4096
    filler = _fill(small_disk, keep_bytes=2 * 4096)
    run_folder = last.parent
    _assert_stopped_for_space(first, run_folder)

    run_id = run_folder.name
    assert tracking.run_status(store["uri"], run_id) != "FINISHED"
    state, _ = checkpoint.load_resume(run_folder)  # whole and verified: the failed write left the last one as it was
    assert 1 <= state["epoch"] < 8
    assert not [p for p in run_folder.iterdir() if p.name.endswith(".tmp")]  # no half-written file beside it

    filler.unlink()
    again = bench("run", *GRID, *store_args(store), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert int(_only_run(store).tags["resumed_from_epoch"]) >= 1
    _assert_finished_as_uninterrupted(store, run_id, uninterrupted, tmp_path)


@pytest.mark.slow
def test_artifact_store_folder_filled_mid_training_stops_resumably(ready_store, small_disk, tmp_path, uninterrupted):
    # A local store keeps its artifacts in ./mlruns of the folder the experiment was created from.
    first = _start(ready_store, small_disk)
    _wait_for(lambda: list(ready_store["checkpoints"].glob("*/last.pt")), first, "first checkpoint")
    run_id = next(ready_store["checkpoints"].glob("*/last.pt")).parent.name
    artifacts = _run_artifacts(ready_store, run_id)
    assert artifacts.is_relative_to(small_disk)
    filler = _fill(small_disk, keep_bytes=0)
    assert run_id in _assert_stopped_for_space(first, artifacts)

    assert tracking.run_status(ready_store["uri"], run_id) != "FINISHED"
    state, _ = checkpoint.load_resume(ready_store["checkpoints"] / run_id)
    assert state["epoch"] >= 1

    filler.unlink()
    again = bench("run", *GRID, *store_args(ready_store), cwd=small_disk)
    assert again.returncode == 0, again.stdout + again.stderr
    _assert_finished_as_uninterrupted(ready_store, run_id, uninterrupted, tmp_path)


def _run_artifacts(store: dict, run_id: str) -> Path:
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    return Path(urlparse(MlflowClient(store["uri"]).get_run(run_id).info.artifact_uri).path)
