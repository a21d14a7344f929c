"""What every dataset shares: the Dataset base class and its registry, the loaded bundle, and the file
checks that become clear errors. Splits, caches and downloads have modules of their own."""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bench.core import plugins
from bench.core.errors import BenchError
from bench.core.modes import PREPROCESSING_MODES
from bench.core.registry import Registry
from bench.data.cache import Decoded, cached_arrays, disk_size, files_fingerprint, shared_tensor
from bench.data.downloads import Progress
from bench.data.pipeline import BatchOp, BatchTransform, GrayToRGB, Normalize, Resize
from bench.data.splits import Split, SplitSet, holdout, index_lists, resplit, resplit_sizes, split_views

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # protocol 2.1
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_data_dir() -> Path:
    """$BENCH_DATA_DIR, else ./data (relative to the working directory)."""
    return Path(os.environ.get("BENCH_DATA_DIR") or "data").expanduser()


def shown_path(path: Path, data_dir: Path) -> str:
    try:
        return str(path.relative_to(data_dir))
    except ValueError:
        return str(path)


def check_labels(
    error: Callable[[Path, str], BenchError], path: Path, labels: np.ndarray, num_classes: int
) -> torch.Tensor:
    """Labels as int64, or an error naming the file when any lies outside 0..num_classes-1."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise error(path, f"has labels outside 0..{num_classes - 1} (found {labels.min()}..{labels.max()})")
    return torch.from_numpy(labels.astype(np.int64))


@dataclass
class DataBundle:
    """A loaded dataset: three splits, the transforms for them, and what a run should record."""

    dataset: str
    num_classes: int
    in_channels: int
    batch_size: int
    train: Split
    val: Split
    test: Split
    train_transform: BatchTransform
    eval_transform: BatchTransform
    split_indices: dict[str, list[int]] | None
    notes: tuple[str, ...]
    image_size: int = 0
    class_names: tuple[str, ...] = ()
    preprocessing: str = "protocol"
    splits: str = "protocol"
    seed: int = 42


def bundle_digest(bundle: DataBundle) -> str:
    """One digest of the three decoded splits (the MLflow dataset input's digest)."""
    h = hashlib.sha256()
    for split in (bundle.train, bundle.val, bundle.test):
        h.update(split.digest().digest())
    return h.hexdigest()[:16]


class Dataset:
    """One dataset of the benchmark, with the facts the protocol records about it (section 2).

    Subclasses set the class attributes, list their files, read their splits
    (``read_splits``) and declare their protocol train augmentation (``augmentations``).
    """

    name: ClassVar[str]
    num_classes: ClassVar[int]
    in_channels: ClassVar[int]  # channels the model sees
    image_size: ClassVar[int]  # side the model sees
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    batch_size: ClassVar[int] = 128  # protocol 2.1 (64 for PAD-UFES-20)
    class_names: ClassVar[tuple[str, ...]] = ()
    protocol_section: ClassVar[str] = "2.1"
    homepage: ClassVar[str] = ""
    split_choices: ClassVar[tuple[str, ...]] = ("protocol", "official")
    expected_sizes: ClassVar[dict[str, int] | None] = None  # protocol split sizes of the full data
    files: ClassVar[tuple[str, ...]] = ()  # relative to the data dir
    gray_to_rgb: ClassVar[bool] = False  # stored 1-channel, fed to the model as 3 (protocol 2.6)
    decoded_cache: ClassVar[str] = ""  # its decoded cache's folder in the data dir, where not under its files

    # -- files ---------------------------------------------------------------------------------

    def expected_files(self, data_dir: Path) -> list[Path]:
        return [Path(data_dir) / f for f in self.files]

    def missing_files(self, data_dir: Path) -> list[Path]:
        """The expected files that are not there ([] when the dataset is present)."""
        return [p for p in self.expected_files(Path(data_dir)) if not p.exists()]

    def how_to_get(self, data_dir: Path) -> str:
        data_dir = Path(data_dir)
        wanted = self.missing_files(data_dir) or self.expected_files(data_dir)
        listed = ", ".join(shown_path(p, data_dir) for p in wanted[:6])
        if len(wanted) > 6:
            listed += f" and {len(wanted) - 6} more"
        return (
            f"{self.name} needs {listed} under {data_dir}; run `bench data download {self.name}`, "
            f"or get them from {self.homepage} and put them there."
        )

    def require(self, data_dir: Path) -> None:
        if self.missing_files(data_dir):
            raise BenchError(self.how_to_get(data_dir))

    def corrupt(self, path: Path, problem: str) -> BenchError:
        """The error for a damaged or unexpected file: which dataset, which file, what to do."""
        return BenchError(f"{self.name}: {path} {problem}; {self.repair_hint()}.")

    def repair_hint(self) -> str:
        return f"delete it and run `bench data download {self.name}`"

    def disk_size(self, data_dir: Path) -> int:
        paths = self.expected_files(Path(data_dir)) + ([Path(data_dir) / self.decoded_cache] if self.decoded_cache else [])
        return disk_size([p for p in paths if p.exists()])

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        raise NotImplementedError

    # -- splits --------------------------------------------------------------------------------

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        raise NotImplementedError

    def sizes(self, data_dir: Path) -> dict[str, int]:
        """Samples per split under the protocol splits; subclasses read only headers where they can."""
        bundle = self.load(data_dir)
        return {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)}

    # -- transforms ----------------------------------------------------------------------------

    def augmentations(self) -> list[BatchOp]:
        """The protocol's training augmentation for this dataset (section 2), after any resize."""
        return []

    def notebook_defects(self) -> list[BatchOp]:
        """Steps reproducing the notebooks' preprocessing defects, run before the train transform."""
        return []

    def notebook_notes(self) -> list[str]:
        defects = self.notebook_defects()
        if not defects:
            return [
                f"notebook mode: the {self.name} notebook's preprocessing had no defect to reproduce; same as protocol"
            ]
        return [f"notebook mode ({self.name}): {defect.note}" for defect in defects]

    def eval_transform(self) -> BatchTransform:
        """Resize (where the protocol resizes) and normalise; never random."""
        return BatchTransform(Resize(self.image_size), *self._to_model_channels(), Normalize(self.mean, self.std))

    def train_transform(self, preprocessing: str = "protocol") -> BatchTransform:
        defects = self.notebook_defects() if preprocessing == "notebook" else []
        return BatchTransform(
            *defects,
            Resize(self.image_size),
            *self.augmentations(),
            *self._to_model_channels(),
            Normalize(self.mean, self.std),
        )

    def _to_model_channels(self) -> list[BatchOp]:
        return [GrayToRGB()] if self.gray_to_rgb else []

    # -- loading -------------------------------------------------------------------------------

    def check_options(self, preprocessing: str, splits: str) -> None:
        if preprocessing not in PREPROCESSING_MODES:
            raise BenchError(f"Unknown preprocessing {preprocessing!r}; choose protocol or notebook.")
        if splits not in self.split_choices:
            raise BenchError(
                f"{self.name} has no {splits!r} splits; choose one of: {', '.join(self.split_choices)} "
                "('grouped' exists for pad-ufes-20 only, protocol 7.8)."
            )

    def load(
        self, data_dir: Path | None = None, *, preprocessing: str = "protocol", splits: str = "protocol", seed: int = 42
    ) -> DataBundle:
        """Decode the splits once and pair them with the train and eval transforms."""
        data_dir = default_data_dir() if data_dir is None else Path(data_dir)
        self.check_options(preprocessing, splits)
        if seed < 0:
            raise BenchError(f"The seed must be a non-negative integer, got {seed}.")
        self.require(data_dir)
        parts = self.read_splits(data_dir, splits, seed)
        return self.bundle(parts, preprocessing=preprocessing, splits=splits, seed=seed)

    def bundle(self, parts: SplitSet, *, preprocessing: str, splits: str, seed: int) -> DataBundle:
        notes = list(parts.notes)
        sizes = {"train": len(parts.train), "val": len(parts.val), "test": len(parts.test)}
        if splits == "protocol" and self.expected_sizes and sizes != self.expected_sizes:
            notes.append(
                f"{self.name}: split sizes {sizes['train']}/{sizes['val']}/{sizes['test']} differ from the protocol's "
                f"{self.expected_sizes['train']}/{self.expected_sizes['val']}/{self.expected_sizes['test']} (section "
                f"{self.protocol_section}): these files are not the full dataset"
            )
        if preprocessing == "notebook":
            notes.extend(self.notebook_notes())
        return DataBundle(
            dataset=self.name,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            batch_size=self.batch_size,
            train=parts.train,
            val=parts.val,
            test=parts.test,
            train_transform=self.train_transform(preprocessing),
            eval_transform=self.eval_transform(),
            split_indices=parts.indices,
            notes=tuple(notes),
            image_size=self.image_size,
            class_names=parts.class_names or self.class_names,
            preprocessing=preprocessing,
            splits=splits,
            seed=seed,
        )

    def __repr__(self) -> str:
        return f"<dataset {self.name}>"


