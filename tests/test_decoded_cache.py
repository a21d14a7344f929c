"""Decoded caches in the datasets' real formats: written once beside the files, readable by the group,
loaded again as memory maps of the cache's .npy files, equal to what was written, and rebuilt when
stale or damaged."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from data_fixtures import REPO, write_cifar10, write_fashionmnist, write_medmnist, write_pcam, write_svhn
from support import backed_by

from bench import data
from bench.data.base import bundle_digest
from bench.data.cache import cached_arrays
from bench.data.splits import DIGEST_BYTES, Split


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _written_cifar10(tmp_path):
    written = write_cifar10(tmp_path)
    return "cifar10", written["images"], written["labels"]


def _written_fashionmnist(tmp_path):
    written = write_fashionmnist(tmp_path)
    return "fashionmnist", written["images"], written["labels"]


def _written_svhn(tmp_path):
    written = write_svhn(tmp_path)
    return "svhn", written["images"], written["labels"]


def _written_medmnist(name, channels):
    def write(tmp_path):
        written = write_medmnist(tmp_path, name, channels)
        parts = ("train", "val", "test")
        images = np.concatenate([written[f"{p}_images"] for p in parts])
        images = images[:, None] if channels == 1 else images.transpose(0, 3, 1, 2)
        return name, images, np.concatenate([written[f"{p}_labels"].reshape(-1) for p in parts])

    return write


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the process's mappings from /proc")
@pytest.mark.parametrize(
    "write",
    [_written_cifar10, _written_fashionmnist, _written_svhn, _written_medmnist("bloodmnist", 3),
     _written_medmnist("tissuemnist", 1)],
    ids=["cifar10", "fashionmnist", "svhn", "bloodmnist", "tissuemnist"],
)
def test_a_second_load_maps_the_group_readable_cache_and_equals_the_files(tmp_path, umask_022, write):
    name, images, labels = write(tmp_path)
    dataset = data.get(name)
    first = dataset.load(tmp_path)
    cache = tmp_path / dataset.decoded_cache
    files = sorted(cache.iterdir())
    assert {f.name for f in files} >= {"manifest.json"} and any(f.suffix == ".npy" for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files)  # umask 022: the group reads them
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755
    assert dataset.disk_size(tmp_path) > sum(f.stat().st_size for f in files)  # the cache counts as the dataset's

    again = dataset.load(tmp_path)
    assert not backed_by(torch.zeros(1000), cache)
    for split in (again.train, again.val, again.test):
        assert backed_by(split.images, cache)
    # the same data as the files hold, whichever split layout (pooled for SVHN, official for MedMNIST)
    loaded = []
    for split in (again.train, again.val, again.test):
        loaded.append((split.take(torch.arange(len(split))).numpy(), split.labels.numpy()))
    got_images = np.concatenate([i for i, _ in loaded])
    got_labels = np.concatenate([lab for _, lab in loaded])
    order = np.concatenate(list(again.split_indices.values())) if again.split_indices else np.arange(len(labels))
    assert np.array_equal(got_images, images[order]) and np.array_equal(got_labels, labels[order])
    assert bundle_digest(again) == bundle_digest(first)


def test_a_stale_or_damaged_cache_is_rebuilt(tmp_path):
    written = write_svhn(tmp_path)
    svhn = data.get("svhn")
    svhn.load(tmp_path)
    manifest = tmp_path / svhn.decoded_cache / "manifest.json"
    manifest.write_text("{not json")
    bundle = svhn.load(tmp_path)
    assert np.array_equal(bundle.test.labels.numpy(), written["labels"][bundle.split_indices["test"]])
    assert manifest.read_text().startswith('{"fingerprint"')  # rewritten
    # rewritten .mat files (a new modification time) are decoded again, not served from the old cache
    changed = write_svhn(tmp_path, seed=1)
    os.utime(tmp_path / "train_32x32.mat", ns=(0, 10**18))
    bundle = svhn.load(tmp_path)
    assert np.array_equal(bundle.test.labels.numpy(), changed["labels"][bundle.split_indices["test"]])


def test_arrays_come_back_as_read_only_maps_and_a_read_only_folder_only_warns(tmp_path):
    arrays = {"images": np.arange(24, dtype=np.uint8).reshape(2, 3, 2, 2), "labels": np.array([1, 0])}
    built = []
    build = lambda: built.append(1) or arrays  # noqa: E731
    first = cached_arrays(tmp_path / "cache", "fp", build)
    second = cached_arrays(tmp_path / "cache", "fp", build)
    assert built == [1]
    for loaded in (first, second):
        assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in loaded.values())
        assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    cached_arrays(tmp_path / "cache", "another", build)
    assert built == [1, 1]
    if os.geteuid() != 0:  # root writes into a read-only folder
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.warns(UserWarning, match="could not write the decoded cache"):
            assert np.array_equal(cached_arrays(locked / "cache", "fp", build)["labels"], arrays["labels"])


def test_the_split_digest_is_the_whole_splits_sha256_hashed_block_by_block():
    rng = np.random.default_rng(0)
    n = DIGEST_BYTES // 6 * 2 + 5  # three blocks of (1, 2, 3) images
    images = torch.from_numpy(rng.integers(0, 256, (n, 1, 2, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, n))
    index = torch.randperm(n)[: n - 7]
    for split, whole in (
        (Split(labels, images), images),
        (Split(labels[index], images, index), images[index]),
    ):
        expected = hashlib.sha256(split.labels.numpy().tobytes() + whole.contiguous().numpy().tobytes())
        assert split.digest().hexdigest() == expected.hexdigest()


WORKER = """
import sys
from pathlib import Path
import torch
from bench import data

