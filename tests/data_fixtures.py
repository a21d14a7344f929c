"""Small files in each dataset's real on-disk format, written into temporary data dirs.

Each writer returns what it wrote (images as uint8 (N, C, H, W) in the order the protocol pools
them, and labels) so tests can compare the loaders' output with the files' content.
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_cifar10(data_dir: Path, per_batch: int = 6, test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/ with data_batch_1..5 and test_batch (pickled dicts, torchvision's keys)."""
    rng = _rng(seed)
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name, count in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        targets = rng.integers(0, 10, count).tolist()
        entry = {
            "batch_label": f"{name} of 5",
            "labels": targets,
            "data": data,
            "filenames": [f"img_{i}.png" for i in range(count)],
        }
        with open(folder / name, "wb") as stream:
            pickle.dump(entry, stream)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(targets)
    with open(folder / "batches.meta", "wb") as stream:
        pickle.dump(
            {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
            stream,
        )
    return {"images": np.concatenate(images), "labels": np.array(labels), "n_train": 5 * per_batch}


def write_svhn(
    data_dir: Path, sizes: tuple[int, int, int] = (12, 6, 10), seed: int = 0, labels_1_to_10: bool = True
) -> dict[str, np.ndarray]:
    """train/test/extra_32x32.mat: X is 32x32x3xN uint8, y is Nx1 with labels 1..10 (10 = digit 0)."""
    from scipy.io import savemat

    rng = _rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for part, count in zip(("train", "test", "extra"), sizes):
        x = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
        y = rng.integers(1, 11, (count, 1)).astype(np.uint8)
        y[0, 0] = 10  # at least one digit 0
        savemat(data_dir / f"{part}_32x32.mat", {"X": x, "y": y})
        images.append(x.transpose(3, 2, 0, 1))
        labels.append(y.reshape(-1) % 10)
    return {"images": np.concatenate(images), "labels": np.concatenate(labels), "sizes": np.array(sizes)}


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_fashionmnist(
    data_dir: Path, train: int = 30, test: int = 10, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """FashionMNIST/raw/*-ubyte(.gz): big-endian idx files (magic 2051 images, 2049 labels)."""
    rng = _rng(seed)
    folder = data_dir / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for prefix, count in (("train", train), ("t10k", test)):
        x = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, count).astype(np.uint8)
        for name, payload in (
            (f"{prefix}-images-idx3-ubyte", _idx(2051, x)),
            (f"{prefix}-labels-idx1-ubyte", _idx(2049, y)),
        ):
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as stream:
                    stream.write(payload)
            else:
                (folder / name).write_bytes(payload)
        images.append(x[:, None])
        labels.append(y)
    return {"images": np.concatenate(images), "labels": np.concatenate(labels)}


def write_medmnist(
    data_dir: Path, name: str, channels: int, sizes: tuple[int, int, int] = (20, 6, 8), seed: int = 0
) -> dict[str, np.ndarray]:
    """<name>.npz with {train,val,test}_{images,labels}; images 28x28(x3) uint8, labels (N, 1)."""
    rng = _rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, count in zip(("train", "val", "test"), sizes):
        shape = (count, 28, 28) if channels == 1 else (count, 28, 28, 3)
        arrays[f"{part}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{part}_labels"] = rng.integers(0, 8, (count, 1)).astype(np.uint8)
    np.savez(data_dir / f"{name}.npz", **arrays)
    return arrays


def write_pcam(
    data_dir: Path, sizes: tuple[int, int, int] = (24, 8, 8), seed: int = 0, chunks: tuple | None = (1, 96, 96, 3)
) -> dict[str, np.ndarray]:
    """pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5: x (N,96,96,3) uint8, y (N,1,1,1);
    x chunked by ``chunks``, or stored contiguously (one plain block) with None.

    Pixel (0, 0) of image i holds i (mod 256), so a test can tell which image a batch row is."""
    import h5py

    rng = _rng(seed)
    folder = data_dir / "pcam"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, count in zip(("train", "valid", "test"), sizes):
        x = rng.integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)
        x[:, 0, 0, 0] = np.arange(count) % 256
        y = rng.integers(0, 2, (count, 1, 1, 1)).astype(np.uint8)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{part}_x.h5", "w") as handle:
            handle.create_dataset("x", data=x, chunks=chunks)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{part}_y.h5", "w") as handle:
            handle.create_dataset("y", data=y)
        arrays[part] = x.transpose(0, 3, 1, 2)
        arrays[f"{part}_labels"] = y.reshape(-1)
    return arrays


