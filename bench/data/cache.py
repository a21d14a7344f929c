"""Decoded caches beside a dataset's files: decode once, keyed by the sources' fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.core.files import atomic_write_bytes
from bench.data import identity

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


@dataclass(frozen=True)
class Streamed:
    """An array too large to decode in memory (PCam's 7 GB): its shape, dtype and a function that
    yields its rows block by block, in order. The cache writes the blocks straight to its file."""

    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Callable[[], Iterator[np.ndarray]]

    def write(self, stream) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(self.dtype)), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(stream, header)
        rows = 0
        for block in self.blocks():
            stream.write(np.ascontiguousarray(block, dtype=self.dtype).data)
            rows += len(block)
        if rows != self.shape[0]:
            raise ValueError(f"the blocks held {rows} rows where {self.shape[0]} were announced")

    def materialize(self) -> np.ndarray:
        return np.concatenate(list(self.blocks())) if self.shape[0] else np.empty(self.shape, self.dtype)


Decoded = np.ndarray | Streamed
IMAGE_BLOCK_BYTES = 32 << 20  # decoded images written at a time into a cache (2,730 of Tiny ImageNet, 222 at 224 px)


def decoded_images(paths: list[Path], decode: Callable[[Path], np.ndarray], shape: tuple[int, int, int]) -> Streamed:
    """Image files decoded on a thread pool, about 32 MB at a time, as (N, C, H, W) uint8 rows of
    ``shape`` (C, H, W): ``decode(path)`` returns one (H, W, C) image. The cache writes each block as it
    comes, so decoding holds a block or two, not every image (and a stacked and a transposed copy of them)."""
    rows = max(1, IMAGE_BLOCK_BYTES // int(np.prod(shape)))

    def blocks() -> Iterator[np.ndarray]:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, len(paths), rows):
                chunk = paths[start : start + rows]
                block = np.empty((len(chunk), *shape), np.uint8)
                for row, image in enumerate(pool.map(decode, chunk)):
                    block[row] = image.transpose(2, 0, 1)
                yield block

    return Streamed((len(paths), *shape), np.dtype(np.uint8), blocks)


def cached_arrays(cache: Path, fingerprint: str, build: Callable[[], dict[str, Decoded]]) -> dict[str, np.ndarray]:
    """Arrays decoded once and kept in the folder ``cache``, keyed by the sources' fingerprint.

    Each array is a plain ``.npy`` opened as a read-only memory map, so every worker on the machine
    reads the same pages of the page cache instead of inflating its own copy. Files are written
    atomically and readable as the umask allows; ``manifest.json`` is written last and names the
    fingerprint and each file's sha256 (taken as it is written: the arrays' identities, see
    ``bench.data.identity``), so a reader never takes a half-written or stale cache for a current
    one. A cache that cannot be written (read-only data dir) only costs a warning: the data still
    loads (a ``Streamed`` array then in memory). A full disk stops the load with ``DiskFull``, naming
    the folder (decoding gigabytes into memory instead would only move the failure).
    """
    stored = _open(cache, fingerprint)
    if stored is not None:
        return stored
    arrays = build()
    try:
        digests = {}
        for name, array in arrays.items():
            digest = hashlib.sha256()
            atomic_write_bytes(cache / f"{name}.npy", lambda stream, a=array, d=digest: _writer(a)(_Hashing(stream, d)))
            digests[name] = digest.hexdigest()
        manifest = json.dumps({"fingerprint": fingerprint, "arrays": sorted(arrays), "digests": digests})
        atomic_write_bytes(cache / MANIFEST, lambda stream: stream.write(manifest.encode()))
    except OSError as error:
        warnings.warn(f"could not write the decoded cache {cache} ({error}); the next load decodes again", stacklevel=2)
        return _in_memory(arrays)
    # The mapped files, so the decoded copy can go (in memory only if another writer replaced them meanwhile).
    return _open(cache, fingerprint) or _in_memory(arrays)


def _in_memory(arrays: dict[str, Decoded]) -> dict[str, np.ndarray]:
    return {name: a.materialize() if isinstance(a, Streamed) else a for name, a in arrays.items()}


def _writer(array: Decoded) -> Callable:
    if isinstance(array, Streamed):
        return array.write
    return lambda stream: np.save(stream, array, allow_pickle=False)


class _Hashing:
    """A file that hashes what is written through it."""

    def __init__(self, stream, digest: "hashlib._Hash") -> None:
        self.stream, self.digest = stream, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.stream.write(data)


def _open(cache: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The cached arrays as memory maps, or None where the cache is missing, stale or damaged."""
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
        if manifest["fingerprint"] != fingerprint:
            return None
        arrays = {name: np.load(cache / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]}
        for name, array in arrays.items():
            identity.record(array, manifest["digests"][name])  # a cache of an earlier version has none: rebuilt
        return arrays
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a stale or damaged cache of ours is simply rebuilt


def shared_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor on a cached array's pages, without a copy. torch warns that it cannot mark a
    read-only map read-only; nothing writes to decoded images (batches are gathered copies)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
