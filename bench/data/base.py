"""What every dataset shares: the Dataset base class and its registry, decoded splits, the seeded
re-splits of the protocol, file checks that become clear errors, and checksummed downloads."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bench.config.spec import PREPROCESSING_MODES
from bench.core.errors import BenchError
from bench.core.files import atomic_write_bytes
from bench.core.registry import Registry
from bench.data.pipeline import BatchOp, BatchTransform, GrayToRGB, Normalize, Resize

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # protocol 2.1
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_FRACTION, VAL_FRACTION = 0.70, 0.15  # protocol 2.2
HOLDOUT_FRACTION = 0.10  # --splits official: validation carved from the official train split


def default_data_dir() -> Path:
    """$BENCH_DATA_DIR, else ./data (relative to the working directory)."""
    return Path(os.environ.get("BENCH_DATA_DIR") or "data").expanduser()


# ---------------------------------------------------------------------------------------------
# Decoded splits
# ---------------------------------------------------------------------------------------------


class H5Images:
    """An (N, H, W, C) uint8 HDF5 dataset read batch by batch, never loaded whole (PCam)."""

    def __init__(self, path: Path, key: str, on_error: Callable[[Path, str], BenchError]) -> None:
        import h5py

        self.path, self.key, self._on_error = Path(path), key, on_error
        self._file: h5py.File | None = None
        self._pid: int | None = None
        dataset = self._dataset()
        self.shape: tuple[int, ...] = tuple(dataset.shape)
        self.dtype = dataset.dtype

    def _dataset(self):
        import h5py

        # One handle per process: a handle inherited across fork is not safe to use.
        if self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as error:
                raise self._on_error(self.path, f"is not a readable HDF5 file ({error})") from None
            self._pid = os.getpid()
        try:
            return self._file[self.key]
        except KeyError:
            raise self._on_error(self.path, f"has no dataset {self.key!r}") from None

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        wanted = np.asarray(index, dtype=np.int64)
        if wanted.size == 0:
            return torch.empty((0, self.shape[3], self.shape[1], self.shape[2]), dtype=torch.uint8)
        # h5py reads increasing, unique indices; a contiguous run is one slice (eval batches).
        unique, inverse = np.unique(wanted, return_inverse=True)
        dataset = self._dataset()
        try:
            if unique[-1] - unique[0] + 1 == unique.size:
                block = dataset[int(unique[0]) : int(unique[-1]) + 1]
            else:
                block = dataset[unique]
        except (OSError, ValueError) as error:
            raise self._on_error(self.path, f"could not be read ({error})") from None
        return torch.from_numpy(np.ascontiguousarray(block[inverse])).permute(0, 3, 1, 2).contiguous()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}


@dataclass
class Split:
    """One split, decoded once: uint8 images and int64 labels.

    ``images`` is an (N, C, H, W) uint8 tensor or an H5Images view; ``index`` (optional) selects this
    split's rows of a pooled tensor, so a 70/15/15 re-split shares one copy of the images.
    """

    labels: torch.Tensor
    images: torch.Tensor | H5Images
    index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D int64 tensor, got {self.labels.dtype} {tuple(self.labels.shape)}")
        rows = len(self.index) if self.index is not None else len(self.images)
        if rows != len(self.labels):
            raise ValueError(f"{rows} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        if isinstance(self.images, torch.Tensor):
            return tuple(self.images.shape[1:])  # type: ignore[return-value]
        _, h, w, c = self.images.shape
        return (c, h, w)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) CPU tensor of the images at ``index`` (positions in this split)."""
        index = torch.as_tensor(index, dtype=torch.long)
        if self.index is not None:
            index = self.index[index]
        if isinstance(self.images, torch.Tensor):
            return self.images[index]
        return self.images.take(index)

    def digest(self) -> "hashlib._Hash":
        """sha256 of this split's decoded content: labels, and images (or, for an HDF5 view, its
        file, key and rows), so two runs on different data are told apart."""
        h = hashlib.sha256(self.labels.numpy().tobytes())
        if isinstance(self.images, torch.Tensor):
            images = self.images if self.index is None else self.images[self.index]
            h.update(images.contiguous().numpy().tobytes())
        else:
            h.update(f"{self.images.path}:{self.images.key}:{self.images.shape}".encode())
            if self.index is not None:
                h.update(self.index.numpy().tobytes())
        return h

    def materialize(self) -> torch.Tensor:
        """All of this split's images as one uint8 tensor."""
        if isinstance(self.images, torch.Tensor) and self.index is None:
            return self.images
        return self.take(torch.arange(len(self)))


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


