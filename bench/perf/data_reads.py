"""A dataset's training batches against a training step (``bench perf data --dataset NAME``).

Three rates, each a median over alternating repeats of one run, on the dataset's own files:

- the loader: shuffled training batches as a run gets them (rows gathered from the split's memory
  map by the prefetch thread, the protocol's train transform, on the device);
- the training step of ``model`` on those batches (forward, backward, Adam): what training consumes;
- for an HDF5 dataset (PCam), the baseline: the same shuffled batches read with h5py, a batch's rows
  fetched from the file at each step, as the loader did before it mapped the rows.

The loader's rate over the step's says whether reading keeps up (above 1: it does).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.config.spec import TrainConfig
from bench.core.errors import BenchError
from bench.data.base import DataBundle
from bench.train.engine import make_optimizer


@dataclass
class ReadThroughput:
    dataset: str
    model: str
    device: str
    batch_size: int
    batches: int
    train_images: int
    loader: list[float] = field(default_factory=list)  # images/s, one per repeat
    step: list[float] = field(default_factory=list)
    h5py: list[float] = field(default_factory=list)  # HDF5 datasets only

    @property
    def headroom(self) -> float:
        """Loader images/s over training-step images/s."""
        return statistics.median(self.loader) / statistics.median(self.step)

    @property
    def over_h5py(self) -> float | None:
        return statistics.median(self.loader) / statistics.median(self.h5py) if self.h5py else None


def _timed(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], count: int, device: torch.device) -> float:
    seen, start = 0, time.perf_counter()
    for _, (x, _) in zip(range(count), batches):
        seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def _loader(bundle: DataBundle, device: torch.device, epoch: int):
    from bench.data.pipeline import BatchLoader

    loader = BatchLoader(
        bundle.train, batch_size=bundle.batch_size, transform=bundle.train_transform, device=device, shuffle=True, seed=42
    )
    loader.set_epoch(epoch)  # each repeat reads other rows
    return loader


def _h5py_batches(bundle: DataBundle, rows_file: Path, device: torch.device, epoch: int):
    """The shuffled batches of `_loader`, each read from the HDF5 file with h5py at its step."""
    import h5py

    order = _loader(bundle, torch.device("cpu"), epoch).order()  # the loader's permutation of this epoch
    with h5py.File(rows_file, "r") as handle:
        rows = handle["x"]
        for k in range(0, len(order), bundle.batch_size):
            index = np.sort(order[k : k + bundle.batch_size].numpy())  # h5py reads increasing rows
            images = torch.from_numpy(rows[index]).permute(0, 3, 1, 2).to(device)
            yield bundle.train_transform(images), None


class _TrainingStep:
    """``model``'s training step (forward, backward, Adam) on a few of the dataset's batches, cycled."""

    def __init__(self, bundle: DataBundle, model_name: str, device: torch.device, batches: int) -> None:
        from bench.perf.train import Workload, build_model

        self.workload = Workload(
            image_size=bundle.image_size, batch_size=bundle.batch_size, device=str(device),
            in_channels=bundle.in_channels, num_classes=bundle.num_classes,
        )
        self.model = build_model(model_name, self.workload).to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, TrainConfig(), device)
        pool = [batch for _, batch in zip(range(min(batches, 4)), _loader(bundle, device, 0))]
        self.steps = [pool[i % len(pool)] for i in range(batches)]
        self.images_per_s()  # warm-up

    def images_per_s(self) -> float:
        from bench.perf.train import bare_epoch

        seconds = bare_epoch(self.model, self.optimizer, self.steps, self.workload)
        return sum(len(y) for _, y in self.steps) / seconds


def run_benchmark(
    dataset: str, data_dir: Path, *, model: str = "resnet18", batches: int = 50, repeats: int = 3, device: str = "cpu"
) -> ReadThroughput:
    from bench import data

    if min(batches, repeats) < 1:
        raise BenchError("--batches and --repeats must be at least 1.")
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {device} was asked for but CUDA is not available; use --device cpu.")
    source = data.get(dataset)
    bundle = source.load(data_dir)
    rows_file = source.h5_rows_file(data_dir) if hasattr(source, "h5_rows_file") else None
    count = min(batches, len(bundle.train) // bundle.batch_size or 1)
    result = ReadThroughput(dataset, model, str(target), bundle.batch_size, count, len(bundle.train))
    step = _TrainingStep(bundle, model, target, count)
    for repeat in range(repeats):  # alternate, so drifting machine load hits each alike
        # Both read the same rows, from the page cache: an untimed pass first reads them in, or the
        # pipeline timed first would pay the disk for the other (cold reads: scripts/scale.py).
        _timed(iter(_loader(bundle, target, repeat + 1)), count, target)
        result.loader.append(_timed(iter(_loader(bundle, target, repeat + 1)), count, target))
        if rows_file is not None:
            result.h5py.append(_timed(_h5py_batches(bundle, rows_file, target, repeat + 1), count, target))
        result.step.append(step.images_per_s())
    return result
