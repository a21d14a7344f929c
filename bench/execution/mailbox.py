"""What workers and their parent tell each other, on every backend: each run's progress events
(start, epoch figures, outcome) go up, the parent's request to stop comes down.

The mailbox is a folder under the checkpoint folder, which every backend already needs on a
filesystem its workers share, so local processes, Ray tasks on other nodes and Slurm jobs all
reach it the same way. Each run's events are JSON lines in a file of its own, written by one
worker and read by the parent from where it last stopped; the stop request is a file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

STOP = "stop"
FOLDER = ".mailbox"  # under the checkpoint root; not a run id, so checkpoint tidying passes it by

Send = Callable[..., None]  # send(kind, payload=None)


class Mailbox:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._read: dict[str, int] = {}  # the parent's side: bytes of each run's events already read

    @classmethod
    def create(cls, checkpoint_root: Path) -> "Mailbox":
        """A fresh mailbox for one invocation of the driver."""
        from bench import tracking

        folder = Path(checkpoint_root) / FOLDER / tracking.new_owner()  # host:pid:random, see remove_stale
        folder.mkdir(parents=True)
        return cls(folder)

    @staticmethod
    def remove_stale(checkpoint_root: Path) -> None:
        """Remove the mailboxes of drivers on this host that died without removing theirs (SIGKILL)."""
        from bench import tracking

        root = Path(checkpoint_root) / FOLDER
        if not root.is_dir():
            return
        for folder in root.iterdir():
            if tracking.owner_gone(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        try:
            root.rmdir()
        except OSError:  # another driver's mailbox is still there
            pass

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the last mailbox leaves no trace in the checkpoint folder
        except OSError:
            pass

    def _events(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.jsonl"

    # -- the worker's side ---------------------------------------------------------------------------

    def sender(self, run_id: str) -> Send:
        """A function that sends one event of the run: one line, appended and closed at once, so the
        parent never reads half of it (close-to-open consistency on network filesystems)."""
        path = self._events(run_id)

        def send(kind: str, payload: dict[str, Any] | None = None) -> None:
            line = json.dumps({"kind": kind, "payload": payload or {}}) + "\n"
            with open(path, "a", encoding="utf-8") as file:
                file.write(line)

        return send

    def stop_requested(self) -> bool:
        return (self.folder / STOP).exists()

    # -- the parent's side ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        (self.folder / STOP).touch()

    def receive(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The run's events since the last call, in the order they were sent."""
        offset = self._read.get(run_id, 0)
        try:
            with open(self._events(run_id), "rb") as file:
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self._read[run_id] = offset + len(complete)
        events = [json.loads(line) for line in complete.splitlines() if line.strip()]
        return [(event["kind"], event["payload"]) for event in events]
