"""PCam / PatchCamelyon (protocol 2.7): six HDF5 files, official splits, 96 px, no augmentation.

The images (7.2 GB for train) are never loaded whole: they are memory-mapped from the HDF5 files
where the files' layout allows, else from a decoded cache beside them (``bench.data.hdf5``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, Dataset, check_labels, register
from bench.data.cache import shared_tensor
from bench.data.downloads import Progress, Remote, fetch, gunzip
from bench.data.hdf5 import h5_layout, mapped_rows
from bench.data.splits import Split, SplitSet

FOLDER = "pcam"  # torchvision's PCAM layout
PARTS = {"train": "train", "val": "valid", "test": "test"}
ZENODO = "https://zenodo.org/records/2546921/files/"
MD5 = {  # of the .h5.gz files in the Zenodo record (the same as torchvision's)
    "camelyonpatch_level_2_split_train_x.h5": "1571f514728f59376b705fc836ff4b63",
    "camelyonpatch_level_2_split_train_y.h5": "35c2d7259d906cfc8143347bb8e05be7",
    "camelyonpatch_level_2_split_valid_x.h5": "d5b63470df7cfa627aeec8b9dc0c066e",
    "camelyonpatch_level_2_split_valid_y.h5": "2b85f58b927af9964a4c15b8f7e8f179",
    "camelyonpatch_level_2_split_test_x.h5": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "camelyonpatch_level_2_split_test_y.h5": "60a7035772fbdb7f34eb86d4420cf66a",
}


def _file(part: str, kind: str) -> str:
    return f"{FOLDER}/camelyonpatch_level_2_split_{PARTS[part]}_{kind}.h5"


@register
class Pcam(Dataset):
    name = "pcam"
    num_classes = 2
    in_channels = 3
    image_size = 96
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    class_names = ("normal", "tumor")
    protocol_section = "2.7"
    homepage = f"{ZENODO} (the six .h5.gz files, gunzipped)"
    expected_sizes = {"train": 262_144, "val": 32_768, "test": 32_768}
    files = tuple(_file(part, kind) for part in PARTS for kind in ("x", "y"))
    decoded_cache = "pcam-decoded-uint8"  # used only where the .h5 files' layout cannot be mapped as they are

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        for name, md5 in MD5.items():
            target = Path(data_dir) / FOLDER / name
            if target.exists():
                continue
            archive = fetch(
                self.name, Remote(f"{ZENODO}{name}.gz?download=1", md5, f"{FOLDER}/{name}.gz"), Path(data_dir), progress
            )
            gunzip(self.name, archive, target)

    def _labels(self, path: Path) -> np.ndarray:
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                return np.asarray(handle["y"]).reshape(-1)
        except KeyError:
            raise self.corrupt(path, "has no dataset 'y'") from None
        except OSError as error:
            raise self.corrupt(path, f"is not a readable HDF5 file ({error})") from None

    def _images(self, data_dir: Path, part: str) -> np.ndarray:
        """(N, 96, 96, 3) uint8 rows of a part's x file, memory-mapped."""
        path = Path(data_dir) / _file(part, "x")
        layout = h5_layout(path, "x", self.corrupt)
        if len(layout.shape) != 4 or layout.shape[1:] != (96, 96, 3) or layout.dtype != np.uint8:
            raise self.corrupt(
                path, f"holds {layout.dtype} images of shape {layout.shape}, expected uint8 (N, 96, 96, 3)"
            )
        return mapped_rows(path, "x", layout, Path(data_dir) / self.decoded_cache / part, self.corrupt)

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        loaded = {}
        for part in PARTS:
            y_path = Path(data_dir) / _file(part, "y")
            labels = self._labels(y_path)
            rows = self._images(data_dir, part)
            if len(rows) != len(labels):
                raise self.corrupt(y_path, f"has {len(labels)} labels for the {len(rows)} images of its x file")
            images = shared_tensor(rows).permute(0, 3, 1, 2)  # (N, C, H, W) view of the stored rows
            loaded[part] = Split(check_labels(self.corrupt, y_path, labels, self.num_classes), images)
        note = "pcam: official train/valid/test splits, images memory-mapped from the HDF5 files' rows (protocol 2.7)"
        return SplitSet(loaded["train"], loaded["val"], loaded["test"], None, [note])

    def h5_rows_file(self, data_dir: Path) -> Path:
        """The HDF5 file of the training images (``bench perf data`` reads it with h5py as a baseline)."""
        return Path(data_dir) / _file("train", "x")

    def sizes(self, data_dir: Path) -> dict[str, int]:
        return {part: len(self._labels(Path(data_dir) / _file(part, "y"))) for part in PARTS}

    # protocol 2.7: no augmentation (the base class's empty list)
