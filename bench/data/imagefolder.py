"""Folders of images in class folders (torchvision's ImageFolder layout), as a dataset.

    pets/cat/001.png, pets/dog/002.jpg, ...                       -> split 70/15/15 by the seed
    pets/train/cat/..., pets/val/cat/..., pets/test/cat/...       -> the given splits (val optional:
                                                                     a seeded 10% hold-out of train)

``--datasets folder:PATH`` names one with everything inferred; a study file's ``[datasets.NAME]``
(``root``, and optionally ``image_size``, ``channels``, ``mean``, ``std``, ``batch_size``) names one
with settings. Inferred: the classes (sorted folder names), the channels (1 when every image is
grayscale, else 3), the size (the shorter side of the most common image size) and the per-channel
mean and std of the training split. Every image is decoded and resized once into the same uint8
tensors as the built-in datasets; batches are augmented on the device like theirs (no augmentation
by default: a generic folder has no protocol to follow).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.data.base import Dataset, add
from bench.data.splits import Split, SplitSet, holdout, index_lists, resplit, split_views

PREFIX = "folder:"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")
SETTINGS = ("image_size", "channels", "mean", "std", "batch_size")


class ImageFolder(Dataset):
    """One folder of class folders; everything not given is inferred when the splits are read."""

    protocol_section = "-"  # not part of the original study
    split_choices = ("protocol",)

    def __init__(
        self,
        name: str,
        root: str | Path,
        image_size: int | None = None,
        channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.name, self.root = name, Path(root).expanduser()
        self.homepage = f"class folders under {self.root}"
        self._given = {"image_size": image_size, "channels": channels, "mean": mean, "std": std}
        if batch_size is not None:
            self.batch_size = int(batch_size)
        if channels not in (None, 1, 3):
            raise BenchError(f"dataset {name!r}: channels must be 1 or 3, got {channels!r}")
        for key in ("mean", "std"):
            values = self._given[key]
            if values is not None and len(values) != (channels or len(values)):
                raise BenchError(f"dataset {name!r}: {key} needs one value per channel, got {list(values)}")
        # Known once the listing is read (bench data list, sizes) or the splits are decoded (load).
        self.num_classes = 0
        self.in_channels = channels or 3
        self.image_size = image_size or 0
        self.mean = tuple(mean) if mean else (0.5,) * self.in_channels
        self.std = tuple(std) if std else (0.5,) * self.in_channels

    # -- files ---------------------------------------------------------------------------------

    def expected_files(self, data_dir: Path) -> list[Path]:
        return [self.root]

    def how_to_get(self, data_dir: Path) -> str:
        return (
            f"{self.name} reads images from {self.root}: put one folder per class there "
            "(or train/, val/ and test/ folders that each hold the class folders)."
        )

    def repair_hint(self) -> str:
        return "replace or delete that file"

    def download(self, data_dir: Path, progress=None) -> None:
        raise BenchError(f"{self.name} is your own folder of images ({self.root}); there is nothing to download.")

    def _listing(self) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, int]]]]:
        """Class names and, per part (train/val/test, or "all"), the (file, label) pairs in sorted order."""
        if not self.root.is_dir():
            raise BenchError(self.how_to_get(Path(".")))
        split_layout = (self.root / "train").is_dir() and (self.root / "test").is_dir()
        parts = [p for p in SPLIT_FOLDERS if (self.root / p).is_dir()] if split_layout else ["all"]
        folders = {part: self.root / part if split_layout else self.root for part in parts}
        classes = sorted({entry.name for folder in folders.values() for entry in os.scandir(folder) if entry.is_dir()})
        if len(classes) < 2:
            raise BenchError(
                f"{self.name}: {folders[parts[0]]} needs at least two class folders, found {len(classes)}; "
                f"{self.how_to_get(Path('.')).split(': ', 1)[1]}"
            )
        label = {name: index for index, name in enumerate(classes)}
        listing = {}
        for part, folder in folders.items():
            items = [
                (folder / name / file, label[name])
                for name in classes
                if (folder / name).is_dir()
                for file in sorted(os.listdir(folder / name))
                if file.lower().endswith(EXTENSIONS)
            ]
            if not items:
                raise BenchError(f"{self.name}: {folder} holds no images ({', '.join(EXTENSIONS)}) in its class folders.")
            listing[part] = items
        return tuple(classes), listing

    def sizes(self, data_dir: Path) -> dict[str, int]:
        classes, listing = self._listing()
        self.num_classes = len(classes)
        if "all" in listing:
            n = len(listing["all"])
            return {part: len(index) for part, index in resplit(n, 0).items()}
        train = len(listing["train"]) if "val" in listing else len(listing["train"]) - len(holdout(len(listing["train"]), 0)["val"])
        val = len(listing["val"]) if "val" in listing else len(listing["train"]) - train
        return {"train": train, "val": val, "test": len(listing["test"])}

    # -- decoding ------------------------------------------------------------------------------

    def _open(self, path: Path):
        from PIL import Image

        try:
            image = Image.open(path)
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise self.corrupt(path, f"is not a readable image ({error})") from None
        return image

    def _infer(self, files: list[Path]) -> None:
        """Channels and size from the images' headers (cheap: PIL reads no pixels for them)."""
        from PIL import Image

        modes, shapes = Counter(), Counter()
        for path in files:
            try:
                with Image.open(path) as image:
                    modes[image.mode in ("1", "L", "I", "I;16", "F")] += 1
                    shapes[image.size] += 1
            except (OSError, SyntaxError, ValueError) as error:
                raise self.corrupt(path, f"is not a readable image ({error})") from None
        self.in_channels = self._given["channels"] or (1 if modes[True] == len(files) else 3)
        self.image_size = self._given["image_size"] or min(shapes.most_common(1)[0][0])

    def _decode(self, path: Path) -> np.ndarray:
        from PIL import Image

        image = self._open(path).convert("L" if self.in_channels == 1 else "RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def _decode_all(self, items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = np.stack(list(pool.map(self._decode, (path for path, _ in items))))
        return torch.from_numpy(images), torch.tensor([label for _, label in items], dtype=torch.int64)

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        classes, listing = self._listing()
        self.num_classes = len(classes)
        self._infer([path for items in listing.values() for path, _ in items])
        if "all" in listing:
            images, labels = self._decode_all(listing["all"])
            chosen = resplit(len(labels), seed)
            views = split_views(images, labels, chosen)
            note = f"{self.name}: {len(labels)} images in {len(classes)} class folders, seeded 70/15/15 split (seed {seed})"
            parts = SplitSet(views["train"], views["val"], views["test"], index_lists(chosen), [note], classes)
        else:
            train_images, train_labels = self._decode_all(listing["train"])
            test = Split(*reversed(self._decode_all(listing["test"])))
            if "val" in listing:
                parts = SplitSet(Split(train_labels, train_images), Split(*reversed(self._decode_all(listing["val"]))), test)
                parts.notes.append(f"{self.name}: the train/val/test folders of {self.root}")
            else:
                chosen = holdout(len(train_labels), seed)
                views = split_views(train_images, train_labels, chosen)
                parts = SplitSet(views["train"], views["val"], test, index_lists(chosen))
                parts.notes.append(f"{self.name}: train/test folders; validation is a seeded 10% hold-out of train (seed {seed})")
            parts.class_names = classes
        self._infer_statistics(parts.train)
        parts.notes.append(
            f"{self.name}: {self.in_channels} channel(s) at {self.image_size} px, mean {_rounded(self.mean)}, std {_rounded(self.std)}"
        )
        return parts

    def _infer_statistics(self, train: Split) -> None:
        if self._given["mean"] and self._given["std"]:
            self.mean, self.std = tuple(self._given["mean"]), tuple(self._given["std"])
            return
        pixels = train.materialize().to(torch.float64).div_(255).transpose(0, 1).reshape(self.in_channels, -1)
        self.mean = tuple(self._given["mean"] or pixels.mean(dim=1).tolist())
        self.std = tuple(self._given["std"] or pixels.std(dim=1).clamp_min(1e-3).tolist())


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 4) for v in values]


def from_path(path: str) -> ImageFolder:
    """The dataset behind ``folder:PATH`` (settings inferred)."""
    if not path:
        raise BenchError("folder: needs a path, e.g. --datasets folder:data/pets.")
    return ImageFolder(PREFIX + path, path)


def register_folder(name: str, root: str | Path, **settings: Any) -> ImageFolder:
    """Register a named folder dataset (a study file's ``[datasets.NAME]``, or a plugin's call)."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise BenchError(f"dataset {name!r}: unknown settings {sorted(unknown)}; allowed: root, {', '.join(SETTINGS)}")
    dataset = ImageFolder(name, root, **settings)
    add(dataset)
    return dataset
