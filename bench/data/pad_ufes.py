"""PAD-UFES-20 (protocol 2.8): smartphone skin-lesion photos listed in metadata.csv, 6 classes,
224 px, batch 64. The images are decoded and resized once and kept as an .npz beside the data.

Splits: `protocol` is the notebook's image-level 70/15/15 shuffle, which lets one patient's lesions
fall in train and test (protocol 7.8, flagged in the notes); `grouped` keeps every patient in one
split and keeps the class proportions of the splits close to those of the whole set.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, Dataset, register
from bench.data.cache import cached_arrays, decoded_images, disk_size, files_fingerprint, shared_tensor
from bench.data.downloads import Progress
from bench.data.pipeline import BatchOp, ColorJitter, RandomAffine, RandomHorizontalFlip, RandomResizedCrop
from bench.data.splits import TRAIN_FRACTION, VAL_FRACTION, SplitSet, index_lists, resplit_sizes, split_views

FOLDER = "pad-ufes-20"
CACHE = "decoded-224-uint8"  # a folder of .npy files (bench.data.cache)
SIZE = 224
SOURCES = "Kaggle (`kaggle datasets download maxjen/pad-ufes-20`) or Mendeley Data (https://data.mendeley.com/datasets/zr7vgbcyr2/1)"
SPLIT_NAMES = ("train", "val", "test")


@register
class PadUfes20(Dataset):
    name = "pad-ufes-20"
    num_classes = 6
    in_channels = 3
    image_size = SIZE
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    batch_size = 64  # protocol 2.8
    # protocol 7.9: one mapping from the full metadata, alphabetical
    class_names = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
    protocol_section = "2.8"
    homepage = SOURCES
    split_choices = ("protocol", "grouped")
    expected_sizes = {"train": 1_608, "val": 344, "test": 346}

    # -- files ---------------------------------------------------------------------------------

    @staticmethod
    def _metadata(root: Path) -> Path | None:
        """metadata.csv, else the notebook's fallbacks (PAD-UFES-20_metadata.csv, any *metadata*.csv)."""
        for name in ("metadata.csv", "PAD-UFES-20_metadata.csv"):
            if (root / name).is_file():
                return root / name
        found = sorted(p for p in root.glob("*.csv") if "metadata" in p.name.lower()) if root.is_dir() else []
        return found[0] if found else None

    @staticmethod
    def _image_index(root: Path) -> dict[str, Path]:
        """file name -> path over images/, imgs/, the root and the archives' imgs_part_*/ folders
        (one listing per folder instead of the notebook's directory walk per image)."""
        folders = [root / "images", root / "imgs", root]
        for pattern in (
            "imgs_part_*",
            "images/imgs_part_*",
            "imgs_part_*/imgs_part_*",
            "images/imgs_part_*/imgs_part_*",
        ):
            folders.extend(sorted(root.glob(pattern)))
        index: dict[str, Path] = {}
        for folder in folders:
            if folder.is_dir():
                for name in sorted(os.listdir(folder)):
                    index.setdefault(name, folder / name)
        return index

    def _rows(self, metadata: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
        try:
            with open(metadata, newline="", encoding="utf-8") as stream:
                reader = csv.DictReader(stream)
                rows = list(reader)
                present = set(reader.fieldnames or ())
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise self.corrupt(metadata, f"is not a readable CSV file ({error})") from None
        lacking = [c for c in columns if c not in present]
        if lacking:
            raise self.corrupt(metadata, f"lacks the column(s) {', '.join(lacking)}")
        if not rows:
            raise self.corrupt(metadata, "lists no images")
        return rows

    @staticmethod
    def _image_name(img_id: str) -> str:
        return img_id if img_id.lower().endswith(".png") else f"{img_id}.png"  # protocol 2.8

    def missing_files(self, data_dir: Path) -> list[Path]:
        root = Path(data_dir) / FOLDER
        metadata = self._metadata(root)
        if metadata is None:
            return [root / "metadata.csv"]
        index = self._image_index(root)
        names = [self._image_name(row["img_id"]) for row in self._rows(metadata, ("img_id",))]
        return [root / "images" / n for n in names if n not in index]

    def how_to_get(self, data_dir: Path) -> str:
        root = Path(data_dir) / FOLDER
        missing = self.missing_files(data_dir)
        what = (
            "metadata.csv"
            if missing == [root / "metadata.csv"]
            else f"{len(missing)} of the images metadata.csv lists (e.g. {missing[0].name})"
        )
        return (
            f"pad-ufes-20 is missing {what} under {root}; it has no anonymous download: get it from {SOURCES} "
            "and unzip it "
            f"into {root} so that metadata.csv and the images (images/, imgs/ or imgs_part_*/) are there."
        )

    def repair_hint(self) -> str:
        return f"replace it with the file from the PAD-UFES-20 archive ({SOURCES})"

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        if not self.missing_files(data_dir):
            return
        raise BenchError(self.how_to_get(data_dir))

    def disk_size(self, data_dir: Path) -> int:
        return disk_size([Path(data_dir) / FOLDER])

    # -- decoding ------------------------------------------------------------------------------

    def _decode(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as image:
                # protocol 2.8: RGB, Resize((224, 224)) (PIL bilinear), done once here instead of per epoch
                return np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
        except (OSError, SyntaxError, ValueError) as error:
            raise self.corrupt(path, f"is not a readable image ({error})") from None

    def _table(self, data_dir: Path, columns: tuple[str, ...]) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray]:
        """Metadata rows, labels and the decoded (N, 3, 224, 224) images, in metadata order."""
        root = Path(data_dir) / FOLDER
        metadata = self._metadata(root)
        rows = self._rows(metadata, ("img_id", "diagnostic", *columns))
        label_of = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted({r["diagnostic"] for r in rows} - set(label_of))
        if unknown:
            raise self.corrupt(metadata, f"has diagnostics {', '.join(unknown)} besides {', '.join(self.class_names)}")
        labels = np.array([label_of[r["diagnostic"]] for r in rows], dtype=np.int64)
        index = self._image_index(root)
        paths = [index[self._image_name(r["img_id"])] for r in rows]

        fingerprint = files_fingerprint(paths, extra="\n".join(r["img_id"] for r in rows))
        decoded = {"images": decoded_images(paths, self._decode, (3, SIZE, SIZE))}
        images = cached_arrays(root / CACHE, fingerprint, lambda: decoded)["images"]
        return rows, labels, images

    # -- splits --------------------------------------------------------------------------------

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        columns = ("patient_id",) if splits == "grouped" else ()
        rows, labels, images = self._table(Path(data_dir), columns)
        if splits == "grouped":
            chosen = grouped_split(labels, [r["patient_id"] for r in rows], self.num_classes, seed)
            notes = [
                f"pad-ufes-20: patient-grouped, class-stratified 70/15/15 split (seed {seed}, protocol 7.8); "
                "no patient is in two splits"
            ]
        else:
            chosen = image_level_split(len(rows), seed)
            notes = [self._leak_note(rows, chosen, seed)]
        views = split_views(
            shared_tensor(images), torch.from_numpy(labels), {k: torch.from_numpy(v) for k, v in chosen.items()}
        )
        return SplitSet(
            views["train"],
            views["val"],
            views["test"],
            index_lists({k: torch.from_numpy(v) for k, v in chosen.items()}),
            notes,
        )

    @staticmethod
    def _leak_note(rows: list[dict[str, str]], chosen: dict[str, np.ndarray], seed: int) -> str:
        note = (
            f"pad-ufes-20: image-level random 70/15/15 split as in the notebook (RandomState({seed}).shuffle, "
            "protocol 2.8); images of one patient can fall in train and test, so these results are leaky "
            "(protocol 7.8); --splits grouped avoids it"
        )
        if rows and "patient_id" in rows[0]:
            where: dict[str, set[str]] = {}
            for split, index in chosen.items():
                for i in index:
                    where.setdefault(rows[i]["patient_id"], set()).add(split)
            shared = sum(1 for s in where.values() if len(s) > 1)
            note += f"; here {shared} of {len(where)} patients have images in more than one split"
        return note

    def sizes(self, data_dir: Path) -> dict[str, int]:
        metadata = self._metadata(Path(data_dir) / FOLDER)
        return resplit_sizes(len(self._rows(metadata, ("img_id", "diagnostic"))))

    # -- transforms ----------------------------------------------------------------------------

    def augmentations(self) -> list[BatchOp]:
        # protocol 2.8, after Resize((224, 224)): flip, rotation +-10, ColorJitter(0.2, 0.2, 0.2, 0.1),
        # RandomResizedCrop(224, scale (0.8, 1.0))
        return [
            RandomHorizontalFlip(),
            RandomAffine(degrees=10),
            ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
            RandomResizedCrop(SIZE, scale=(0.8, 1.0)),
        ]

    def notebook_notes(self) -> list[str]:
        return [
            "notebook mode (pad-ufes-20): the notebook's per-split label mapping is not reproduced; one mapping "
            "from the full metadata is used (protocol 7.9), and a missing or unreadable image is an error rather "
            "than a black placeholder (protocol 2.8)"
        ]


def image_level_split(n: int, seed: int) -> dict[str, np.ndarray]:
    """protocol 2.8: np.random.seed(seed); np.random.shuffle(indices); first 70 %, next 15 %, rest."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = resplit_sizes(n)
    return {
        "train": order[: sizes["train"]],
        "val": order[sizes["train"] : sizes["train"] + sizes["val"]],
        "test": order[sizes["train"] + sizes["val"] :],
    }


def grouped_split(labels: np.ndarray, groups: list[str], num_classes: int, seed: int) -> dict[str, np.ndarray]:
    """Whole groups (patients) to train/val/test, 70/15/15, keeping each class's share per split close
    to its share overall: groups in random order, largest first, each to the split whose per-class
    counts it brings closest to the targets (squared error relative to each class's total)."""
    fractions = np.array([TRAIN_FRACTION, VAL_FRACTION, 1 - TRAIN_FRACTION - VAL_FRACTION])
    names, group_of = np.unique(np.asarray(groups), return_inverse=True)
    counts = np.zeros((len(names), num_classes))
    np.add.at(counts, (group_of, labels), 1)
    totals = np.maximum(counts.sum(0), 1)
    target = np.outer(fractions, counts.sum(0))
    assigned = np.zeros_like(target)
    order = np.random.RandomState(seed).permutation(len(names))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    split_of_group = np.empty(len(names), dtype=np.int64)
    for g in order:
        # change of the squared error if group g joins each split
        cost = (((2 * (assigned - target) + counts[g]) * counts[g]) / totals**2).sum(1)
        best = int(np.argmin(cost))
        assigned[best] += counts[g]
        split_of_group[g] = best
    split_of_image = split_of_group[group_of]
    return {name: np.flatnonzero(split_of_image == s) for s, name in enumerate(SPLIT_NAMES)}
