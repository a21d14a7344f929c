"""Tiny ImageNet (protocol 2.9, inferred from the 2025 notebook): train + labelled val pooled and
re-split 70/15/15, 64 px, no augmentation, ImageNet normalisation.

The JPEGs are decoded once (in threads, a block at a time) into a decoded cache beside the data, the
pooled train + val as one memory-mapped array, so later loads are fast and share the pages.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, CachedPool, register
from bench.data.cache import decoded_images, disk_size, files_fingerprint
from bench.data.downloads import Progress, Remote, extract, fetch
from bench.data.splits import SplitSet

FOLDER = "tiny-imagenet-200"
ARCHIVE = Remote(
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200.zip"
)
CACHE = "decoded-uint8"  # a folder of .npy files (bench.data.cache)
SIZE = 64


@register
class TinyImageNet(CachedPool):
    name = "tiny-imagenet"
    num_classes = 200
    in_channels = 3
    image_size = SIZE
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    class_names = ()  # the 200 WordNet ids, read from wnids.txt (DataBundle.class_names)
    protocol_section = "2.9"
    homepage = "http://cs231n.stanford.edu/tiny-imagenet-200.zip (extracted)"
    expected_sizes = {"train": 77_000, "val": 16_500, "test": 16_500}
    files = tuple(f"{FOLDER}/{f}" for f in ("wnids.txt", "train", "val/images", "val/val_annotations.txt"))
    pooled_parts = ("train", "val")  # protocol 2.9: ImageFolder(train) + ImageFolder(val)
    official_test = "val"  # --splits official: the labelled val set is the test set

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        archive = fetch(self.name, ARCHIVE, Path(data_dir), progress)
        extract(self.name, archive, Path(data_dir), FOLDER)
        archive.unlink()

    def _wnids(self, root: Path) -> list[str]:
        wnids = sorted(line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip())
        if not wnids or len(wnids) > self.num_classes:
            raise self.corrupt(root / "wnids.txt", f"lists {len(wnids)} classes, expected 1..{self.num_classes}")
        return wnids

    def _listing(self, root: Path) -> dict[str, list[tuple[Path, int]]]:
        """ImageFolder's order: classes sorted, then file names sorted, for train and for val."""
        wnids = self._wnids(root)
        label = {w: i for i, w in enumerate(wnids)}
        train = []
        for wnid in wnids:
            folder = root / "train" / wnid / "images"
            names = (
                sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpeg", ".jpg")))
                if folder.is_dir()
                else []
            )
            if not names:
                raise self.corrupt(folder, "has no JPEG images (every class in wnids.txt needs train images)")
            train.extend((folder / n, label[wnid]) for n in names)
        annotations = root / "val" / "val_annotations.txt"
        val = []
        for number, line in enumerate(annotations.read_text().splitlines(), start=1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in label:
                raise self.corrupt(annotations, f"line {number} does not name an image and a WordNet id from wnids.txt")
            val.append((fields[1], fields[0]))
        # The notebook sorted val into class folders first, so ImageFolder read it class by class.
        val_items = [(root / "val" / "images" / name, label[wnid]) for wnid, name in sorted(val)]
        return {"train": train, "val": val_items}

    def _decode(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as error:
            raise self.corrupt(path, f"is not a readable image ({error})") from None
        if pixels.shape != (SIZE, SIZE, 3):
            raise self.corrupt(path, f"is {pixels.shape[1]}x{pixels.shape[0]} pixels, expected {SIZE}x{SIZE}")
        return pixels

    def pool(self, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        root = Path(data_dir) / FOLDER
        listing = self._listing(root)
        items = [item for part in self.pooled_parts for item in listing[part]]
        missing = [p for p, _ in items if not p.exists()]
        if missing:
            raise self.corrupt(missing[0], f"is listed but missing ({len(missing)} images are)")
        paths = [p for p, _ in items]
        # "pooled": this cache's layout (one array), so a cache of each part apart is rebuilt, not misread
        fingerprint = files_fingerprint(paths, extra="pooled," + ",".join(self._wnids(root)))
        return self.cached_pool(
            root / CACHE,
            fingerprint,
            lambda: {
                "images": decoded_images(paths, self._decode, (3, SIZE, SIZE)),
                "labels": np.array([label for _, label in items], dtype=np.int64),
                "counts": np.array([len(listing[part]) for part in self.pooled_parts]),
            },
        )

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        parts = super().read_splits(data_dir, splits, seed)
        parts.class_names = tuple(self._wnids(Path(data_dir) / FOLDER))
        parts.notes.append(
            "tiny-imagenet: the final (2026) notebook is unavailable; this follows the 2025 one (protocol 2.9, 7.17)"
        )
        return parts

    def part_counts(self, data_dir: Path) -> dict[str, int]:
        listing = self._listing(Path(data_dir) / FOLDER)
        return {part: len(items) for part, items in listing.items()}

    def disk_size(self, data_dir: Path) -> int:
        return disk_size([Path(data_dir) / FOLDER])
