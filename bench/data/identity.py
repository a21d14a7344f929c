"""What a memory-mapped array holds, named without reading it: the digest its decoded cache recorded
when the cache was written (or, for rows mapped straight from a source file, that file's identity).

A run logs a digest of its splits; hashing them cost 10 s per SVHN run and a minute per PCam run
(9 GB read through). With an identity recorded, a split's digest is that identity, the rows it
takes of the array and its labels: a lookup, whatever the size.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

# (address, bytes) of a live array -> (the array, weakly, so a freed one's address is never taken for it; its identity)
_RECORDED: dict[tuple[int, int], tuple[weakref.ref, str]] = {}


def record(array: np.ndarray, identity: str) -> None:
    """Remember what ``array`` holds for as long as it lives."""
    for key in [key for key, (alive, _) in _RECORDED.items() if alive() is None]:
        del _RECORDED[key]
    _RECORDED[(array.ctypes.data, array.nbytes)] = (weakref.ref(array), identity)


def identity_of(tensor: torch.Tensor) -> str | None:
    """The identity recorded for the whole array under ``tensor`` (a view of it, any rows), or None."""
    storage = tensor.untyped_storage()
    entry = _RECORDED.get((storage.data_ptr(), storage.nbytes()))
    if entry is None or entry[0]() is None:
        return None
    return entry[1]
