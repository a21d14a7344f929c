"""Each loader reads small files in its dataset's real on-disk format: shapes, dtypes, label ranges,
split sizes, content, and the seeded splits' determinism."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from data_fixtures import (
    PAD_CLASSES,
    write_cifar10,
    write_fashionmnist,
    write_medmnist,
    write_pad,
    write_pcam,
    write_svhn,
    write_tiny_imagenet,
)

from bench import data
from bench.core.errors import BenchError
from bench.data.pipeline import BatchLoader, NotebookDoubleTransform


def check_bundle(bundle, sizes, image_shape, num_classes):
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == sizes
    for split in (bundle.train, bundle.val, bundle.test):
        images = split.take(torch.arange(len(split)))
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == image_shape
        assert split.labels.dtype == torch.int64 and split.labels.dim() == 1
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < num_classes


def check_pooled_content(bundle, written):
    """Every split row is the pooled row its split_indices entry names, image and label."""
    indices = bundle.split_indices
    assert sorted(sum(indices.values(), [])) == list(range(len(written["labels"])))
    for name in ("train", "val", "test"):
        split = getattr(bundle, name)
        assert np.array_equal(split.take(torch.arange(len(split))).numpy(), written["images"][indices[name]])
        assert split.labels.tolist() == written["labels"][indices[name]].tolist()


def test_cifar10_pools_train_and_test_and_resplits_70_15_15(tmp_path):
    written = write_cifar10(tmp_path)
    bundle = data.get("cifar10").load(tmp_path)
    check_bundle(bundle, (28, 6, 6), (3, 32, 32), 10)
    check_pooled_content(bundle, written)
    assert bundle.batch_size == 128 and bundle.class_names[0] == "airplane"
    assert any("differ from the protocol's 42000/9000/9000" in note for note in bundle.notes)


def test_seeded_splits_are_reproducible_and_seed_dependent(tmp_path):
    write_cifar10(tmp_path)
    cifar = data.get("cifar10")
    first, again, other = cifar.load(tmp_path, seed=42), cifar.load(tmp_path, seed=42), cifar.load(tmp_path, seed=7)
    assert first.split_indices == again.split_indices
    assert first.split_indices["train"] != other.split_indices["train"]
    batches = [
        next(
            iter(
                BatchLoader(b.train, batch_size=8, transform=b.train_transform, device="cpu", shuffle=True, seed=b.seed)
            )
        )
        for b in (first, again, other)
    ]
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    assert not torch.equal(batches[0][0], batches[2][0])


def test_cifar10_official_splits_keep_the_test_batch(tmp_path):
    written = write_cifar10(tmp_path)
    bundle = data.get("cifar10").load(tmp_path, splits="official", seed=3)
    check_bundle(bundle, (27, 3, 10), (3, 32, 32), 10)
    assert np.array_equal(bundle.test.take(torch.arange(10)).numpy(), written["images"][written["n_train"] :])
    assert sorted(bundle.split_indices["train"] + bundle.split_indices["val"]) == list(range(30))


def test_cifar10_notebook_mode_reproduces_the_double_transform_on_train_only(tmp_path):
    write_cifar10(tmp_path)
    bundle = data.get("cifar10").load(tmp_path, preprocessing="notebook")
    assert isinstance(bundle.train_transform.ops[0], NotebookDoubleTransform)
    assert not any(isinstance(op, NotebookDoubleTransform) for op in bundle.eval_transform.ops)
    assert any("7.1" in note for note in bundle.notes)


def test_svhn_reads_the_mat_files_maps_label_10_to_0_and_pools_extra(tmp_path):
    written = write_svhn(tmp_path)
    bundle = data.get("svhn").load(tmp_path)
    check_bundle(bundle, (19, 4, 5), (3, 32, 32), 10)
    check_pooled_content(bundle, written)
    official = data.get("svhn").load(tmp_path, splits="official")
    check_bundle(official, (11, 1, 6), (3, 32, 32), 10)  # extra is not part of the official splits
    assert np.array_equal(official.test.take(torch.arange(6)).numpy(), written["images"][12:18])


@pytest.mark.parametrize("gz", [True, False])
def test_fashionmnist_reads_idx_files_plain_or_gzipped(tmp_path, gz):
    written = write_fashionmnist(tmp_path, gz=gz)
    bundle = data.get("fashionmnist").load(tmp_path)
    check_bundle(bundle, (28, 6, 6), (1, 28, 28), 10)
    check_pooled_content(bundle, written)
    assert data.get("fashionmnist").sizes(tmp_path) == {"train": 28, "val": 6, "test": 6}


@pytest.mark.parametrize("name, channels", [("bloodmnist", 3), ("tissuemnist", 1)])
def test_medmnist_official_splits_resized_to_64_and_gray_repeated(tmp_path, name, channels):
    written = write_medmnist(tmp_path, name, channels)
    dataset = data.get(name)
    bundle = dataset.load(tmp_path)
    check_bundle(bundle, (20, 6, 8), (channels, 28, 28), 8)
    assert bundle.split_indices is None
    assert dataset.load(tmp_path, splits="official").test.labels.tolist() == written["test_labels"].reshape(-1).tolist()
    stored = written["val_images"] if channels == 3 else written["val_images"][..., None]
    assert np.array_equal(bundle.val.take(torch.arange(6)).numpy(), stored.transpose(0, 3, 1, 2))
    model_input = bundle.eval_transform(bundle.val.take(torch.arange(2)))
    assert model_input.shape == (2, 3, 64, 64)
    # a gray image is repeated into three equal channels (before each channel's normalisation); colour stays colour
    repeated = torch.allclose(model_input[:, 0] * 0.229 + 0.485, model_input[:, 1] * 0.224 + 0.456, atol=1e-5)
    assert repeated is (channels == 1)
    assert dataset.sizes(tmp_path) == {"train": 20, "val": 6, "test": 8}


def test_pcam_batches_hold_the_hdf5_files_rows(tmp_path):
    written = write_pcam(tmp_path)
    bundle = data.get("pcam").load(tmp_path)
    check_bundle(bundle, (24, 8, 8), (3, 96, 96), 2)
    index = torch.tensor([5, 2, 5, 17])  # unsorted, with a repeat
    assert np.array_equal(bundle.train.take(index).numpy(), written["train"][index.numpy()])
    assert bundle.test.labels.tolist() == written["test_labels"].tolist()
    seen = []
    for x, y in BatchLoader(
        bundle.train, batch_size=10, transform=bundle.eval_transform, device="cpu", shuffle=True, seed=1
    ):
        raw = torch.round((x[:, 0, 0, 0] * 0.229 + 0.485) * 255).long()  # pixel (0, 0) holds the row number
        assert y.tolist() == written["train_labels"][raw.numpy()].tolist()
        seen.extend(raw.tolist())
    assert sorted(seen) == list(range(24))
    assert data.get("pcam").sizes(tmp_path) == {"train": 24, "val": 8, "test": 8}


def test_tiny_imagenet_labels_follow_sorted_wnids_and_decoding_is_cached(tmp_path):
    written = write_tiny_imagenet(tmp_path)
    tiny = data.get("tiny-imagenet")
    bundle = tiny.load(tmp_path)
    check_bundle(bundle, (14, 3, 4), (3, 64, 64), 200)
    assert bundle.class_names == tuple(written["wnids"])
    assert (written["root"] / "decoded-uint8" / "manifest.json").exists()
    # train rows come first in the pooled order, class by class (ImageFolder's order)
    pooled_labels = torch.empty(21, dtype=torch.long)
    for name in ("train", "val", "test"):
        pooled_labels[bundle.split_indices[name]] = getattr(bundle, name).labels
    assert pooled_labels[:15].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    # A later load reads the cache: an image changed behind its back (same size and time) goes unnoticed...
    image = written["root"] / "train" / "n01000000" / "images" / "n01000000_0.JPEG"
    stat = image.stat()
    image.write_bytes(b"\0" * stat.st_size)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert tiny.load(tmp_path).split_indices == bundle.split_indices
    # ...while a changed file invalidates it, and the damaged JPEG is then reported.
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(BenchError, match="n01000000_0.JPEG is not a readable image"):
        tiny.load(tmp_path)


@pytest.mark.parametrize("layout", ["images", "parts"])
def test_pad_ufes_image_level_split_with_one_label_mapping(tmp_path, layout):
    written = write_pad(tmp_path, layout=layout, with_extension=layout == "images")
    bundle = data.get("pad-ufes-20").load(tmp_path)
    n = len(written["rows"])
    sizes = (int(0.7 * n), int(0.15 * n), n - int(0.7 * n) - int(0.15 * n))
    check_bundle(bundle, sizes, (3, 224, 224), 6)
    assert bundle.batch_size == 64 and bundle.class_names == PAD_CLASSES
    pooled_labels = torch.empty(n, dtype=torch.long)
    for name in ("train", "val", "test"):
        pooled_labels[bundle.split_indices[name]] = getattr(bundle, name).labels
    assert pooled_labels.tolist() == [PAD_CLASSES.index(r["diagnostic"]) for r in written["rows"]]
    assert any("leaky" in note and "7.8" in note for note in bundle.notes)


def test_pad_ufes_grouped_split_keeps_each_patient_in_one_split(tmp_path):
    written = write_pad(tmp_path, patients=30)
    bundle = data.get("pad-ufes-20").load(tmp_path, splits="grouped", seed=5)
    owner = {}
    for name, index in bundle.split_indices.items():
        for i in index:
            assert owner.setdefault(written["rows"][i]["patient_id"], name) == name
    assert min(len(bundle.train), len(bundle.val), len(bundle.test)) > 0
    assert bundle.split_indices != data.get("pad-ufes-20").load(tmp_path, splits="grouped", seed=6).split_indices


def test_pad_ufes_notebook_mode_says_which_defects_are_not_reproduced(tmp_path):
    write_pad(tmp_path)
    bundle = data.get("pad-ufes-20").load(tmp_path, preprocessing="notebook")
    assert any("per-split label mapping is not reproduced" in note and "7.9" in note for note in bundle.notes)


def test_digits_is_embedded_and_split_70_15_15():
    digits = data.get("digits")
    assert digits.missing_files("/nonexistent") == []
    bundle = digits.load("/nonexistent")
    check_bundle(bundle, (1257, 269, 271), (1, 8, 8), 10)
    assert bundle.train_transform(bundle.train.take(torch.arange(4)), torch.Generator().manual_seed(0)).shape == (
        4,
        1,
        16,
        16,
    )
    assert int(bundle.train.take(torch.arange(len(bundle.train))).max()) == 255


def test_digits_are_scikit_learns_images_and_labels_scaled_to_uint8():
    from sklearn.datasets import load_digits

    shipped = load_digits()
    images = np.rint(shipped.images * (255 / 16)).astype(np.uint8)[:, None]
    check_pooled_content(data.get("digits").load("/nonexistent"), {"images": images, "labels": shipped.target})


def test_synthetic_has_any_shape_and_a_learnable_class_signal():
    bundle = data.get("synthetic").load(None, channels=1, image_size=16, num_classes=4, sizes=(200, 40, 60))
    check_bundle(bundle, (200, 40, 60), (1, 16, 16), 4)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (4, 1, 16)
    train = bundle.train.take(torch.arange(200)).float().flatten(1)
    means = torch.stack([train[bundle.train.labels == k].mean(0) for k in range(4)])
    test = bundle.test.take(torch.arange(60)).float().flatten(1)
    nearest = torch.cdist(test, means).argmin(1)
    assert (nearest == bundle.test.labels).float().mean() > 0.9
    default = data.get("synthetic").load(None)
    check_bundle(default, (256, 64, 64), (3, 16, 16), 10)
    assert torch.equal(
        default.train.labels, data.get("synthetic").load(None, seed=9).train.labels
    )  # data_seed, not the run seed
