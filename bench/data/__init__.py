"""The dataset registry: the eight datasets of the GradAttn study plus `digits` and `synthetic`.

``get("cifar10").load(data_dir, preprocessing="protocol", splits="protocol", seed=42)`` gives a
DataBundle (three decoded splits and their batch transforms); ``names()`` and ``expand("a,b,all")``
list datasets by the names users type. Each dataset is one module that registers itself; a plugin
registers its own with the same ``register`` (bench.core.plugins); ``folder:PATH`` names a folder of
images in class folders (bench.data.imagefolder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bench.core import plugins
from bench.data.base import DATASETS, DataBundle, Dataset, default_data_dir, register
from bench.data.pipeline import BatchLoader, BatchTransform
from bench.data.splits import Split, SplitSet, index_lists, resplit, split_views

# Each module registers its dataset(s) on import; the import order is the catalogue's order
# (protocol table 2.1, then the two built-in sets).
# isort: off
from bench.data import cifar10, fashionmnist, svhn, medmnist, pcam, pad_ufes, tiny_imagenet  # noqa: F401
from bench.data import digits, synthetic  # noqa: F401
from bench.data import imagefolder
# isort: on

DATASETS.add_prefix(imagefolder.PREFIX, imagefolder.from_path)
plugins.on_folder(lambda name, settings: imagefolder.register_folder(name, **settings))

__all__ = [
    "BatchLoader",
    "BatchTransform",
    "DataBundle",
    "Dataset",
    "Split",
    "SplitSet",
    "default_data_dir",
    "index_lists",
    "isolated",
    "register",
    "resplit",
    "split_views",
    "expand",
    "get",
    "missing",
    "names",
]


def isolated():
    """A context manager: datasets registered inside it are gone after it (tests, a notebook trying a dataset)."""
    return DATASETS.isolated()


def get(name: str) -> Dataset:
    """The registered dataset ``name``; a BenchError naming the choices for an unknown one."""
    return DATASETS.get(name)


def names(pattern: str | None = None) -> list[str]:
    """Registered dataset names, optionally filtered by a shell wildcard."""
    return DATASETS.names(pattern)


def expand(spec: str) -> list[str]:
    """A user's comma list (``all``, names, wildcards) as dataset names; unknown items are errors."""
    return DATASETS.expand(spec)


def missing(datasets: Iterable[str], data_dir: Path) -> dict[str, str]:
    """dataset -> how to get it, for each of ``datasets`` whose files are not in ``data_dir``."""
    return {name: get(name).how_to_get(data_dir) for name in datasets if get(name).missing_files(data_dir)}
