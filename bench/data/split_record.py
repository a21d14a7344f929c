"""The split indices a run records (protocol 7.8), stored compactly: one compressed .npz of the
smallest unsigned integers that hold them (1.9 MB for SVHN's 630,420 pooled rows, where indented
JSON took 7.5 MB). Runs logged before this kept a JSON file; ``read_split_indices`` reads both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError

ARTIFACT = "data/split_indices.npz"
LEGACY_ARTIFACT = "data/split_indices.json"  # runs logged before the .npz


def write_split_indices(indices: dict[str, list[int]], path: Path) -> None:
    """Each split's indices, in order, as one array of the .npz at ``path``."""
    largest = max((max(index, default=0) for index in indices.values()), default=0)
    dtype = np.min_scalar_type(largest)
    with open(path, "wb") as stream:
        np.savez_compressed(stream, **{name: np.asarray(index, dtype=dtype) for name, index in indices.items()})


def read_split_indices(path: Path) -> dict[str, list[int]]:
    """split name -> its indices, from a recorded .npz or a legacy .json."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            return {name: [int(i) for i in index] for name, index in json.loads(path.read_text()).items()}
        with np.load(path) as stored:
            return {name: stored[name].astype(np.int64).tolist() for name in stored.files}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise BenchError(f"{path} is not a readable split-indices file ({error}).") from None
