"""Where Optuna studies live: an RDB URL (sqlite, PostgreSQL, MySQL) or ``journal:PATH``.

The default is a sqlite file beside the MLflow store, so a study and the runs of its trials travel
together. Several processes or machines pointing at the same storage work on one study together
(PostgreSQL, or the journal file on a shared filesystem; sqlite for processes on one machine).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import optuna

from bench import tracking
from bench.core.errors import BenchError

JOURNAL_PREFIX = "journal:"
DEFAULT_FILE = "optuna.db"
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def default_storage(tracking_uri: str) -> str:
    """`optuna.db` in the folder of a sqlite tracking store, else `./optuna.db`."""
    if tracking_uri.startswith("sqlite:///"):
        folder = os.path.dirname(tracking_uri[len("sqlite:///") :])
        return "sqlite:///" + os.path.join(folder, DEFAULT_FILE)
    return "sqlite:///" + DEFAULT_FILE


def check_study_name(name: str) -> str:
    # The name goes into MLflow filter strings and file names: keep it to a plain alphabet.
    if not STUDY_NAME.match(name):
        raise BenchError(
            f"Study name {name!r} may use only letters, digits, '.', '_' and '-' (at most 200); choose another --study-name."
        )
    return name


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage object for `url`; creates the tables (or the journal file) when missing.

    Call it once in the parent before any worker starts: several processes creating a fresh
    sqlite schema at once race, as they do for the MLflow store (see tracking.prepare).
    """
    try:
        if url.startswith(JOURNAL_PREFIX):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url[len(JOURNAL_PREFIX) :]).expanduser()
            if not path.name:
                raise ValueError("no file path after 'journal:'")
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs = {}
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # Workers of one study write at once; wait for sqlite's lock instead of failing.
            engine_kwargs = {"connect_args": {"timeout": 60}}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:
        lines = str(error).strip().splitlines()
        detail = f"{error.__class__.__name__}: {lines[0][:160]}" if lines else error.__class__.__name__
        raise BenchError(
            f"Cannot open the Optuna storage {tracking.shown_uri(url)} ({detail}); "
            "pass --storage as a database URL (sqlite:///optuna.db, postgresql://user:pass@host/db) or journal:PATH."
        ) from error


def create_or_load(
    storage: optuna.storages.BaseStorage,
    name: str,
    *,
    direction: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """The study `name`, created on first use; running the same command again continues it."""
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, load_if_exists=True, sampler=sampler, pruner=pruner
    )
    if study.direction.name.lower() != direction:
        raise BenchError(
            f"Study {name!r} in this storage is a {study.direction.name.lower()} study, not {direction}; choose another --study-name."
        )
    return study


def check_kind(study: optuna.Study, expected: dict[str, str]) -> None:
    """A resumed study must be the same search: same kind, dataset and model as it was created with.

    A fresh study records `expected` as user attributes.
    """
    recorded = {key: study.user_attrs.get(key) for key in expected}
    if all(value is None for value in recorded.values()):
        for key, value in expected.items():
            study.set_user_attr(key, value)
        return
    different = {k: (recorded[k], v) for k, v in expected.items() if recorded[k] != v}
    if different:
        what = "; ".join(f"{k} is {old!r}, not {new!r}" for k, (old, new) in different.items())
        raise BenchError(f"Study {study.study_name!r} already exists with other settings ({what}); choose another --study-name.")
