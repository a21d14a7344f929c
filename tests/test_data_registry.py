"""The dataset catalogue against protocol table 2.1, and the seeded split helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import data
from bench.core.errors import BenchError
from bench.data.pad_ufes import grouped_split, image_level_split
from bench.data.splits import holdout, resplit, resplit_sizes

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# name: classes, channels fed to the model, input size, batch, (mean, std), protocol split sizes
PROTOCOL_TABLE = {
    "cifar10": (10, 3, 32, 128, ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)), (42_000, 9_000, 9_000)),
    "fashionmnist": (10, 1, 28, 128, ((0.2860,), (0.3530,)), (49_000, 10_500, 10_500)),
    "svhn": (10, 3, 32, 128, ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)), (441_294, 94_563, 94_563)),
    "bloodmnist": (8, 3, 64, 128, IMAGENET, (11_959, 1_712, 3_421)),
    "tissuemnist": (8, 3, 64, 128, IMAGENET, (165_466, 23_640, 47_280)),
    "pcam": (2, 3, 96, 128, IMAGENET, (262_144, 32_768, 32_768)),
    "pad-ufes-20": (6, 3, 224, 64, IMAGENET, (1_608, 344, 346)),
    "tiny-imagenet": (200, 3, 64, 128, IMAGENET, (77_000, 16_500, 16_500)),
}


def test_names_are_the_eight_datasets_then_digits_and_synthetic():
    assert data.names() == [*PROTOCOL_TABLE, "digits", "synthetic"]
    assert data.names("*mnist") == ["fashionmnist", "bloodmnist", "tissuemnist"]
    assert data.expand("pcam,*mnist,pcam") == ["pcam", "fashionmnist", "bloodmnist", "tissuemnist"]
    assert data.expand("all") == data.names()


def test_unknown_names_are_user_errors():
    with pytest.raises(BenchError, match="Unknown dataset 'cifar100'.*cifar10"):
        data.get("cifar100")
    with pytest.raises(BenchError, match="Unknown dataset 'imagenet'"):
        data.expand("cifar10,imagenet")


@pytest.mark.parametrize("name", list(PROTOCOL_TABLE))
def test_each_dataset_carries_the_protocol_facts(name):
    classes, channels, size, batch, (mean, std), sizes = PROTOCOL_TABLE[name]
    dataset = data.get(name)
    assert (dataset.name, dataset.num_classes, dataset.in_channels, dataset.image_size, dataset.batch_size) == (
        name,
        classes,
        channels,
        size,
        batch,
    )
    assert (dataset.mean, dataset.std) == (mean, std)
    assert dataset.expected_sizes == dict(zip(("train", "val", "test"), sizes))
    assert len(dataset.class_names) in (0, classes)  # tiny-imagenet reads its 200 WordNet ids from wnids.txt
    assert not dataset.eval_transform().augments


def test_training_augmentation_is_declared_only_where_the_protocol_has_one():
    augmented = {n for n in PROTOCOL_TABLE if data.get(n).train_transform().augments}
    assert augmented == {"cifar10", "fashionmnist", "bloodmnist", "tissuemnist", "pad-ufes-20"}  # protocol 7.10


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    assert data.default_data_dir() == Path("data")
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path


@pytest.mark.parametrize(
    "n, sizes",
    [
        (60_000, (42_000, 9_000, 9_000)),
        (70_000, (49_000, 10_500, 10_500)),
        (630_420, (441_294, 94_563, 94_563)),
        (110_000, (77_000, 16_500, 16_500)),
        (2_298, (1_608, 344, 346)),
    ],
)
def test_resplit_sizes_reproduce_the_published_splits(n, sizes):
    assert tuple(resplit_sizes(n).values()) == sizes


def test_resplit_is_index_for_index_torch_random_split():
    n = 1_000
    ours = resplit(n, 42)
    sizes = list(resplit_sizes(n).values())
    theirs = torch.utils.data.random_split(range(n), sizes, generator=torch.Generator().manual_seed(42))
    for name, subset in zip(("train", "val", "test"), theirs):
        assert ours[name].tolist() == list(subset.indices)
    assert resplit(n, 7)["train"].tolist() != ours["train"].tolist()


def test_holdout_partitions_the_official_train_split():
    parts = holdout(50, seed=3)
    assert (len(parts["train"]), len(parts["val"])) == (45, 5)
    assert sorted(torch.cat([parts["train"], parts["val"]]).tolist()) == list(range(50))


def test_image_level_split_is_the_notebooks_global_shuffle():
    np.random.seed(42)
    order = np.arange(2_298)
    np.random.shuffle(order)
    parts = image_level_split(2_298, 42)
    assert parts["train"].tolist() == order[:1_608].tolist()
    assert parts["test"].tolist() == order[1_608 + 344 :].tolist()


def test_grouped_split_keeps_patients_whole_and_classes_balanced():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for patient in range(400):
        label = int(rng.integers(0, 6))
        for _ in range(int(rng.integers(1, 4))):
            groups.append(f"P{patient}")
            labels.append(label)
    labels = np.array(labels)
    parts = grouped_split(labels, groups, 6, seed=42)
    owner = {}
    for name, index in parts.items():
        for i in index:
            assert owner.setdefault(groups[i], name) == name
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    share = {name: len(index) / len(labels) for name, index in parts.items()}
    assert share["train"] == pytest.approx(0.70, abs=0.03) and share["val"] == pytest.approx(0.15, abs=0.03)
    for index in parts.values():
        overall = np.bincount(labels, minlength=6) / len(labels)
        assert np.abs(np.bincount(labels[index], minlength=6) / len(index) - overall).max() < 0.05
    assert grouped_split(labels, groups, 6, seed=42)["test"].tolist() == parts["test"].tolist()
    assert grouped_split(labels, groups, 6, seed=1)["test"].tolist() != parts["test"].tolist()
