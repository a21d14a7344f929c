"""Training-batch throughput: our device-side BatchLoader against a torchvision PIL-transform
DataLoader like the notebooks' (RandomHorizontalFlip, RandomCrop(32, padding 4), ToTensor, Normalize;
2 workers, batch 128), on the same CIFAR-10-format images in the same run.

Both pipelines are measured after a warm-up, in alternating repeats; the medians are compared.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.data.pipeline import BatchLoader
from bench.data.splits import Split

SOURCES = ("auto", "synthetic", "cifar10")


@dataclass
class DataPipelineResult:
    source: str
    images: int
    batch_size: int
    batches: int
    warmup: int
    workers: int
    device: str
    threads: int = 1
    ours: list[float] = field(default_factory=list)  # images/s, one per repeat
    baseline: list[float] = field(default_factory=list)

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def ratio(self) -> float:
        return self.ours_median / self.baseline_median


def cifar_format_images(count: int, source: str, data_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """uint8 (N, 3, 32, 32) images and labels: real CIFAR-10 train images when asked for (or, with
    ``auto``, when present), else seeded synthetic ones."""
    from bench import data
    from bench.data.synthetic import Synthetic

    if source not in SOURCES:
        raise BenchError(f"Unknown image source {source!r}; choose one of: {', '.join(SOURCES)}.")
    cifar = data.get("cifar10")
    root = data_dir or data.default_data_dir()
    if source == "cifar10" or (source == "auto" and not cifar.missing_files(root)):
        cifar.require(root)
        images, labels = cifar.read_parts(root, ("train",))["train"]  # type: ignore[attr-defined]
        if count > len(labels):
            raise BenchError(
                f"--images {count} is more than the {len(labels)} CIFAR-10 training images; ask for fewer."
            )
        return images[:count], labels[:count], f"cifar10 train images from {root}"
    bundle = Synthetic(image_size=32, sizes=(count, 0, 0)).load(None)
    return bundle.train.materialize(), bundle.train.labels, "synthetic CIFAR-10-format images"


class NotebookStyleDataset(torch.utils.data.Dataset):
    """The notebooks' per-image path: a PIL image per item through torchvision transforms."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def notebook_loader(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, workers: int, seed: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    from torchvision import transforms

    from bench import data

    cifar = data.get("cifar10")
    transform = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(32, padding=4),
            transforms.ToTensor(),
            transforms.Normalize(cifar.mean, cifar.std),
        ]
    )
    dataset = NotebookStyleDataset(images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy(), transform)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )


def _endless(loader, set_epoch: Callable[[int], None] | None = None) -> Iterator:
    epoch = 0
    while True:
        if set_epoch:
            set_epoch(epoch)
        yield from loader
        epoch += 1


def _throughput(batches: Iterator, count: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        next(batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seen = 0
    start = time.perf_counter()
    for _ in range(count):
        x, _ = next(batches)
        x = x.to(device, non_blocking=True)  # the baseline's batches still have to reach the device
        seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def run_benchmark(
    *,
    images: int = 50_000,
    batches: int = 100,
    repeats: int = 3,
    warmup: int = 5,
    batch_size: int = 128,
    workers: int = 2,
    device: str = "cpu",
    source: str = "auto",
    data_dir: Path | None = None,
    seed: int = 42,
    threads: int = 1,
) -> DataPipelineResult:
    """``threads``: torch intra-op threads for our pipeline while it is timed. One by default: the
    batch ops are small, so more threads gain little and lose a lot on a busy machine, and the
    baseline still gets ``workers`` processes of its own."""
    from bench import data

    if min(images, batches, repeats, batch_size, threads) < 1 or warmup < 0 or workers < 0:
        raise BenchError(
            "--images, --batches, --repeats, --batch-size and --threads must be positive, --warmup and --workers >= 0."
        )
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {device} was asked for but CUDA is not available; use --device cpu.")
    pixels, labels, described = cifar_format_images(images, source, data_dir)
    transform = data.get("cifar10").train_transform("protocol")
    ours = BatchLoader(
        Split(labels, pixels), batch_size=batch_size, transform=transform, device=target, shuffle=True, seed=seed
    )
    baseline = notebook_loader(pixels, labels, batch_size, workers, seed, pin_memory=target.type == "cuda")
    result = DataPipelineResult(described, images, batch_size, batches, warmup, workers, str(target), threads)
    for _ in range(repeats):  # alternate, so drifting machine load hits both alike
        with _torch_threads(threads):
            result.ours.append(_throughput(_endless(ours, ours.set_epoch), batches, warmup, target))
        result.baseline.append(_throughput(_endless(baseline), batches, warmup, target))
    return result


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
