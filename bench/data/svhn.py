"""SVHN (protocol 2.5): the Stanford .mat files; train + test + extra pooled and re-split 70/15/15."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.base import PooledDataset, check_labels, register
from bench.data.cache import cached_arrays, files_fingerprint, shared_tensor
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
    decoded_cache = "svhn-decoded-uint8"  # the pooled parts decoded once, beside the .mat files
    pooled_parts = ("train", "test", "extra")  # protocol 2.5: concatenated in this order
    # --splits official uses train_32x32 and test_32x32; extra is left out, as most papers do.

    def download(self, data_dir: Path, progress: Progress | None = None) -> None:
        for remote in REMOTES.values():
            fetch(self.name, remote, Path(data_dir), progress)

    def read_parts(self, data_dir: Path, names: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels, counts = self._decoded(Path(data_dir))
        starts = dict(zip(self.pooled_parts, np.cumsum([0, *counts[:-1]]).tolist()))
        ends = dict(zip(self.pooled_parts, np.cumsum(counts).tolist()))
        return {part: (images[starts[part] : ends[part]], labels[starts[part] : ends[part]]) for part in names}

    def read_pooled(self, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _ = self._decoded(Path(data_dir))
        return images, labels

    def _decoded(self, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The pooled parts from the decoded cache: images (N, 3, 32, 32) on the cache's pages,
        labels, and each part's count in ``pooled_parts`` order."""
        paths = [data_dir / REMOTES[part].filename for part in self.pooled_parts]
        arrays = cached_arrays(data_dir / self.decoded_cache, files_fingerprint(paths), lambda: self._decode(data_dir))
        return shared_tensor(arrays["images"]), torch.from_numpy(np.array(arrays["labels"])), arrays["counts"].tolist()

    def _decode(self, data_dir: Path) -> dict[str, np.ndarray]:
        """Every part read from its .mat into one preallocated pooled array (no concatenation copy)."""
        counts = self.part_counts(data_dir)
        total = sum(counts.values())
        images, labels = np.empty((total, 3, 32, 32), np.uint8), np.empty(total, np.int64)
        start = 0
        for part in self.pooled_parts:
            path = data_dir / REMOTES[part].filename
            x, y = self._read_mat(path)
            if x.shape[3] != counts[part]:
                raise self.corrupt(path, f"holds {x.shape[3]} images where its header says {counts[part]}")
            stop = start + counts[part]
            images[start:stop] = x.transpose(3, 2, 0, 1)  # H, W, C, N -> N, C, H, W
            labels[start:stop] = check_labels(self.corrupt, path, y.reshape(-1) % 10, self.num_classes).numpy()  # 10 is 0
            start = stop
            del x, y
        return {"images": images, "labels": labels, "counts": np.array([counts[p] for p in self.pooled_parts])}

    def _read_mat(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        from scipy.io import loadmat

        try:
            mat = loadmat(path)
            x, y = mat["X"], np.asarray(mat["y"])
        except (ValueError, OSError, KeyError, TypeError, NotImplementedError) as error:
            raise self.corrupt(path, f"is not a readable SVHN .mat file ({type(error).__name__}: {error})") from None
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
            raise self.corrupt(path, f"has X {x.dtype} {x.shape} and y {y.shape}, expected uint8 32x32x3xN and N labels")
        if y.size and (y.min() < 1 or y.max() > 10):
            raise self.corrupt(path, f"has labels outside 1..10 (found {y.min()}..{y.max()})")
        return x, y

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
