"""Decoded caches beside a dataset's files: decode once, keyed by the sources' fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.core.files import atomic_write_bytes

MANIFEST = "manifest.json"


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


def cached_arrays(cache: Path, fingerprint: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays decoded once and kept in the folder ``cache``, keyed by the sources' fingerprint.

    Each array is a plain ``.npy`` opened as a read-only memory map, so every worker on the machine
    reads the same pages of the page cache instead of inflating its own copy. Files are written
    atomically and readable as the umask allows; ``manifest.json`` is written last and names the
    fingerprint, so a reader never takes a half-written or stale cache for a current one. A cache
    that cannot be written (read-only data dir) only costs a warning: the data still loads.
    """
    stored = _open(cache, fingerprint)
    if stored is not None:
        return stored
    arrays = build()
    try:
        for name, array in arrays.items():
            atomic_write_bytes(cache / f"{name}.npy", lambda stream, a=array: np.save(stream, a, allow_pickle=False))
        manifest = json.dumps({"fingerprint": fingerprint, "arrays": sorted(arrays)})
        atomic_write_bytes(cache / MANIFEST, lambda stream: stream.write(manifest.encode()))
    except OSError as error:
        warnings.warn(f"could not write the decoded cache {cache} ({error}); the next load decodes again", stacklevel=2)
        return arrays
    return _open(cache, fingerprint) or arrays  # the mapped files, so the decoded copy can go


def _open(cache: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The cached arrays as memory maps, or None where the cache is missing, stale or damaged."""
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
        if manifest["fingerprint"] != fingerprint:
            return None
        return {name: np.load(cache / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a stale or damaged cache of ours is simply rebuilt


def shared_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor on a cached array's pages, without a copy. torch warns that it cannot mark a
    read-only map read-only; nothing writes to decoded images (batches are gathered copies)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
