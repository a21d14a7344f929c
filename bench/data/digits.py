"""digits: scikit-learn's 1,797 real 8 x 8 handwritten digits, shipped with scikit-learn.

The embedded default: nothing to download, so the whole pipeline runs on any laptop. Pixel values
0..16 are scaled to uint8 and shown to the models at 16 px (enough for 8 x 8 sources, and a quarter
of the compute at 32 px); seeded 70/15/15 split as for CIFAR-10.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.data.base import InMemoryDataset, register
from bench.data.pipeline import BatchOp, RandomCrop
from bench.data.splits import SplitSet, index_lists, resplit, resplit_sizes, split_views

SAMPLES = 1_797
SIZE = 16  # model input size in pixels


def shipped_file() -> Path:
    """The file `sklearn.datasets.load_digits` reads, found without importing scikit-learn (which
    costs a worker about a second for the 58 KB it needs)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") if spec else None
    if path is None or not path.is_file():
        raise BenchError("digits: scikit-learn's digits.csv.gz is not installed; run `pip install scikit-learn` and try again.")
    return path


@register
class Digits(InMemoryDataset):
    name = "digits"
    num_classes = 10
    in_channels = 1
    image_size = SIZE
    mean = (0.3053,)  # of the uint8-scaled images
    std = (0.3759,)
    class_names = tuple(str(d) for d in range(10))
    protocol_section = "-"  # not part of the original study
    homepage = "scikit-learn (sklearn.datasets.load_digits)"
    split_choices = ("protocol",)
    made_by = "ships with scikit-learn"
    expected_sizes = resplit_sizes(SAMPLES)

    def sizes(self, data_dir: Path) -> dict[str, int]:
        return resplit_sizes(SAMPLES)

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        rows = np.loadtxt(shipped_file(), delimiter=",")  # 64 pixel values, then the label
        images = torch.from_numpy(np.rint(rows[:, :-1].reshape(-1, 1, 8, 8) * (255 / 16)).astype(np.uint8))
        labels = torch.from_numpy(rows[:, -1].astype(np.int64))
        chosen = resplit(len(labels), seed)
        views = split_views(images, labels, chosen)
        note = f"digits: scikit-learn's 8x8 digits, seeded 70/15/15 split (seed {seed}), shown to the models at {SIZE} px"
        return SplitSet(views["train"], views["val"], views["test"], index_lists(chosen), [note])

    def augmentations(self) -> list[BatchOp]:
        # After the resize: shifts of up to one source pixel; digits must not be flipped.
        return [RandomCrop(SIZE, padding=SIZE // 8)]
