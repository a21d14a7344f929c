"""FashionMNIST (protocol 2.4): torchvision's idx files, pooled and re-split 70/15/15, 1 channel.

The images are decoded once (gunzipped a block at a time) into a decoded cache that every worker maps.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from bench.data.base import CachedPool, check_labels, register
from bench.data.cache import Decoded, Streamed
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
BLOCK_IMAGES = 8192  # images read from the idx file at a time (6.4 MB)


@register
class FashionMnist(CachedPool):
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
    decoded_cache = "fashionmnist-decoded-uint8"  # the pooled idx files decoded once

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

    def _open_idx(self, path: Path, magic: int):
        """The idx file open past its header, and the dimensions the header gives."""
        ndim = 3 if magic == IMAGES_MAGIC else 1
        try:
            stream = (gzip.open if path.suffix == ".gz" else open)(path, "rb")
            header = stream.read(4 + 4 * ndim)
        except (OSError, EOFError) as error:
            raise self.corrupt(path, f"could not be read ({error})") from None
        if len(header) < 4 + 4 * ndim or struct.unpack(">I", header[:4])[0] != magic:
            stream.close()
            raise self.corrupt(path, f"is not an idx file with magic number {magic}")
        return stream, struct.unpack(f">{ndim}I", header[4:])

    def _dims(self, path: Path, magic: int) -> tuple[int, ...]:
        stream, dims = self._open_idx(path, magic)
        stream.close()
        return dims

    def _rows(self, path: Path, magic: int, rows: int | None = None):
        """The idx file's rows, ``rows`` at a time (all at once when None)."""
        stream, dims = self._open_idx(path, magic)
        row_bytes = int(np.prod(dims[1:]))
        with stream:
            for start in range(0, dims[0], rows or max(dims[0], 1)):
                count = min(rows or dims[0], dims[0] - start)
                try:
                    body = stream.read(count * row_bytes)
                except (OSError, EOFError) as error:
                    raise self.corrupt(path, f"could not be read ({error})") from None
                if len(body) != count * row_bytes:
                    raise self.corrupt(path, f"holds fewer bytes than its header promises for {dims} (truncated?)")
                yield np.frombuffer(body, dtype=np.uint8).reshape(count, *dims[1:])

    def part_files(self, data_dir: Path) -> dict[str, list[Path]]:
        return {part: [self._locate(Path(data_dir), f) for f in FILES[part]] for part in self.pooled_parts}

    def decode_parts(self, paths: dict[str, list[Path]]) -> dict[str, Decoded]:
        labels, counts = [], []
        for part in self.pooled_parts:
            image_path, label_path = paths[part]
            dims = self._dims(image_path, IMAGES_MAGIC)
            part_labels = np.concatenate(list(self._rows(label_path, LABELS_MAGIC)) or [np.empty(0, np.uint8)])
            if dims[1:] != (28, 28) or dims[0] != len(part_labels):
                raise self.corrupt(image_path, f"has images {dims} for {len(part_labels)} labels, expected (N, 28, 28)")
            labels.append(check_labels(self.corrupt, label_path, part_labels, self.num_classes).numpy())
            counts.append(dims[0])

        def blocks():
            for part in self.pooled_parts:
                for rows in self._rows(paths[part][0], IMAGES_MAGIC, BLOCK_IMAGES):
                    yield rows[:, None]

        return {
            "images": Streamed((sum(counts), 1, 28, 28), np.dtype(np.uint8), blocks),
            "labels": np.concatenate(labels),
            "counts": np.array(counts),
        }

    def part_counts(self, data_dir: Path) -> dict[str, int]:
        return {part: self._dims(self._locate(Path(data_dir), labels), LABELS_MAGIC)[0] for part, (_, labels) in FILES.items()}

    def augmentations(self) -> list[BatchOp]:
        # protocol 2.4: flip, rotation +-10 degrees, then a separate translation of up to 10 %
        return [RandomHorizontalFlip(), RandomAffine(degrees=10), RandomAffine(translate=0.1)]

    def notebook_defects(self) -> list[BatchOp]:
        return [NotebookDoubleTransform(self.mean, self.std)]  # protocol 7.1
