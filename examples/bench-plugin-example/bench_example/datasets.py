"""shapes: 16 x 16 grayscale discs, squares and crosses drawn at random places and sizes, with noise.

Generated from the split seed, so there is nothing to download; registered like gradattn-bench's
own datasets.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.data import Dataset, SplitSet, index_lists, register, resplit, split_views

SIZE, PER_CLASS = 16, 200


@register
class Shapes(Dataset):
    name = "shapes"
    num_classes = 3
    in_channels = 1
    image_size = SIZE
    mean = (0.25,)
    std = (0.3,)
    class_names = ("disc", "square", "cross")
    protocol_section = "-"
    homepage = "generated (bench-plugin-example)"
    split_choices = ("protocol",)

    def missing_files(self, data_dir: Path) -> list[Path]:
        return []

    def how_to_get(self, data_dir: Path) -> str:
        return "shapes is generated; there is nothing to download."

    def read_splits(self, data_dir: Path, splits: str, seed: int) -> SplitSet:
        generator = torch.Generator().manual_seed(seed)
        n = self.num_classes * PER_CLASS
        labels = torch.arange(self.num_classes).repeat_interleave(PER_CLASS)
        centre = torch.randint(5, SIZE - 5, (n, 2), generator=generator).float()
        radius = torch.randint(2, 5, (n,), generator=generator).float()
        y, x = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
        dy = (y - centre[:, 0, None, None]).abs()
        dx = (x - centre[:, 1, None, None]).abs()
        r = radius[:, None, None]
        disc = dx**2 + dy**2 <= r**2
        square = (dx <= r) & (dy <= r)
        cross = ((dx <= 1) & (dy <= r)) | ((dy <= 1) & (dx <= r))
        shapes = torch.stack([disc, square, cross])[labels, torch.arange(n)].float()
        noise = torch.rand((n, SIZE, SIZE), generator=generator) * 0.3
        images = ((shapes * 0.7 + noise).clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(1)
        chosen = resplit(n, seed)
        views = split_views(images, labels, chosen)
        note = f"shapes: {n} generated images, seeded 70/15/15 split (seed {seed})"
        return SplitSet(views["train"], views["val"], views["test"], index_lists(chosen), [note])
