"""HDF5 image datasets (PCam) as read-only uint8 memory maps, so no h5py call sits in the training loop.

Where HDF5 stores a dataset as one plain block of bytes (contiguous layout, no filter), the rows are
mapped straight from the .h5 file: nothing is copied or written. Otherwise (chunked or compressed
storage) the rows are decoded once, block by block, into a ``.npy`` decoded cache that is mapped
instead. Either way every worker on a machine reads the same pages of the page cache, and any rows of
a shuffled batch come at memory speed once the file has been read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.data import identity
from bench.data.cache import Streamed, cached_arrays, files_fingerprint

BLOCK_ROWS = 2048  # rows decoded at a time into a cache (56 MB of PCam)


@dataclass(frozen=True)
class H5Layout:
    """What a dataset in an HDF5 file holds, and where: ``offset`` is the byte offset of its rows in
    the file when they lie there as one plain block (mappable), else None."""

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int | None


def h5_layout(path: Path, key: str, on_error: Callable[[Path, str], BenchError]) -> H5Layout:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            dataset = handle[key]
            plain = dataset.chunks is None and not dataset.external and dataset.dtype.isnative
            offset = dataset.id.get_offset() if plain else None
            return H5Layout(tuple(dataset.shape), dataset.dtype, offset)
    except KeyError:
        raise on_error(path, f"has no dataset {key!r}") from None
    except OSError as error:
        raise on_error(path, f"is not a readable HDF5 file ({error})") from None


def mapped_rows(
    path: Path, key: str, layout: H5Layout, cache: Path, on_error: Callable[[Path, str], BenchError]
) -> np.ndarray:
    """The dataset's rows as a read-only memory map: of the .h5 file itself when its layout allows,
    else of a decoded cache in the folder ``cache`` (built on first use, keyed by the file's identity)."""
    if layout.shape[0] == 0:
        return np.empty(layout.shape, layout.dtype)
    if layout.offset is not None:
        rows = np.memmap(path, dtype=layout.dtype, mode="r", offset=layout.offset, shape=layout.shape)
        identity.record(rows, files_fingerprint([path], extra=key))  # the file's name, size and time
        return rows
    rows = Streamed(layout.shape, layout.dtype, lambda: _blocks(path, key, layout.shape[0], on_error))
    return cached_arrays(cache, files_fingerprint([path], extra=key), lambda: {key: rows})[key]


def _blocks(path: Path, key: str, count: int, on_error: Callable[[Path, str], BenchError]) -> Iterator[np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            dataset = handle[key]
            for start in range(0, count, BLOCK_ROWS):
                yield dataset[start : min(start + BLOCK_ROWS, count)]
    except (OSError, ValueError) as error:
        raise on_error(path, f"could not be read ({error})") from None
