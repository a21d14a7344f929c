"""The outbox: a run's logging calls that the store did not take yet, kept on disk in order."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from bench.core.files import atomic_write_bytes

log = logging.getLogger(__name__)


def outbox_root() -> Path:
    """Where loggers keep what the store has not taken yet: $BENCH_OUTBOX_DIR, else a per-user cache.

    A per-user folder (not a temporary one) survives the process, so rerunning the same command,
    even on another node of a cluster with a shared home, replays what the last attempt could not send.
    """
    if os.environ.get("BENCH_OUTBOX_DIR"):
        return Path(os.environ["BENCH_OUTBOX_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "gradattn-bench" / "outbox"



# Every kind `RunLogger._deliver` handles; an entry of any other kind is damaged and moved aside.
ENTRY_KINDS = ("params", "tags", "metrics", "history", "dataset", "artifact", "clear_failure", "end")


class Outbox:
    """Logging calls of one run that the store did not take yet, on disk and in order.

    Each entry is `NNNNNNNN.json` (what to do) and, for an artifact, a copy of its file in
    `NNNNNNNN.d/`; an entry is deleted once delivered. The folder exists only while entries wait.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def entries(self) -> list[Path]:
        """The waiting entries in order; a file whose name is not a sequence number is moved aside."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            if path.stem.isdigit():
                found.append(path)
            else:
                self.quarantine(path, "its name is not a sequence number")
        return found

    def __len__(self) -> int:
        return len(self.entries())

    def put(self, kind: str, payload: dict[str, Any], file: Path | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entries = self.entries()
        number = int(entries[-1].stem) + 1 if entries else 1
        entry = self.directory / f"{number:08d}.json"
        if file is not None:
            files = entry.with_suffix(".d")
            files.mkdir(exist_ok=True)
            shutil.copy2(file, files / Path(file).name)  # the caller's file may be temporary
            payload = payload | {"file": str(files / Path(file).name)}
        text = json.dumps({"kind": kind, "payload": payload})
        atomic_write_bytes(entry, lambda handle: handle.write(text.encode()))  # a crash leaves no half-written entry

    def read(self, entry: Path) -> tuple[str, dict[str, Any]] | None:
        """(kind, payload) of an entry; None, the entry moved aside, when it is not one we wrote."""
        try:
            raw = json.loads(entry.read_text())
            kind, payload = raw["kind"], raw["payload"]
            if kind not in ENTRY_KINDS or not isinstance(payload, dict):
                raise ValueError(f"unknown kind {kind!r}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.quarantine(entry, f"{error.__class__.__name__}: {str(error)[:80]}")
            return None
        return kind, payload

    def quarantine(self, entry: Path, reason: str) -> None:
        """Move a damaged entry (and its files) beside the outbox, so the rest can be delivered."""
        aside = self.directory.with_name(self.directory.name + ".damaged")
        aside.mkdir(parents=True, exist_ok=True)
        for part in (entry, entry.with_suffix(".d")):
            if part.exists():
                os.replace(part, aside / part.name)
        log.warning("Outbox entry %s is damaged (%s); moved it to %s and went on without it.", entry, reason, aside)
        if self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()

    def remove(self, entry: Path) -> None:
        shutil.rmtree(entry.with_suffix(".d"), ignore_errors=True)
        entry.unlink(missing_ok=True)
        if self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()
