"""SVHN (protocol 2.5): the Stanford .mat files; train + test + extra pooled and re-split 70/15/15."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.base import PooledDataset, check_labels, register
from bench.data.downloads import Progress, Remote, fetch

SITE = "http://ufldl.stanford.edu/housenumbers/"
REMOTES = {  # torchvision's layout: the files sit directly in the data dir
    "train": Remote(SITE + "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", "train_32x32.mat"),
    "test": Remote(SITE + "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", "test_32x32.mat"),
    "extra": Remote(SITE + "extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7", "extra_32x32.mat"),
}


@register
class Svhn(PooledDataset):
    name = "svhn"
    num_classes = 10
    in_channels = 3
    image_size = 32
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)
    class_names = tuple(str(d) for d in range(10))
    protocol_section = "2.5"
    homepage = SITE
    expected_sizes = {"train": 441_294, "val": 94_563, "test": 94_563}
    files = tuple(r.filename for r in REMOTES.values())
    pooled_parts = ("train", "test", "extra")  # protocol 2.5: concatenated in this order
    # --splits official uses train_32x32 and test_32x32; extra is left out, as most papers do.

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        for remote in REMOTES.values():
            fetch(self.name, remote, Path(data_dir), progress)

    def read_parts(self, data_dir: Path, names: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from scipy.io import loadmat

        parts = {}
        for part in names:
            path = Path(data_dir) / REMOTES[part].filename
            try:
                mat = loadmat(path)
                x, y = mat["X"], np.asarray(mat["y"])
            except (ValueError, OSError, KeyError, TypeError, NotImplementedError) as error:
                raise self.corrupt(
                    path, f"is not a readable SVHN .mat file ({type(error).__name__}: {error})"
                ) from None
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
                raise self.corrupt(
                    path, f"has X {x.dtype} {x.shape} and y {y.shape}, expected uint8 32x32x3xN and N labels"
                )
            if y.size and (y.min() < 1 or y.max() > 10):
                raise self.corrupt(path, f"has labels outside 1..10 (found {y.min()}..{y.max()})")
            images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # H, W, C, N -> N, C, H, W
            parts[part] = (
                images,
                check_labels(self.corrupt, path, y.reshape(-1) % 10, self.num_classes),
            )  # 10 is digit 0
            del mat, x
        return parts

    def part_counts(self, data_dir: Path) -> dict[str, int]:
        from scipy.io import whosmat

        counts = {}
        for part in self.pooled_parts:
            path = Path(data_dir) / REMOTES[part].filename
            try:
                shapes = {name: shape for name, shape, _ in whosmat(path)}
                counts[part] = int(shapes["X"][3])
            except (ValueError, OSError, KeyError, IndexError, TypeError) as error:
                raise self.corrupt(
                    path, f"is not a readable SVHN .mat file ({type(error).__name__}: {error})"
                ) from None
        return counts
