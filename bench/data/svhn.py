"""SVHN (protocol 2.5): the Stanford .mat files; train + test + extra pooled and re-split 70/15/15."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.data.base import CachedPool, check_labels, register
from bench.data.cache import Decoded, Streamed
from bench.data.downloads import Progress, Remote, fetch

SITE = "http://ufldl.stanford.edu/housenumbers/"
REMOTES = {  # torchvision's layout: the files sit directly in the data dir
    "train": Remote(SITE + "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", "train_32x32.mat"),
    "test": Remote(SITE + "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", "test_32x32.mat"),
    "extra": Remote(SITE + "extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7", "extra_32x32.mat"),
}
BLOCK_IMAGES = 8192  # images transposed and written at a time (25 MB)


@register
class Svhn(CachedPool):
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

    def part_files(self, data_dir: Path) -> dict[str, list[Path]]:
        return {part: [Path(data_dir) / REMOTES[part].filename] for part in self.pooled_parts}

    def decode_parts(self, paths: dict[str, list[Path]]) -> dict[str, Decoded]:
        """The pooled parts, streamed into the cache one .mat at a time (a worker decoding holds one
        part's images, not the pooled array beside them), and their labels."""
        files = [paths[part][0] for part in self.pooled_parts]
        counts = [self._count(path) for path in files]
        return {
            "images": Streamed((sum(counts), 3, 32, 32), np.dtype(np.uint8), lambda: self._image_blocks(files, counts)),
            "labels": np.concatenate([self._labels(path, count) for path, count in zip(files, counts)]),
            "counts": np.array(counts),
        }

    def _image_blocks(self, files: list[Path], counts: list[int]) -> Iterator[np.ndarray]:
        for path, count in zip(files, counts):
            x = self._read_mat(path, "X")
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
                raise self.corrupt(path, f"has X {x.dtype} {x.shape}, expected uint8 32x32x3xN")
            if x.shape[3] != count:
                raise self.corrupt(path, f"holds {x.shape[3]} images where its header says {count}")
            for start in range(0, x.shape[3], BLOCK_IMAGES):
                yield x[..., start : start + BLOCK_IMAGES].transpose(3, 2, 0, 1)  # H, W, C, N -> N, C, H, W
            del x

    def _labels(self, path: Path, count: int) -> np.ndarray:
        y = np.asarray(self._read_mat(path, "y")).reshape(-1)
        if y.size != count:
            raise self.corrupt(path, f"has {y.size} labels for {count} images")
        if y.size and (y.min() < 1 or y.max() > 10):
            raise self.corrupt(path, f"has labels outside 1..10 (found {y.min()}..{y.max()})")
        return check_labels(self.corrupt, path, y % 10, self.num_classes).numpy()  # label 10 is the digit 0

    def _read_mat(self, path: Path, variable: str) -> np.ndarray:
        """One variable of a .mat file (loadmat skips the others: y alone does not inflate X)."""
        from scipy.io import loadmat

        try:
            return loadmat(path, variable_names=[variable])[variable]
        except (ValueError, OSError, KeyError, TypeError, NotImplementedError) as error:
            raise self.corrupt(path, f"is not a readable SVHN .mat file ({type(error).__name__}: {error})") from None

    def part_counts(self, data_dir: Path) -> dict[str, int]:
        return {part: self._count(path) for part, (path,) in self.part_files(Path(data_dir)).items()}

    def _count(self, path: Path) -> int:
        """The images a .mat file holds, from its header (X is not read)."""
        from scipy.io import whosmat

        try:
            shapes = {name: shape for name, shape, _ in whosmat(path)}
            return int(shapes["X"][3])
        except (ValueError, OSError, KeyError, IndexError, TypeError) as error:
            raise self.corrupt(path, f"is not a readable SVHN .mat file ({type(error).__name__}: {error})") from None
