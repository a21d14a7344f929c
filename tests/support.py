"""Helpers the tests share: the real `bench` command in a subprocess or in this process, the paths
and options of a test's MLflow store, and the tests' own small model."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tests' own small model `tiny` (tests/plugins/tiny_models.py), for the commands a test runs
# where the model does not matter (tracking, scheduling, races): it reaches them as a user's plugin
# file does, through `--plugin`. This process never imports it, so the catalogue the other tests see
# is the project's own.
TINY_MODEL = ("--plugin", str(REPO / "tests" / "plugins" / "tiny_models.py"))


def bench(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m bench ...`) in a subprocess and capture its output."""
    full_env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def worker_pids(parent: int) -> list[int]:
    """The worker processes of a `bench run` whose pid is `parent` (its children but multiprocessing's
    resource tracker); none once it has ended."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return []
    found = []
    for pid in children:
        try:
            if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text():
                found.append(int(pid))
        except OSError:  # it ended meanwhile
            pass
    return found


def store_paths(root: Path) -> dict:
    """Where a test's sqlite MLflow store, checkpoint folder and data folder go (nothing created)."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "uri": f"sqlite:///{root / 'mlflow.db'}",
        "checkpoints": root / "checkpoints",
        "data": root / "data",
        "root": root,
    }


def new_store(root: Path, migrated: Path) -> dict:
    """store_paths(root) with the sqlite store already there: a copy of the empty `migrated` one."""
    paths = store_paths(root)
    shutil.copyfile(migrated, root / "mlflow.db")
    return paths


def store_args(store: dict, experiment: str = "test", devices: str | None = "cpu") -> list[str]:
    """The options that point a command at the test's store; `devices` None for the ray and slurm
    backends, which refuse the local backend's --devices."""
    return [
        "--tracking-uri", store["uri"],
        "--checkpoint-dir", str(store["checkpoints"]),
        "--data-dir", str(store["data"]),
        "--experiment", experiment,
        *(["--devices", devices] if devices else []),
    ]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point (`bench.cli.invoke`, what `bench` runs) in this process: exit status, stdout
    and stderr. What the command registers (a `--plugin`'s models) is forgotten after it, as it would be
    when its process ended: the other tests of this process see the project's own catalogue."""
    from bench.cli import invoke

    argv = sys.argv
    sys.argv = ["bench", *args]
    try:
        with isolated_catalogue():
            invoke()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextlib.contextmanager
def isolated_catalogue():
    """Plugins, models and datasets registered inside the block are gone after it: the other tests of
    this process see the project's own catalogue."""
    from bench import data, models
    from bench.core import plugins

    with plugins.isolated(), models.isolated(), data.isolated():
        yield


# -- runs as the runner logs them, without training (what `bench report` reads) ------------------------------

N_TEST = 40


def _predictions(correct) -> str:
    import numpy as np

    labels = np.arange(N_TEST) % 10
    predicted = np.where(correct, labels, (labels + 1) % 10)
    return "label,pred_best,pred_last\n" + "".join(f"{label},{p},{p}\n" for label, p in zip(labels, predicted))


def log_finished_run(store, exp_id, spec, top1: float, *, train_acc=(0.3, 0.6, 0.8), val_acc=(0.3, 0.5, 0.6), correct=None,
                     flat_names=False, tags=None, metrics=None, status="FINISHED"):
    """A grid run as the runner logs it (real MLflow records through our tracking adapter), FINISHED
    unless `status` says otherwise; `flat_names`: as runs logged before metric sections; `tags` and
    `metrics` on top of the usual ones."""
    from bench import tracking
    from bench.execution.run_tags import run_tags
    from bench.tracking import metric_names

    named = metric_names.legacy if flat_names else (lambda key: key)
    logged_tags = run_tags(spec, "cpu", parameters=1) | {"num_classes": "6" if spec.dataset == "pad-ufes-20" else "10"}
    logged_tags["final_weights"] = "best" if spec.restore_best else "last"
    run_id = tracking.create_run(store["uri"], exp_id, spec.run_name, logged_tags | (tags or {}))
    logger = tracking.RunLogger(store["uri"], run_id, outbox_dir=store["root"] / "outbox" / run_id)
    logger.log_params(spec.flat_params())
    for epoch, (train, val) in enumerate(zip(train_acc, val_acc), start=1):
        logger.log_metrics({named("train/acc"): train, named("val/acc"): val}, step=epoch)
    summary = {
        "test/top1": top1 / 100, "test/best_top1": top1 / 100, "test/last_top1": top1 / 100 - 0.01,
        "val/best_acc": max(val_acc), "gradflow/health": 1.0, "gradflow/health_notebook": 0.9,
        "gradflow/vanishing_layers": 0.0, "gradflow/exploding_layers": 0.0,
        "gradflow/batches": 20.0, "gradflow/batch_size": 128.0,
    } | (metrics or {})
    if status == "FINISHED":  # results under their flat names, as the runner logs them (and runs before sections)
        logger.log_metrics({metric_names.result(key): value for key, value in summary.items()}, step=len(train_acc))
        if correct is not None:
            logger.log_text(_predictions(correct), "evaluation/test_predictions.csv")
    logger.end(status)
    return run_id


# -- the remote backends (Ray, Slurm through submitit's local executor) ----------------------------------

# The same command on each remote backend: one CPU per run, no GPU; ray joins the tests' local instance.
BACKEND_FLAGS = {
    "ray": ["--backend", "ray", "--ray-address", "auto", "--cpus-per-run", "1"],
    "slurm": ["--backend", "slurm", "--slurm-executor", "local", "--cpus-per-run", "1", "--gpus-per-run", "0", "--slurm-time", "30"],
}


def backend_ready(backend: str, request) -> None:
    """The backend's local instance for the test (conftest's local_ray), or a skip where it is not installed."""
    import pytest

    if backend == "ray":
        request.getfixturevalue("local_ray")
    else:
        pytest.importorskip("submitit", reason="submitit is not installed; pip install 'gradattn-bench[slurm]'")


def mapped_files() -> list[tuple[int, int, str]]:
    """(start, end, path) of every file this process has memory-mapped."""
    maps = []
    for line in open("/proc/self/maps"):
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            maps.append((start, end, fields[5].strip()))
    return maps


def backed_by(tensor, place) -> bool:
    """Whether the tensor's memory is a mapping of the file ``place`` or of a file under it, not a copy."""
    address = tensor.data_ptr()
    return any(start <= address < end and path.startswith(str(place)) for start, end, path in mapped_files())