def _save_image(path: Path, pixels: np.ndarray, **options) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **options)


def write_tiny_imagenet(
    data_dir: Path,
    wnids: tuple[str, ...] = ("n03000000", "n01000000", "n02000000"),
    per_class: int = 5,
    val: int = 6,
    seed: int = 0,
) -> dict:
    """tiny-imagenet-200/: wnids.txt, train/<wnid>/images/*.JPEG (+ boxes), val/images + val_annotations.txt.

    Images are flat colours (JPEG keeps them nearly exact); returns colour per (part, label) order."""
    rng = _rng(seed)
    root = data_dir / "tiny-imagenet-200"
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        lines = []
        for i in range(per_class):
            colour = rng.integers(0, 256, 3, dtype=np.uint8)
            _save_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", np.tile(colour, (64, 64, 1)), quality=95)
            lines.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(lines) + "\n")
    annotations = []
    for i in range(val):
        wnid = wnids[i % len(wnids)]
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        _save_image(root / "val" / "images" / f"val_{i}.JPEG", np.tile(colour, (64, 64, 1)), quality=95)
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return {"root": root, "n_train": per_class * len(wnids), "n_val": val, "wnids": sorted(wnids)}


PAD_COLUMNS = [
    "patient_id",
    "lesion_id",
    "smoke",
    "drink",
    "age",
    "region",
    "diameter_1",
    "diameter_2",
    "diagnostic",
    "itch",
    "img_id",
    "biopsed",
]
PAD_CLASSES = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")


def write_pad(
    data_dir: Path, patients: int = 14, layout: str = "images", seed: int = 0, with_extension: bool = True,
    sides: tuple[int, int] = (30, 60),
) -> dict:
    """pad-ufes-20/metadata.csv plus PNGs of mixed sizes (each side drawn from ``sides``) under images/
    (or imgs_part_1/ and imgs_part_2/)."""
    rng = _rng(seed)
    root = data_dir / "pad-ufes-20"
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(patients):
        diagnostic = PAD_CLASSES[p % len(PAD_CLASSES)]
        for lesion in range(1 + p % 2):
            for shot in range(1 + (p + lesion) % 2):
                img_id = f"PAT_{p}_{lesion}_{shot}.png"
                folder = "images" if layout == "images" else f"imgs_part_{1 + len(rows) % 2}"
                height, width = (int(side) for side in rng.integers(*sides, size=2))
                _save_image(root / folder / img_id, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                rows.append(
                    {
                        "patient_id": f"PAT_{p}",
                        "lesion_id": str(100 + 2 * p + lesion),
                        "smoke": "False",
                        "drink": "False",
                        "age": str(40 + p),
                        "region": "ARM",
                        "diameter_1": "5.0",
                        "diameter_2": "4.0",
                        "diagnostic": diagnostic,
                        "itch": "True",
                        "img_id": img_id if with_extension else img_id[:-4],
                        "biopsed": "True",
                    }
                )
    with open(root / "metadata.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=PAD_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return {"root": root, "rows": rows}


def run_bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` in a fresh process, as a user would run it."""
    environment = {k: v for k, v in os.environ.items() if k != "BENCH_DATA_DIR"}
    environment.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )


def write_image_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "owl"), per_class: int = 12, size: int = 12,
    splits: tuple[str, ...] = (), gray: bool = False, seed: int = 0,
) -> dict[str, int]:
    """Class folders of real PNG and JPEG files (alternating), under root or under root/<split>/.

    Each class has its own brightness, so a model can learn them; returns images written per part.
    """
    rng = _rng(seed)
    written = {}
    for part in splits or ("",):
        written[part or "all"] = 0
        for label, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size, size) if gray else (size, size, 3)
                level = 40 + 80 * label
                pixels = np.clip(rng.normal(level, 12, shape), 0, 255).astype(np.uint8)
                suffix = ".png" if i % 2 == 0 else ".jpg"
                _save_image(folder / f"{i:03d}{suffix}", pixels, **({"quality": 95} if suffix == ".jpg" else {}))
                written[part or "all"] += 1
    return written