def anonymous_kb():  # the process's own memory: not the page cache's file pages a mapping shows
    return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssAnon:")).split()[1])

before = anonymous_kb()
bundle = data.get("svhn").load(sys.argv[1])
batch = bundle.train.take(torch.arange(128))
print(anonymous_kb() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process's memory from /proc")
def test_a_worker_loading_from_the_cache_holds_no_copy_of_the_images(tmp_path):
    sizes = (20_000, 5_000, 5_000)
    write_svhn(tmp_path, sizes=sizes)
    data.get("svhn").load(tmp_path)  # decodes once and writes the cache
    worker = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    # Not the peak resident size: the pages of a mapped file that a batch touched count there too
    # (whole large folios of the page cache), though they are shared with every other worker.
    held = int(worker.stdout) * 1024
    decoded = sum(sizes) * 3 * 32 * 32  # 92 MB, which a worker decoding or copying would hold
    assert held < decoded / 4


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the process's mappings from /proc")
@pytest.mark.parametrize(
    "storage",
    [{"chunks": None}, {"chunks": (1, 96, 96, 3)}, {"chunks": (4, 96, 96, 3), "compression": "gzip"}],
    ids=["contiguous", "chunked", "compressed"],
)
def test_pcam_rows_are_mapped_from_the_h5_file_itself_or_from_a_decoded_cache(tmp_path, umask_022, storage):
    import h5py

    written = write_pcam(tmp_path, sizes=(40, 8, 8), chunks=storage["chunks"])
    if "compression" in storage:  # rewrite x with a filter: chunked and compressed, as h5py writes it
        for part, key in (("train", "train"), ("valid", "val"), ("test", "test")):
            with h5py.File(tmp_path / f"pcam/camelyonpatch_level_2_split_{part}_x.h5", "w") as handle:
                handle.create_dataset("x", data=written[part].transpose(0, 2, 3, 1), **storage)
    pcam = data.get("pcam")
    first = pcam.load(tmp_path)
    cache = tmp_path / pcam.decoded_cache
    again = pcam.load(tmp_path)
    for bundle in (first, again):
        for split, part in ((bundle.train, "train"), (bundle.val, "valid"), (bundle.test, "test")):
            if storage["chunks"] is None:
                assert backed_by(split.images, tmp_path / f"pcam/camelyonpatch_level_2_split_{part}_x.h5")
            else:
                assert backed_by(split.images, cache)
            everything = split.take(torch.arange(len(split)))
            assert everything.is_contiguous() and np.array_equal(everything.numpy(), written[part])
            index = torch.tensor([5, 2, 5, 7])  # unsorted, with a repeat
            assert np.array_equal(split.take(index).numpy(), written[part][index.numpy()])
    if storage["chunks"] is None:
        assert not cache.exists()  # nothing decoded, nothing written
    else:
        files = [f for f in cache.rglob("*") if f.is_file()]
        assert len(files) == 6 and all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files)
    assert bundle_digest(again) == bundle_digest(first)


def test_a_cached_splits_digest_names_the_caches_recorded_identity_and_its_rows(tmp_path):
    from bench.data.identity import identity_of

    write_svhn(tmp_path)
    svhn = data.get("svhn")
    first, other_seed = svhn.load(tmp_path), svhn.load(tmp_path, seed=7)
    manifest = json.loads((tmp_path / svhn.decoded_cache / "manifest.json").read_text())
    npy = (tmp_path / svhn.decoded_cache / "images.npy").read_bytes()
    assert manifest["digests"]["images"] == hashlib.sha256(npy).hexdigest()  # taken as the file was written
    assert identity_of(first.train.images) == manifest["digests"]["images"]
    assert bundle_digest(other_seed) != bundle_digest(first)  # other rows, another digest
    # other content in the files: another cache, another identity, another digest
    write_svhn(tmp_path, seed=1)
    os.utime(tmp_path / "train_32x32.mat", ns=(0, 10**18))
    assert bundle_digest(svhn.load(tmp_path)) != bundle_digest(first)
    # arrays with no recorded identity (decoded in memory) are hashed, byte for byte
    assert identity_of(data.get("synthetic").load(None).train.images) is None
