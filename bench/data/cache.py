"""Decoded caches beside a dataset's files: decode once, keyed by the sources' fingerprint."""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.core.files import atomic_write_bytes


def disk_size(paths: list[Path]) -> int:
    """Bytes used by these files and folders (folders walked)."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            for root, _, files in os.walk(path):
                total += sum((Path(root) / f).stat().st_size for f in files)
    return total


def files_fingerprint(paths: list[Path], extra: str = "") -> str:
    """A cheap identity for a set of source files (names, sizes, modification times)."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz beside the data; readers never see a half-written file."""
    atomic_write_bytes(path, lambda stream: np.savez(stream, **arrays))


def cached_arrays(cache: Path, fingerprint: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays decoded once and kept in ``cache`` (an .npz keyed by the sources' fingerprint).

    A cache that cannot be written (read-only data dir) only costs a warning: the data still loads.
    """
    if cache.exists():
        try:
            with np.load(cache) as stored:
                if str(stored["fingerprint"]) == fingerprint:
                    return {k: stored[k] for k in stored.files if k != "fingerprint"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a stale or damaged cache of ours is simply rebuilt
    arrays = build()
    try:
        save_npz_atomic(cache, {**arrays, "fingerprint": np.array(fingerprint)})
    except OSError as error:
        warnings.warn(f"could not write the decoded cache {cache} ({error}); the next load decodes again", stacklevel=2)
    return arrays