@dataclass
class SplitSet:
    """What a dataset's reader returns: the three splits and how they were made."""

    train: Split
    val: Split
    test: Split
    indices: dict[str, list[int]] | None = None
    notes: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] | None = None


# ---------------------------------------------------------------------------------------------
# Seeded splits
# ---------------------------------------------------------------------------------------------


def resplit_sizes(n: int) -> dict[str, int]:
    """protocol 2.2: int(0.70 N), int(0.15 N), and the rest to test."""
    n_train, n_val = int(TRAIN_FRACTION * n), int(VAL_FRACTION * n)
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def resplit(n: int, seed: int) -> dict[str, torch.Tensor]:
    """The notebooks' random 70/15/15 split, index for index (protocol 2.2): ``random_split`` draws
    one ``randperm(N)`` from ``Generator().manual_seed(seed)`` and slices it train, val, test."""
    sizes = resplit_sizes(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {
        "train": order[: sizes["train"]],
        "val": order[sizes["train"] : sizes["train"] + sizes["val"]],
        "test": order[sizes["train"] + sizes["val"] :],
    }


def holdout(n: int, seed: int) -> dict[str, torch.Tensor]:
    """A seeded validation hold-out of int(0.10 N) from an official train split (--splits official)."""
    n_val = int(HOLDOUT_FRACTION * n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {"train": order[: n - n_val], "val": order[n - n_val :]}


def split_views(images: torch.Tensor, labels: torch.Tensor, parts: dict[str, torch.Tensor]) -> dict[str, Split]:
    return {name: Split(labels[index], images, index) for name, index in parts.items()}


def index_lists(parts: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {name: index.tolist() for name, index in parts.items()}


# ---------------------------------------------------------------------------------------------
# Files: checks, caches, downloads
# ---------------------------------------------------------------------------------------------


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


def disk_size(paths: list[Path]) -> int:
    """Bytes used by these files and folders (folders walked)."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            for root, _, files in os.walk(path):
                total += sum((Path(root) / f).stat().st_size for f in files)
    return total


def files_fingerprint(paths: list[Path], extra: str = "") -> str:
    """A cheap identity for a set of source files (names, sizes, modification times)."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz beside the data; readers never see a half-written file."""
    atomic_write_bytes(path, lambda stream: np.savez(stream, **arrays))


def cached_arrays(cache: Path, fingerprint: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays decoded once and kept in ``cache`` (an .npz keyed by the sources' fingerprint).

    A cache that cannot be written (read-only data dir) only costs a warning: the data still loads.
    """
    if cache.exists():
        try:
            with np.load(cache) as stored:
                if str(stored["fingerprint"]) == fingerprint:
                    return {k: stored[k] for k in stored.files if k != "fingerprint"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a stale or damaged cache of ours is simply rebuilt
    arrays = build()
    try:
        save_npz_atomic(cache, {**arrays, "fingerprint": np.array(fingerprint)})
    except OSError as error:
        warnings.warn(f"could not write the decoded cache {cache} ({error}); the next load decodes again", stacklevel=2)
    return arrays


@dataclass(frozen=True)
class Remote:
    """A public file with a known md5, saved as ``filename`` (relative to the data dir)."""

    url: str
    md5: str
    filename: str


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


Progress = Callable[[str, int, int], None]  # (file name, bytes so far, total bytes or 0)


def fetch(dataset: str, remote: Remote, data_dir: Path, progress: Progress | None = None) -> Path:
    """Download ``remote`` into the data dir, verify its md5 and rename it into place.

    An existing file with the right checksum is kept. Offline or a bad checksum: BenchError.
    """
    target = data_dir / remote.filename
    if target.exists() and md5sum(target) == remote.md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.md5()
    try:
        request = urllib.request.Request(remote.url, headers={"User-Agent": "gradattn-bench"})
        with urllib.request.urlopen(request, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(target.name, done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise BenchError(
            f"Could not download {remote.url} for {dataset} ({reason}); check the network connection and run "
            f"`bench data download {dataset}` again, or fetch the file by hand and save it as {target}."
        ) from None
    if digest.hexdigest() != remote.md5:
        partial.unlink(missing_ok=True)
        raise BenchError(
            f"The download of {remote.url} for {dataset} is corrupt (md5 {digest.hexdigest()}, expected {remote.md5}); "
            f"run `bench data download {dataset}` again."
        )
    os.replace(partial, target)
    return target


def _refetch(dataset: str, archive: Path, problem: str) -> BenchError:
    return BenchError(f"{dataset}: {archive} {problem}; delete it and run `bench data download {dataset}` again.")


def extract(dataset: str, archive: Path, data_dir: Path, top_folder: str) -> None:
    """Unpack ``archive`` (tar or zip) and move its ``top_folder`` into the data dir in one rename."""
    with tempfile.TemporaryDirectory(prefix=f".{dataset}-", dir=data_dir) as scratch:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as bundle:
                    bundle.extractall(scratch)
            else:
                with tarfile.open(archive) as bundle:
                    # The "data" filter refuses absolute paths and links out of the folder.
                    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    bundle.extractall(scratch, **safe)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
            raise _refetch(dataset, archive, f"could not be unpacked ({error})") from None
        source = Path(scratch) / top_folder
        if not source.is_dir():
            raise _refetch(dataset, archive, f"has no {top_folder}/ folder")
        target = data_dir / top_folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(source, target)


def gunzip(dataset: str, archive: Path, target: Path) -> None:
    """Decompress ``archive`` to ``target`` through a temporary file, then remove the archive."""
    partial = target.with_name(target.name + ".part")
    try:
        with gzip.open(archive, "rb") as source, open(partial, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 22)
    except (OSError, EOFError) as error:
        partial.unlink(missing_ok=True)
        raise _refetch(dataset, archive, f"could not be decompressed ({error})") from None
    os.replace(partial, target)
    archive.unlink()


# ---------------------------------------------------------------------------------------------
# The Dataset base class and the registry
# ---------------------------------------------------------------------------------------------


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
        return disk_size([p for p in self.expected_files(Path(data_dir)) if p.exists()])

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

    def part_counts(self, data_dir: Path) -> dict[str, int]:
        """Samples in each official part, read cheaply where the format allows."""
        return {name: len(labels) for name, (_, labels) in self.read_parts(data_dir, self.pooled_parts).items()}

    def sizes(self, data_dir: Path) -> dict[str, int]:
        counts = self.part_counts(Path(data_dir))
        return resplit_sizes(sum(counts[p] for p in self.pooled_parts))

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        if splits == "protocol":
            parts = self.read_parts(data_dir, self.pooled_parts)
            images = (
                torch.cat([parts[p][0] for p in self.pooled_parts])
                if len(parts) > 1
                else parts[self.pooled_parts[0]][0]
            )
            labels = torch.cat([parts[p][1] for p in self.pooled_parts])
            del parts
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


def _load_plugins() -> None:
    from bench.core import plugins

    plugins.load()


DATASETS: Registry[Dataset] = Registry("dataset", loader=_load_plugins)
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
