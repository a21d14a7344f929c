"""What a run loads, and what it trusts: crafted and damaged checkpoints and dataset files are refused
before anything in them runs, a divergent run ends FAILED with its checkpoints, a damaged outbox
entry is moved aside, and bad options stop `bench run` before any training.

Checkpoints and CIFAR-10 batches are real files in their real formats; commands are the real CLI.
"""

from __future__ import annotations

import pickle
import sqlite3

import pytest
import torch
from data_fixtures import write_cifar10
from support import cli, store_args

from bench import tracking
from bench.config import studyfile
from bench.config.spec import TrainConfig
from bench.core.errors import BenchError
from bench.execution import planning
from bench.train import checkpoint
from bench.train.engine import Diverged, Trainer


class WritesMarker:
    """Unpickling this calls `open(marker, "w")`: what a crafted file would do on a plain load."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _resumable_run(store: dict) -> str:
    """A KILLED run of `bench run --datasets digits --models resnet18 --max-epochs 1`, as an interrupted
    grid leaves it, planned and released through the scheduler."""
    uri = store["uri"]
    experiment_id = tracking.prepare(uri, "test")
    grid = studyfile.Grid(pairs=[("digits", "resnet18")], settings={"train.max_epochs": 1})
    plan = planning.plan_runs(grid.specs(), uri, experiment_id, "cpu")
    planning.release_plan(plan, uri, tracking.KILLED)
    return plan.tasks[0].run_id


def _flip_tensor_bytes(path, value: float) -> None:
    raw = bytearray(path.read_bytes())
    pattern = torch.tensor([value], dtype=torch.float32).numpy().tobytes()
    at = raw.find(pattern)
    assert at > 0
    raw[at : at + 4] = bytes(b ^ 0xFF for b in raw[at : at + 4])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["crafted", "flipped"])
def test_bench_run_refuses_a_crafted_or_damaged_checkpoint_before_training(ready_store, damage, capsys):
    store = ready_store
    run_id = _resumable_run(store)
    folder = store["checkpoints"] / run_id
    folder.mkdir(parents=True)
    marker = store["root"] / "marker"
    if damage == "crafted":
        torch.save({"model": WritesMarker(marker)}, folder / "last.pt")
    else:
        checkpoint.save({"epoch": 1, "model": {"w": torch.full((64,), 1.2345)}}, folder / "last.pt")
        _flip_tensor_bytes(folder / "last.pt", 1.2345)
    code, out, err = cli(capsys, "run", "--datasets", "digits", "--models", "resnet18", "--max-epochs", "1", *store_args(store))
    assert code == 2, out + err
    assert str(folder / "last.pt") in err and "Traceback" not in err
    assert ("nothing in it ran" if damage == "crafted" else "checksum") in err
    assert not marker.exists()
    run = tracking.get_run(store["uri"], run_id)
    assert run.status == tracking.KILLED  # released, resumable once the file is dealt with
    assert "val/acc" not in run.metrics  # nothing trained


def test_checkpoint_round_trip_and_flipped_bytes(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.full((32,), 0.625)}, "rng": checkpoint.rng_state(), "history": [{"a": None}]}
    checkpoint.save(state, tmp_path / "last.pt")
    loaded = checkpoint.load(tmp_path / "last.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 3
    checkpoint.set_rng_state(loaded["rng"])  # RNG states come back from weights-only tensors
    _flip_tensor_bytes(tmp_path / "last.pt", 0.625)
    with pytest.raises(BenchError, match="checksum"):
        checkpoint.load(tmp_path / "last.pt")


def test_missing_best_weights_is_an_error_not_the_last_epoch(tmp_path):
    checkpoint.save({"epoch": 3, "model": {"w": torch.ones(2)}, "early_stopping": {"best_epoch": 2}}, tmp_path / checkpoint.LAST)
    with pytest.raises(BenchError, match="best-weights checkpoint .* is missing"):
        checkpoint.load_resume(tmp_path)
    checkpoint.save({"epoch": 1, "model": {}}, tmp_path / checkpoint.BEST)
    with pytest.raises(BenchError, match="of epoch 1"):
        checkpoint.load_resume(tmp_path)


def test_last_checkpoint_of_the_best_epoch_holds_the_best_weights_when_best_was_not_written(tmp_path):
    weights = {"w": torch.full((2,), 0.5)}
    checkpoint.save({"epoch": 2, "model": weights, "early_stopping": {"best_epoch": 2}}, tmp_path / checkpoint.LAST)
    checkpoint.save({"epoch": 1, "model": {"w": torch.zeros(2)}}, tmp_path / checkpoint.BEST)  # stale: killed before
    _, best = checkpoint.load_resume(tmp_path)
    assert best["epoch"] == 2 and torch.equal(best["model"]["w"], weights["w"])


def test_crafted_cifar10_batch_runs_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    write_cifar10(data)
    marker = tmp_path / "marker"
    with open(data / "cifar-10-batches-py" / "data_batch_2", "wb") as stream:
        pickle.dump({"data": WritesMarker(marker), "labels": [0]}, stream)
    code, out, err = cli(capsys, "data", "check", "cifar10", "--data-dir", str(data))
    assert code == 2, out + err
    assert "data_batch_2" in out + err and "nothing in it was run" in out + err
    assert not marker.exists()


def test_real_cifar10_batches_still_load(tmp_path):
    from bench import data

    written = write_cifar10(tmp_path)
    parts = data.get("cifar10").read_parts(tmp_path, ("train",))
    assert torch.equal(parts["train"][0], torch.from_numpy(written["images"][: written["n_train"]]))


def test_a_diverging_run_stops_with_the_epoch_and_keeps_its_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    config = TrainConfig(max_epochs=2, channels_last=False)
    Trainer(model, batches, batches, config, device=torch.device("cpu"), checkpoint_dir=tmp_path).fit()
    poisoned = [(torch.full((8, 4), float("inf")), y) for _, y in batches]  # the loss becomes NaN
    resumed = Trainer(
        model, poisoned, batches, TrainConfig(max_epochs=4, channels_last=False), device=torch.device("cpu"), checkpoint_dir=tmp_path
    )
    with pytest.raises(Diverged, match="diverged at epoch 3"):
        resumed.fit()
    assert checkpoint.load(tmp_path / checkpoint.LAST)["epoch"] == 2  # the last finite epoch is kept


def test_a_damaged_outbox_entry_is_moved_aside_and_the_run_finishes(ready_store, caplog):
    store = ready_store
    uri = store["uri"]
    run_id = tracking.create_run(uri, tracking.prepare(uri, "outbox"), "r", {})
    outbox = store["root"] / "outbox" / run_id
    outbox.mkdir(parents=True)
    (outbox / "00000001.json").write_text("{not json")
    (outbox / "notes.json").write_text("{}")
    logger = tracking.RunLogger(uri, run_id, retries=0, outbox_dir=outbox, final_wait_s=5)
    logger._next_attempt = 0.0
    logger.log_metrics({"x": 1.0}, step=1)
    logger.end(tracking.FINISHED)
    assert tracking.run_status(uri, run_id) == tracking.FINISHED
    aside = outbox.with_name(outbox.name + ".damaged")
    assert sorted(p.name for p in aside.iterdir()) == ["00000001.json", "notes.json"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(outbox / "00000001.json") in m and "moved it to" in m for m in messages), messages
    assert [step for step, _ in tracking.metric_history(uri, run_id, "x")] == [1]


def _refused(*args: str) -> str:
    """The BenchError message of `bench ARGS`, run in this process (the real Typer app)."""
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, list(args))
    assert isinstance(result.exception, BenchError), (result.output, result.exception)
    return str(result.exception)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--set", "train.lr=inf"], "train.lr (command line: --set train.lr=inf) must be a finite number"),
        (["--set", "train.min_lr=nan"], "train.min_lr (command line: --set train.min_lr=nan) must be a finite number"),
        (["--seeds", "-1"], "seeds (command line: --seeds) must be at least 0"),
        (["--set", "splits=official"], "digits has no 'official' splits"),
        (["--set", "model.dropout=nan"], "model.dropout (command line: --set model.dropout=nan) must be a finite number"),
    ],
)
def test_bad_numbers_and_choices_stop_before_the_store(store, options, message):
    assert message in _refused("run", "--datasets", "digits", "--models", "resnet18", *store_args(store), *options)
    assert not (store["root"] / "mlflow.db").exists()  # stopped before the store, let alone a run


@pytest.mark.parametrize("option", [["--set", "train.lr=nan"], ["--checkpoint-dir", "/proc/bench-checkpoints"]])
def test_nan_lr_and_unwritable_checkpoint_folder_exit_2_before_training(store, option, capsys):
    code, out, err = cli(capsys, "run", "--datasets", "digits", "--models", "resnet18", "--max-epochs", "1", *store_args(store), *option)
    assert code == 2, out + err
    assert ("train.lr (command line: --set train.lr=nan) must be a finite number" if "--set" in option else "/proc/bench-checkpoints is not writable") in err
    assert "Traceback" not in err and "epoch" not in out
    assert not (store["root"] / "mlflow.db").exists()


def test_a_checkpoint_folder_that_is_a_file_or_under_one_is_refused(store):
    as_file = store["root"] / "a-file"
    as_file.write_text("")
    for folder, reason in ((as_file, "is a file"), (as_file / "sub", "is not writable")):
        message = _refused("run", "--datasets", "digits", "--models", "resnet18", *store_args(store), "--checkpoint-dir", str(folder))
        assert reason in message and str(folder) in message


def test_bad_tracking_uris_and_experiments_are_refused_and_create_nothing(store, tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    for uri, message in ((f"sqlite:///{missing}/x.db", "does not exist"), ("", "--tracking-uri is empty")):
        args = [a if a != store["uri"] else uri for a in store_args(store)]
        assert message in _refused("run", "--datasets", "digits", "--models", "resnet18", *args)
    assert not missing.parent.exists()
    assert "--experiment is empty" in _refused("run", "--datasets", "digits", *store_args(store, experiment=" "))


def _half_migrated(path) -> None:
    """A sqlite store as a kill in its first migration leaves it: migrated up to the revision before
    one that rebuilds `metrics`, with alembic's half-made copy `_alembic_tmp_metrics` left behind."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    url = f"sqlite:///{path}"
    engine = sqlalchemy.create_engine(url)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "90e64c465722")  # the next one (181f10493468) rebuilds metrics
    engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE _alembic_tmp_metrics AS SELECT * FROM metrics")


def test_a_half_migrated_sqlite_store_is_repaired(store):
    path = store["root"] / "mlflow.db"
    _half_migrated(path)
    assert tracking.prepare(store["uri"], "repaired")
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "metrics" in tables and not any(t.startswith("_alembic_tmp_") for t in tables)


def test_error_text_with_brackets_is_printed_literally():
    from rich.console import Console

    from bench.config.spec import RunSpec
    from bench.execution.grid import GridResult
    from bench.execution.progress import GridDisplay, print_problems
    from bench.execution.tasks import Task, TaskState

    error = "ValueError: autodetected range of [nan, nan] is not finite"
    state = TaskState(Task(RunSpec("digits", "resnet18"), "r" * 32, resumed=False), status="failed", slot="cpu#0", error=error)
    console = Console(record=True, width=200, force_terminal=False)
    print_problems(console, GridResult([state]).rows())
    GridDisplay(console).update([state])
    text = console.export_text()
    assert text.count("range of [nan, nan] is not finite") == 2, text
    assert "digits/resnet18/42 [cpu#0] failed" in text
