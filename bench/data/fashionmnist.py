"""FashionMNIST (protocol 2.4): torchvision's idx files, pooled and re-split 70/15/15, 1 channel."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from bench.data.base import PooledDataset, check_labels, register
from bench.data.downloads import Progress, Remote, fetch
from bench.data.pipeline import BatchOp, NotebookDoubleTransform, RandomAffine, RandomHorizontalFlip

FOLDER = "FashionMNIST/raw"
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # part -> (images, labels), without the .gz that the download keeps
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


@register
class FashionMnist(PooledDataset):
    name = "fashionmnist"
    num_classes = 10
    in_channels = 1
    image_size = 28
    mean = (0.2860,)
    std = (0.3530,)
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    protocol_section = "2.4"
    homepage = f"{MIRROR} (the four *-ubyte.gz files, as torchvision saves them)"
    expected_sizes = {"train": 49_000, "val": 10_500, "test": 10_500}

    def expected_files(self, data_dir: Path) -> list[Path]:
        return [self._locate(Path(data_dir), f) for pair in FILES.values() for f in pair]

    @staticmethod
    def _locate(data_dir: Path, name: str) -> Path:
        """The extracted file if torchvision left one, else the .gz (also what is reported missing)."""
        plain = data_dir / FOLDER / name
        return plain if plain.exists() else plain.with_name(name + ".gz")

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        for filename, md5 in MD5.items():
            fetch(self.name, Remote(MIRROR + filename, md5, f"{FOLDER}/{filename}"), Path(data_dir), progress)

    def _read_idx(self, path: Path, magic: int) -> np.ndarray:
        try:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as stream:
                raw = stream.read()
        except (OSError, EOFError) as error:
            raise self.corrupt(path, f"could not be read ({error})") from None
        if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
            raise self.corrupt(path, f"is not an idx file with magic number {magic}")
        ndim = 3 if magic == IMAGES_MAGIC else 1
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        body = raw[4 + 4 * ndim :]
        if len(body) != int(np.prod(dims)):
            raise self.corrupt(path, f"holds {len(body)} bytes of data but its header promises {dims} (truncated?)")
        return np.frombuffer(body, dtype=np.uint8).reshape(dims)

    def read_parts(self, data_dir: Path, names: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        parts = {}
        for part in names:
            image_path, label_path = (self._locate(Path(data_dir), f) for f in FILES[part])
            images = self._read_idx(image_path, IMAGES_MAGIC)
            labels = self._read_idx(label_path, LABELS_MAGIC)
            if images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise self.corrupt(
                    image_path, f"has images {images.shape} for {len(labels)} labels, expected (N, 28, 28)"
                )
            parts[part] = (
                torch.from_numpy(images.copy()).unsqueeze(1),
                check_labels(self.corrupt, label_path, labels, self.num_classes),
            )
        return parts

    def part_counts(self, data_dir: Path) -> dict[str, int]:
        counts = {}
        for part, (_, labels) in FILES.items():
            path = self._locate(Path(data_dir), labels)
            try:
                with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as stream:
                    counts[part] = struct.unpack(">II", stream.read(8))[1]
            except (OSError, EOFError, struct.error) as error:
                raise self.corrupt(path, f"could not be read ({error})") from None
        return counts

    def augmentations(self) -> list[BatchOp]:
        # protocol 2.4: flip, rotation +-10 degrees, then a separate translation of up to 10 %
        return [RandomHorizontalFlip(), RandomAffine(degrees=10), RandomAffine(translate=0.1)]

    def notebook_defects(self) -> list[BatchOp]:
        return [NotebookDoubleTransform(self.mean, self.std)]  # protocol 7.1
