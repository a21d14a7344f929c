"""Each epoch of a run on `--backend ray` and `--backend slurm` reaches the live table while the run
trains, as on the local backend (a real local Ray instance, submitit's local executor)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from support import BACKEND_FLAGS, TINY_MODEL, backend_ready, store_args

from bench import tracking


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ray", "slurm"])
def test_each_epoch_reaches_the_live_table_while_the_run_still_trains(backend, ready_store, request):
    backend_ready(backend, request)
    # the tests' small model: what is asserted is when each epoch's figures reach the parent's table
    grid = ["--datasets", "digits", "--models", "tiny", *TINY_MODEL, "--max-epochs", "2", "--set", "gradflow.num_batches=1"]
    args = ["run", *grid, *BACKEND_FLAGS[backend], *store_args(ready_store, devices=None)]
    process = subprocess.Popen([sys.executable, "-m", "bench", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    shown = {}  # "epoch N/2" -> when the parent printed it as a running run's figures
    lines = []
    for line in process.stdout:
        lines.append(line)
        for epoch in (1, 2):
            if f"running: epoch {epoch}/2 train loss" in line and "val acc" in line and "ETA" in line:
                shown.setdefault(epoch, time.time())
    assert process.wait(timeout=60) == 0, "".join(lines)
    (run,) = tracking.runs_of(ready_store["uri"], tracking.experiment_id(ready_store["uri"], "test"))
    assert run.status == "FINISHED"
    assert sorted(shown) == [1, 2], "".join(lines)
    # the first epoch's figures were on screen before the worker ended its run (same clock)
    assert shown[1] < run.end_time / 1000, "".join(lines)
