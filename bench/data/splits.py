"""Decoded splits and the seeded splits of the protocol: uint8 images with int64 labels, shared
between splits by index, and the 70/15/15 re-split (protocol 2.2) or the official split with a
validation hold-out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from bench.data.identity import identity_of

TRAIN_FRACTION, VAL_FRACTION = 0.70, 0.15  # protocol 2.2
HOLDOUT_FRACTION = 0.10  # --splits official: validation carved from the official train split
DIGEST_BYTES = 8 << 20  # hashed at a time: 2,730 SVHN images, 303 of PCam


@dataclass
class Split:
    """One split, decoded once: uint8 images and int64 labels.

    ``images`` is an (N, C, H, W) uint8 tensor, often on the pages of a memory-mapped file (a decoded
    cache, PCam's HDF5 rows), possibly a channels-last view of (N, H, W, C) rows; ``index`` (optional)
    selects this split's rows of a pooled tensor, so a 70/15/15 re-split shares one copy of the images.
    """

    labels: torch.Tensor
    images: torch.Tensor
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
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of this split's images."""
        return len(self) * self.images[0].numel() if len(self) else 0

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) contiguous CPU tensor of the images at ``index`` (positions in this split)."""
        index = torch.as_tensor(index, dtype=torch.long)
        if self.index is not None:
            index = self.index[index]
        rows = self.images.permute(0, 2, 3, 1)
        if rows.is_contiguous():  # (N, H, W, C) rows viewed as (N, C, H, W): copy whole rows, then transpose the batch
            return rows[index].permute(0, 3, 1, 2).contiguous()
        return self.images[index]

    def digest(self) -> "hashlib._Hash":
        """sha256 of this split's content, so two runs on different data are told apart: its labels,
        then its images: where the array under them has a recorded identity (a decoded cache, PCam's
        mapped rows), that identity and which rows of it this split takes; else the images'
        bytes in (N, C, H, W) order."""
        h = hashlib.sha256(self.labels.numpy().tobytes())
        source = identity_of(self.images)
        if source is not None:
            view = (self.images.storage_offset(), tuple(self.images.shape), self.images.stride())
            h.update(f"{source}:{view}".encode())
            if self.index is not None:
                h.update(self.index.numpy().tobytes())
            return h
        # Block by block: the same bytes, hence the same digest, as the whole split at once,
        # without two copies of it (630,420 SVHN images are 1.9 GB).
        for _, images in self.blocks(DIGEST_BYTES):
            h.update(images.numpy())
        return h

    def blocks(self, block_bytes: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, images) of consecutive rows, about ``block_bytes`` of images at a time."""
        rows = max(1, block_bytes // max(1, self.images[0].numel())) if len(self) else 1
        for start in range(0, len(self), rows):
            yield start, self.take(torch.arange(start, min(start + rows, len(self))))

    def materialize(self) -> torch.Tensor:
        """All of this split's images as one uint8 tensor."""
        if self.index is None:
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
