"""PCam / PatchCamelyon (protocol 2.7): six HDF5 files, official splits, 96 px, no augmentation.

The images stay in their HDF5 files (7.2 GB for train); batches are read on demand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, Dataset, check_labels, register
from bench.data.downloads import Progress, Remote, fetch, gunzip
from bench.data.splits import H5Images, Split, SplitSet

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

    def _images(self, path: Path) -> H5Images:
        images = H5Images(path, "x", self.corrupt)
        if len(images.shape) != 4 or images.shape[1:] != (96, 96, 3) or images.dtype != np.uint8:
            raise self.corrupt(
                path, f"holds {images.dtype} images of shape {images.shape}, expected uint8 (N, 96, 96, 3)"
            )
        return images

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        loaded = {}
        for part in PARTS:
            x_path, y_path = (Path(data_dir) / _file(part, kind) for kind in ("x", "y"))
            labels = self._labels(y_path)
            images = self._images(x_path)
            if len(images) != len(labels):
                raise self.corrupt(y_path, f"has {len(labels)} labels for the {len(images)} images of {x_path.name}")
            loaded[part] = Split(check_labels(self.corrupt, y_path, labels, self.num_classes), images)
        note = "pcam: official train/valid/test splits, images read from the HDF5 files batch by batch (protocol 2.7)"
        return SplitSet(loaded["train"], loaded["val"], loaded["test"], None, [note])

    def sizes(self, data_dir: Path) -> dict[str, int]:
        return {part: len(self._labels(Path(data_dir) / _file(part, "y"))) for part in PARTS}

    # protocol 2.7: no augmentation (the base class's empty list)
