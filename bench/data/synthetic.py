"""synthetic: seeded random uint8 images of any shape and class count, for tests and benchmarks.

Each class has its own smooth random template and every image is that template plus noise, so a
model can learn the classes within a few quick epochs. The images depend on ``data_seed`` only (the
run seed does not change the dataset, as with real data).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from bench.data.base import DataBundle, InMemoryDataset, register
from bench.data.pipeline import BatchOp, RandomCrop, RandomHorizontalFlip
from bench.data.splits import Split, SplitSet

TEMPLATE_WEIGHT = 0.6  # the rest is per-image noise
CHUNK = 8_192


def make_images(n: int, templates: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 images (template of a random class + noise) and their int64 labels."""
    num_classes, channels, size, _ = templates.shape
    labels = torch.randint(num_classes, (n,), generator=generator)
    images = torch.empty((n, channels, size, size), dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        part = labels[start : start + CHUNK]
        noise = torch.rand((len(part), channels, size, size), generator=generator)
        mixed = TEMPLATE_WEIGHT * templates[part] + (1 - TEMPLATE_WEIGHT) * noise
        images[start : start + CHUNK] = mixed.mul_(255).round_().to(torch.uint8)
    return images, labels


@register
class Synthetic(InMemoryDataset):
    name = "synthetic"
    protocol_section = "-"  # not part of the original study
    homepage = "generated in memory"
    split_choices = ("protocol",)
    made_by = "is generated in memory"

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 16,  # small by default: tests and the scheduler benchmark train on it
        num_classes: int = 10,
        sizes: tuple[int, int, int] = (256, 64, 64),
        data_seed: int = 0,
    ) -> None:
        if min(channels, image_size, num_classes) < 1 or min(sizes) < 0 or len(sizes) != 3:
            raise ValueError("synthetic needs positive channels, image_size and num_classes and three split sizes >= 0")
        self.in_channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.split_sizes, self.data_seed = tuple(sizes), data_seed
        self.mean, self.std = (0.5,) * channels, (0.25,) * channels
        self.class_names = tuple(f"class_{k}" for k in range(num_classes))

    def sizes(self, data_dir: Path) -> dict[str, int]:
        return dict(zip(("train", "val", "test"), self.split_sizes))

    def load(
        self,
        data_dir: Path | None = None,
        *,
        preprocessing: str = "protocol",
        splits: str = "protocol",
        seed: int = 42,
        **shape,
    ) -> DataBundle:
        """``shape`` may set channels, image_size, num_classes, sizes (train, val, test) and data_seed."""
        dataset = Synthetic(**shape) if shape else self
        dataset.check_options(preprocessing, splits)
        return dataset.bundle(
            dataset.read_splits(data_dir, splits, seed), preprocessing=preprocessing, splits=splits, seed=seed
        )

    def read_splits(self, data_dir: Path | None, splits: str, seed: int) -> SplitSet:
        generator = torch.Generator().manual_seed(self.data_seed)
        coarse = torch.rand((self.num_classes, self.in_channels, 4, 4), generator=generator)
        templates = F.interpolate(coarse, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        parts = [
            Split(labels, images) for images, labels in (make_images(n, templates, generator) for n in self.split_sizes)
        ]
        shape = f"{self.in_channels}x{self.image_size}x{self.image_size}"
        counts = "/".join(map(str, self.split_sizes))
        note = f"synthetic: {shape} images, {self.num_classes} classes, {counts} samples, data_seed {self.data_seed}"
        return SplitSet(*parts, None, [note])

    def augmentations(self) -> list[BatchOp]:
        return [RandomHorizontalFlip(), RandomCrop(self.image_size, padding=max(1, self.image_size // 8))]
