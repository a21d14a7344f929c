"""Decoded splits and the seeded splits of the protocol: uint8 images with int64 labels, shared
between splits by index, and the 70/15/15 re-split (protocol 2.2) or the official split with a
validation hold-out."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import BenchError

TRAIN_FRACTION, VAL_FRACTION = 0.70, 0.15  # protocol 2.2
HOLDOUT_FRACTION = 0.10  # --splits official: validation carved from the official train split
DIGEST_ROWS = 4096  # images hashed at a time


class H5Images:
    """An (N, H, W, C) uint8 HDF5 dataset read batch by batch, never loaded whole (PCam)."""

    def __init__(self, path: Path, key: str, on_error: Callable[[Path, str], BenchError]) -> None:
        import h5py

        self.path, self.key, self._on_error = Path(path), key, on_error
        self._file: h5py.File | None = None
        self._pid: int | None = None
        dataset = self._dataset()
        self.shape: tuple[int, ...] = tuple(dataset.shape)
        self.dtype = dataset.dtype

    def _dataset(self):
        import h5py

        # One handle per process: a handle inherited across fork is not safe to use.
        if self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as error:
                raise self._on_error(self.path, f"is not a readable HDF5 file ({error})") from None
            self._pid = os.getpid()
        try:
            return self._file[self.key]
        except KeyError:
            raise self._on_error(self.path, f"has no dataset {self.key!r}") from None

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        wanted = np.asarray(index, dtype=np.int64)
        if wanted.size == 0:
            return torch.empty((0, self.shape[3], self.shape[1], self.shape[2]), dtype=torch.uint8)
        # h5py reads increasing, unique indices; a contiguous run is one slice (eval batches).
        unique, inverse = np.unique(wanted, return_inverse=True)
        dataset = self._dataset()
        try:
            if unique[-1] - unique[0] + 1 == unique.size:
                block = dataset[int(unique[0]) : int(unique[-1]) + 1]
            else:
                block = dataset[unique]
        except (OSError, ValueError) as error:
            raise self._on_error(self.path, f"could not be read ({error})") from None
        return torch.from_numpy(np.ascontiguousarray(block[inverse])).permute(0, 3, 1, 2).contiguous()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}


@dataclass
class Split:
    """One split, decoded once: uint8 images and int64 labels.

    ``images`` is an (N, C, H, W) uint8 tensor or an H5Images view; ``index`` (optional) selects this
    split's rows of a pooled tensor, so a 70/15/15 re-split shares one copy of the images.
    """

    labels: torch.Tensor
    images: torch.Tensor | H5Images
    index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D int64 tensor, got {self.labels.dtype} {tuple(self.labels.shape)}")
        rows = len(self.index) if self.index is not None else len(self.images)
        if rows != len(self.labels):
            raise ValueError(f"{rows} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        if isinstance(self.images, torch.Tensor):
            return tuple(self.images.shape[1:])  # type: ignore[return-value]
        _, h, w, c = self.images.shape
        return (c, h, w)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) CPU tensor of the images at ``index`` (positions in this split)."""
        index = torch.as_tensor(index, dtype=torch.long)
        if self.index is not None:
            index = self.index[index]
        if isinstance(self.images, torch.Tensor):
            return self.images[index]
        return self.images.take(index)

    def digest(self) -> "hashlib._Hash":
        """sha256 of this split's decoded content: labels, and images (or, for an HDF5 view, its
        file, key and rows), so two runs on different data are told apart."""
        h = hashlib.sha256(self.labels.numpy().tobytes())
        if isinstance(self.images, torch.Tensor):
            # Block by block: the same bytes, hence the same digest, as the whole split at once,
            # without two copies of it (630,420 SVHN images are 1.9 GB).
            for start in range(0, len(self), DIGEST_ROWS):
                h.update(self.take(torch.arange(start, min(start + DIGEST_ROWS, len(self)))).contiguous().numpy())
        else:
            h.update(f"{self.images.path}:{self.images.key}:{self.images.shape}".encode())
            if self.index is not None:
                h.update(self.index.numpy().tobytes())
        return h

    def materialize(self) -> torch.Tensor:
        """All of this split's images as one uint8 tensor."""
        if isinstance(self.images, torch.Tensor) and self.index is None:
            return self.images
        return self.take(torch.arange(len(self)))


@dataclass
class SplitSet:
    """What a dataset's reader returns: the three splits and how they were made."""

    train: Split
    val: Split
    test: Split
    indices: dict[str, list[int]] | None = None
    notes: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] | None = None


def resplit_sizes(n: int) -> dict[str, int]:
    """protocol 2.2: int(0.70 N), int(0.15 N), and the rest to test."""
    n_train, n_val = int(TRAIN_FRACTION * n), int(VAL_FRACTION * n)
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def resplit(n: int, seed: int) -> dict[str, torch.Tensor]:
    """The notebooks' random 70/15/15 split, index for index (protocol 2.2): ``random_split`` draws
    one ``randperm(N)`` from ``Generator().manual_seed(seed)`` and slices it train, val, test."""
    sizes = resplit_sizes(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {
        "train": order[: sizes["train"]],
        "val": order[sizes["train"] : sizes["train"] + sizes["val"]],
        "test": order[sizes["train"] + sizes["val"] :],
    }


def holdout(n: int, seed: int) -> dict[str, torch.Tensor]:
    """A seeded validation hold-out of int(0.10 N) from an official train split (--splits official)."""
    n_val = int(HOLDOUT_FRACTION * n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {"train": order[: n - n_val], "val": order[n - n_val :]}


def split_views(images: torch.Tensor, labels: torch.Tensor, parts: dict[str, torch.Tensor]) -> dict[str, Split]:
    return {name: Split(labels[index], images, index) for name, index in parts.items()}


def index_lists(parts: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {name: index.tolist() for name, index in parts.items()}
