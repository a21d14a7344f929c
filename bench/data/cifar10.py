"""CIFAR-10 (protocol 2.3): torchvision's pickled batches, pooled and re-split 70/15/15.

The batches are Python pickles, which can run any code when loaded. They are read with an unpickler
that admits only what the format holds (a dict of lists, strings and one uint8 NumPy array): a
crafted file is refused before anything in it runs. They are decoded once, batch by batch, into a
decoded cache of the pooled parts that every worker maps.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from bench.data.base import CachedPool, check_labels, register
from bench.data.cache import Decoded, Streamed
from bench.data.downloads import Progress, Remote, extract, fetch
from bench.data.pipeline import BatchOp, NotebookDoubleTransform, RandomCrop, RandomHorizontalFlip

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
ARCHIVE = Remote(
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    "cifar-10-python.tar.gz",
)


# The only globals a CIFAR-10 batch refers to: how NumPy pickles an array (numpy 1 and 2 spellings).
BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds; nothing in it was run")
        return super().find_class(module, name)


def read_batch_pickle(stream: io.BufferedIOBase) -> dict:
    return BatchUnpickler(stream, encoding="latin1").load()


@register
class Cifar10(CachedPool):
    name = "cifar10"
    num_classes = 10
    in_channels = 3
    image_size = 32
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2023, 0.1994, 0.2010)
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    protocol_section = "2.3"
    homepage = "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz, extracted)"
    expected_sizes = {"train": 42_000, "val": 9_000, "test": 9_000}
    files = tuple(f"{FOLDER}/{b}" for part in BATCHES.values() for b in part)
    decoded_cache = "cifar10-decoded-uint8"  # the pooled batches decoded once, beside their folder

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        archive = fetch(self.name, ARCHIVE, Path(data_dir), progress)
        extract(self.name, archive, Path(data_dir), FOLDER)
        archive.unlink()

    def part_files(self, data_dir: Path) -> dict[str, list[Path]]:
        return {part: [Path(data_dir) / FOLDER / b for b in BATCHES[part]] for part in self.pooled_parts}

    def decode_parts(self, paths: dict[str, list[Path]]) -> dict[str, Decoded]:
        """The labels first (each batch read once for them), then the images streamed into the cache
        batch by batch (read again), so decoding holds one batch, not the pooled images twice."""
        labels = {path: self._read_batch(path)[1] for part in paths.values() for path in part}
        every = list(labels)
        return {
            "images": Streamed((sum(map(len, labels.values())), 3, 32, 32), np.dtype(np.uint8),
                               lambda: (self._read_batch(path)[0] for path in every)),
            "labels": np.concatenate(list(labels.values())),
            "counts": np.array([sum(len(labels[path]) for path in paths[part]) for part in self.pooled_parts]),
        }

    def _read_batch(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(path, "rb") as stream:
                entry = read_batch_pickle(stream)
            data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise self.corrupt(path, f"is not a CIFAR-10 batch ({type(error).__name__}: {error})") from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise self.corrupt(
                path,
                f"has data {data.dtype} {data.shape} with {len(labels)} labels, expected uint8 (N, 3072) and N labels",
            )
        return data.reshape(-1, 3, 32, 32), check_labels(self.corrupt, path, labels, self.num_classes).numpy()

    def augmentations(self) -> list[BatchOp]:
        return [RandomHorizontalFlip(), RandomCrop(32, padding=4)]  # protocol 2.3

    def notebook_defects(self) -> list[BatchOp]:
        return [NotebookDoubleTransform(self.mean, self.std)]  # protocol 7.1
