"""BloodMNIST and TissueMNIST (protocol 2.6): medmnist's 28 px .npz files, official splits, resized
to 64 px on the device; TissueMNIST's gray repeated to 3 channels; ImageNet normalisation."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, Dataset, check_labels, register
from bench.data.cache import cached_arrays, files_fingerprint, shared_tensor
from bench.data.downloads import Progress, Remote, fetch
from bench.data.pipeline import BatchOp, ColorJitter, RandomAffine, RandomHorizontalFlip
from bench.data.splits import Split, SplitSet

PARTS = ("train", "val", "test")


class MedMnist(Dataset):
    """One medmnist 2D dataset at its default 28 x 28 size (as the notebooks downloaded it)."""

    remote: ClassVar[Remote]
    stored_channels: ClassVar[int]
    num_classes = 8
    in_channels = 3
    image_size = 64  # protocol 2.6: Resize((64, 64))
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    protocol_section = "2.6"
    homepage = "https://zenodo.org/records/10519652 (medmnist v3, the 28 px .npz files)"

    def expected_files(self, data_dir: Path) -> list[Path]:
        return [Path(data_dir) / self.remote.filename]

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        fetch(self.name, self.remote, Path(data_dir), progress)

    def _open(self, path: Path):
        try:
            return np.load(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise self.corrupt(path, f"is not a readable .npz file ({error})") from None

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        path = Path(data_dir) / self.remote.filename
        arrays = cached_arrays(Path(data_dir) / self.decoded_cache, files_fingerprint([path]), lambda: self._decode(path))
        loaded = {
            part: Split(torch.from_numpy(np.array(arrays[f"{part}_labels"])), shared_tensor(arrays[f"{part}_images"]))
            for part in PARTS
        }
        note = f"{self.name}: official medmnist train/val/test splits (protocol 2.6)"
        return SplitSet(loaded["train"], loaded["val"], loaded["test"], None, [note])

    def _decode(self, path: Path) -> dict[str, np.ndarray]:
        """Each split's images as uint8 (N, C, 28, 28) and its labels as int64, from the compressed .npz."""
        stored_shape = (28, 28) if self.stored_channels == 1 else (28, 28, 3)
        arrays = {}
        with self._open(path) as archive:
            for part in PARTS:
                try:
                    images, labels = archive[f"{part}_images"], archive[f"{part}_labels"]
                except KeyError:
                    raise self.corrupt(
                        path, f"has no {part}_images/{part}_labels arrays (found {', '.join(archive.files)})"
                    ) from None
                except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                    raise self.corrupt(path, f"could not be read ({error})") from None
                if images.dtype != np.uint8 or images.shape[1:] != stored_shape or labels.size != len(images):
                    raise self.corrupt(
                        path,
                        f"has {part}_images {images.dtype} {images.shape} and {labels.size} labels, "
                        f"expected uint8 (N, {', '.join(map(str, stored_shape))}) with one label each",
                    )
                channels_first = images[:, None] if self.stored_channels == 1 else images.transpose(0, 3, 1, 2)
                arrays[f"{part}_images"] = np.ascontiguousarray(channels_first)
                arrays[f"{part}_labels"] = check_labels(self.corrupt, path, labels, self.num_classes).numpy()
        return arrays

    def sizes(self, data_dir: Path) -> dict[str, int]:
        path = Path(data_dir) / self.remote.filename
        try:
            with zipfile.ZipFile(path) as archive:
                counts = {}
                for part in PARTS:
                    with archive.open(f"{part}_labels.npy") as member:
                        version = np.lib.format.read_magic(member)
                        header = (
                            np.lib.format.read_array_header_1_0
                            if version == (1, 0)
                            else np.lib.format.read_array_header_2_0
                        )
                        shape = header(member)[0]
                    counts[part] = int(shape[0])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise self.corrupt(path, f"is not a readable medmnist .npz file ({error})") from None
        return counts

    def augmentations(self) -> list[BatchOp]:
        # protocol 2.6, after Resize((64, 64)): rotation +-10, flip, ColorJitter(brightness 0.1, contrast 0.1)
        return [RandomAffine(degrees=10), RandomHorizontalFlip(), ColorJitter(brightness=0.1, contrast=0.1)]


@register
class BloodMnist(MedMnist):
    name = "bloodmnist"
    decoded_cache = "bloodmnist-decoded-uint8"  # the compressed .npz inflated once, beside it
    stored_channels = 3
    remote = Remote(
        "https://zenodo.org/records/10519652/files/bloodmnist.npz?download=1",
        "7053d0359d879ad8a5505303e11de1dc",
        "bloodmnist.npz",
    )
    class_names = (
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    )
    expected_sizes = {"train": 11_959, "val": 1_712, "test": 3_421}


@register
class TissueMnist(MedMnist):
    name = "tissuemnist"
    decoded_cache = "tissuemnist-decoded-uint8"  # the compressed .npz inflated once, beside it
    stored_channels = 1
    gray_to_rgb = True  # protocol 2.6: gray repeated to 3 channels, ImageNet statistics
    remote = Remote(
        "https://zenodo.org/records/10519652/files/tissuemnist.npz?download=1",
        "ebe78ee8b05294063de985d821c1c34b",
        "tissuemnist.npz",
    )
    class_names = (
        "collecting duct, connecting tubule",
        "distal convoluted tubule",
        "glomerular endothelial cells",
        "interstitial endothelial cells",
        "leukocytes",
        "podocytes",
        "proximal tubule segments",
        "thick ascending limb",
    )
    expected_sizes = {"train": 165_466, "val": 23_640, "test": 47_280}