class InMemoryDataset(Dataset):
    """Data made in memory, not read from files (scikit-learn's digits, synthetic): nothing to download.
    ``files`` stays empty, so nothing is missing and nothing takes disk space."""

    made_by: ClassVar[str]  # how it comes to be, for `how_to_get`

    def how_to_get(self, data_dir: Path) -> str:
        return f"{self.name} {self.made_by}; there is nothing to download."

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        return None


class PooledDataset(Dataset):
    """Official parts that the protocol pools and re-splits 70/15/15 (CIFAR-10, FashionMNIST, SVHN,
    Tiny ImageNet, protocol 2.2). ``--splits official`` keeps the official train/test instead."""

    pooled_parts: ClassVar[tuple[str, ...]] = ("train", "test")  # in the notebooks' concatenation order
    official_train: ClassVar[str] = "train"
    official_test: ClassVar[str] = "test"

    def read_parts(self, data_dir: Path, names: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> (uint8 (N, C, H, W) images, int64 labels) for the named official parts."""
        raise NotImplementedError

    def read_pooled(self, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled parts' images and labels, in ``pooled_parts`` order; a dataset whose decoded cache
        already holds them pooled returns that without the copy a concatenation makes."""
        parts = self.read_parts(data_dir, self.pooled_parts)
        if len(parts) == 1:
            return parts[self.pooled_parts[0]]
        return torch.cat([parts[p][0] for p in self.pooled_parts]), torch.cat([parts[p][1] for p in self.pooled_parts])

    def part_counts(self, data_dir: Path) -> dict[str, int]:
        """Samples in each official part, read cheaply where the format allows."""
        return {name: len(labels) for name, (_, labels) in self.read_parts(data_dir, self.pooled_parts).items()}

    def sizes(self, data_dir: Path) -> dict[str, int]:
        counts = self.part_counts(Path(data_dir))
        return resplit_sizes(sum(counts[p] for p in self.pooled_parts))

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        if splits == "protocol":
            images, labels = self.read_pooled(data_dir)
            chosen = resplit(len(labels), seed)
            views = split_views(images, labels, chosen)
            note = (
                f"{self.name}: {' + '.join(self.pooled_parts)} pooled ({len(labels)} images) and re-split "
                f"70/15/15 with seed {seed} like random_split (protocol 2.2); split_indices index that pooled "
                "order; the test split is not the official test set (protocol 7.8)"
            )
            return SplitSet(views["train"], views["val"], views["test"], index_lists(chosen), [note])
        parts = self.read_parts(data_dir, (self.official_train, self.official_test))
        train_images, train_labels = parts[self.official_train]
        test_images, test_labels = parts[self.official_test]
        chosen = holdout(len(train_labels), seed)
        views = split_views(train_images, train_labels, chosen)
        note = (
            f"{self.name}: official {self.official_train}/{self.official_test} splits; validation is a seeded "
            f"10% hold-out of {self.official_train} (seed {seed}); split_indices index the official "
            f"{self.official_train} split"
        )
        return SplitSet(views["train"], views["val"], Split(test_labels, test_images), index_lists(chosen), [note])


class CachedPool(PooledDataset):
    """A pooled dataset whose decoded cache holds its pooled parts as one array, in ``pooled_parts``
    order (CIFAR-10, FashionMNIST, SVHN, Tiny ImageNet): each part is a slice of it, and pooling
    copies nothing."""

    def pool(self, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The pooled images (N, C, H, W) on the cache's pages, their labels, and each part's count:
        ``part_files`` decoded by ``decode_parts`` into ``decoded_cache``, keyed by those files."""
        paths = self.part_files(Path(data_dir))
        every = [path for part in self.pooled_parts for path in paths[part]]
        return self.cached_pool(Path(data_dir) / self.decoded_cache, files_fingerprint(every), lambda: self.decode_parts(paths))

    def part_files(self, data_dir: Path) -> dict[str, list[Path]]:
        """Each pooled part's source files, in the order they are decoded."""
        raise NotImplementedError

    def decode_parts(self, paths: dict[str, list[Path]]) -> dict[str, Decoded]:
        """The arrays "images" (N, C, H, W), "labels" and "counts" (per part) of ``part_files``' files."""
        raise NotImplementedError

    @staticmethod
    def cached_pool(cache: Path, fingerprint: str, build) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """``pool``'s answer from the cache folder ``cache``; ``build`` decodes the arrays "images",
        "labels" and "counts" when the cache is missing or stale."""
        arrays = cached_arrays(cache, fingerprint, build)
        return shared_tensor(arrays["images"]), torch.from_numpy(np.array(arrays["labels"])), arrays["counts"].tolist()

    def read_parts(self, data_dir: Path, names: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels, counts = self.pool(Path(data_dir))
        ends = np.cumsum(counts).tolist()
        bounds = dict(zip(self.pooled_parts, zip([0, *ends[:-1]], ends)))
        return {part: (images[slice(*bounds[part])], labels[slice(*bounds[part])]) for part in names}

    def read_pooled(self, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _ = self.pool(Path(data_dir))
        return images, labels


DATASETS: Registry[Dataset] = Registry("dataset", loader=plugins.load)
REQUIRED = ("name", "num_classes", "in_channels", "image_size", "mean", "std")


def register(cls: type[Dataset]) -> type[Dataset]:
    """Class decorator: add one instance of a Dataset subclass to the registry under its name."""
    add(cls())
    return cls


def add(dataset: Dataset) -> Dataset:
    """Register a dataset instance (one class can serve several: folders of images)."""
    cls = type(dataset)
    what = getattr(dataset, "name", cls.__name__)
    if not isinstance(dataset, Dataset):
        raise BenchError(f"dataset {what!r} ({cls.__name__}) must subclass bench.data.Dataset")
    missing = [attribute for attribute in REQUIRED if not hasattr(dataset, attribute)]
    if missing:
        raise BenchError(f"dataset {what!r} ({cls.__name__}) does not set {', '.join(missing)}")
    if cls.read_splits is Dataset.read_splits:
        raise BenchError(f"dataset {what!r} ({cls.__name__}) has no read_splits(data_dir, splits, seed)")
    try:
        inspect.signature(dataset.read_splits).bind(Path("."), "protocol", 42)
    except TypeError as error:
        raise BenchError(
            f"dataset {what!r} ({cls.__name__}) has read_splits{inspect.signature(dataset.read_splits)}, "
            f"which cannot be called as read_splits(data_dir, splits, seed) ({error})"
        ) from None
    return DATASETS.add(dataset.name, dataset)
