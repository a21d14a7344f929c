"""Options that several commands and the Python API share, each declared once as a setting with its
flag: where runs go (`Places`) and what each run keeps (`Keeping`). The command line builds its
options from these declarations (bench.cli._app.with_options), the Python API takes the same names
as keywords, and `given` checks a value from either against its declaration, naming where it came
from."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config.schema import Key, Schema, setting
from bench.core.errors import BenchError

DEFAULT_EXPERIMENT = "gradattn-bench"


@dataclass(frozen=True)
class Places:
    """Where runs read data, keep checkpoints and log: the same for every backend and command."""

    data_dir: Path | None = setting(None, "Where the datasets live.", unset="$BENCH_DATA_DIR or ./data", flag="--data-dir")
    checkpoint_dir: Path | None = setting(
        None, "Checkpoints of unfinished runs (removed when a run finishes).", unset="$BENCH_CHECKPOINT_DIR or ./checkpoints", flag="--checkpoint-dir"
    )
    tracking_uri: str | None = setting(
        None, "MLflow tracking store or server.", unset="$MLFLOW_TRACKING_URI or MLflow's default", flag="--tracking-uri"
    )
    experiment: str = setting(DEFAULT_EXPERIMENT, "MLflow experiment.", flag="--experiment")

    def checked(self) -> "Places":
        """Defaults filled in and every place checked before any work: an empty name or a folder
        that is a file, or a checkpoint folder this process cannot write, is one sentence."""
        for name in ("tracking_uri", "experiment"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise BenchError(f"{flag_of(Places, name)} is empty; give a value or leave the option out for the default.")
        from bench.data import default_data_dir

        data_dir = Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()
        checkpoint_dir = Path(self.checkpoint_dir or os.environ.get("BENCH_CHECKPOINT_DIR") or "checkpoints").expanduser()
        _check_folder(data_dir, "--data-dir", writable=False)  # read-only data (a container's) is fine
        _check_folder(checkpoint_dir, "--checkpoint-dir", writable=True)
        return dataclasses.replace(self, data_dir=data_dir, checkpoint_dir=checkpoint_dir)


@dataclass(frozen=True)
class Keeping:
    """What every run keeps beside its metrics, and the plugins its models and datasets come from."""

    plugins: tuple[str, ...] = setting(
        (), "A module or .py file that registers models or datasets (repeatable); installed plugins load with no option.",
        unset="none", flag="--plugin", repeatable=True,
    )
    log_model: bool = setting(True, "Keep each run's weights as its MLflow model (off: no weights kept).", flag="--log-model/--no-log-model")
    system_metrics: bool = setting(
        True, "Sample CPU, memory and GPU use into each run's system/ metrics (MLflow's monitor).", flag="--system-metrics/--no-system-metrics"
    )


def _check_folder(path: Path, option: str, writable: bool) -> None:
    """A folder a command needs: not a file, and (if `writable`) one this process can create and write in."""
    if path.exists() and not path.is_dir():
        raise BenchError(f"{option} {path} is a file, not a folder; pass a folder.")
    if not writable:
        return
    existing = path
    while not existing.exists() and existing != existing.parent:  # created later, by the first run
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise BenchError(f"{option} {path} is not writable ({error.strerror or error}); pass a folder you can write to.") from None


def keys(cls: type) -> dict[str, Key]:
    """The declared settings of an options dataclass, by field name."""
    return {key.field.name: key for key in Schema(cls).keys.values()}


def flag_of(cls: type, name: str) -> str:
    return keys(cls)[name].typed


def given(cls: type, values: dict[str, Any], origin: str, base: Any = None) -> Any:
    """``base`` (default: the declared defaults) with ``values`` (None: not given) checked against
    their declarations; text is parsed as the command line writes it (``1,2,3`` for a list)."""
    declared = keys(cls)
    unknown = set(values) - set(declared)
    if unknown:
        raise BenchError(f"Unknown option {', '.join(sorted(unknown))} ({origin}); choose from {', '.join(declared)}.")
    checked = {}
    for name, value in values.items():
        if value is None:
            continue
        key = declared[name]
        where = f"{origin} {key.typed}" if origin.startswith("command line") else f"{origin}({name}=...)"
        if isinstance(value, (list, tuple)) and typing.get_origin(key.kind) is tuple:
            value = tuple(value)
        elif isinstance(value, str) and key.kind is Path:
            value = Path(value)
        checked[name] = key.coerce(value, where, from_text=isinstance(value, str) and key.kind is not str)
    return dataclasses.replace(base if base is not None else cls(), **checked)
