"""Advisory file locks (fcntl): one process at a time creates a store or writes a checkpoint folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True):
    """Hold an exclusive lock on `path` (created if needed) for the block.

    Non-blocking, a lock another process holds raises `BlockingIOError` at once. The lock file
    records the holder's pid, for the message of whoever finds it taken.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(path: Path) -> str:
    """The pid written in a lock file, or '?'."""
    try:
        return Path(path).read_text().strip() or "?"
    except OSError:
        return "?"
