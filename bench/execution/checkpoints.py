"""Checkpoint folders left behind: those of finished runs are removed, those of runs deleted in MLflow
reported (or removed on request)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench import tracking
from bench.execution.mailbox import Mailbox


@dataclass
class Leftovers:
    """What `tidy_checkpoints` found in the checkpoint folder."""

    removed: list[str] = field(default_factory=list)  # run ids whose run had FINISHED
    deleted: list[Path] = field(default_factory=list)  # folders of runs deleted in MLflow
    deleted_bytes: int = 0


def tidy_checkpoints(uri: str, checkpoint_root: Path, remove_deleted: bool = False) -> Leftovers:
    """Remove the checkpoint folders of FINISHED runs (a kill after the end can leave one behind) and
    find those of runs deleted in MLflow: removed with `remove_deleted`, else reported with their size.

    A folder whose run this store does not know is left alone: it may belong to another store.
    """
    found = Leftovers()
    root = Path(checkpoint_root)
    if not root.is_dir():
        return found
    Mailbox.remove_stale(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and RUN_ID.fullmatch(p.name)):
        run = tracking.find_run(uri, folder.name)
        if run is None:
            continue
        if run.deleted:
            if remove_deleted:
                shutil.rmtree(folder, ignore_errors=True)
                found.removed.append(folder.name)
            else:
                found.deleted.append(folder)
                found.deleted_bytes += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        elif run.status == tracking.FINISHED:
            shutil.rmtree(folder, ignore_errors=True)
            found.removed.append(folder.name)
    return found


RUN_ID = re.compile(r"[0-9a-f]{32}")
