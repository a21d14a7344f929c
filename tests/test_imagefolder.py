"""Folders of images: real PNG and JPEG files in class folders, read as a dataset and trained on."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import write_image_folder
from support import TINY_MODEL, bench, store_args

from bench import data, tracking
from bench.core.errors import BenchError


def test_one_folder_is_split_by_the_seed_with_size_channels_and_statistics_inferred(tmp_path):
    write_image_folder(tmp_path / "pets", per_class=20, size=12, gray=True)
    dataset = data.get(f"folder:{tmp_path / 'pets'}")
    bundle = dataset.load(tmp_path)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (3, 1, 12)
    assert bundle.class_names == ("cat", "dog", "owl")
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (42, 9, 9)  # 70/15/15 of 60
    images = bundle.train.materialize()
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (1, 12, 12)
    # Brightness follows the class folder (40, 120, 200 on average, JPEG or PNG alike).
    labels = bundle.train.labels
    means = [images[labels == k].float().mean().item() for k in range(3)]
    assert means == sorted(means) and means[0] < 70 < means[1] < 150 < means[2]
    assert dataset.mean[0] == pytest.approx(images.float().mean().item() / 255, abs=1e-3)
    other = data.get(f"folder:{tmp_path / 'pets'}").load(tmp_path, seed=7)
    assert not torch.equal(other.train.labels, bundle.train.labels)  # a different split seed


def test_train_val_test_folders_are_the_splits_and_settings_override_inference(tmp_path):
    # The named folder is registered for this test only: other tests read the shipped catalogue.
    with data.isolated():
        _check_registered_folder(tmp_path)
    assert "scans-test" not in data.names()


def _check_registered_folder(tmp_path):
    write_image_folder(tmp_path / "scans", per_class=6, size=20, splits=("train", "val", "test"))
    from bench.data.imagefolder import register_folder

    dataset = register_folder("scans-test", tmp_path / "scans", image_size=10, channels=1, mean=[0.5], std=[0.25])
    bundle = dataset.load(tmp_path)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18, 18, 18)
    assert (bundle.in_channels, bundle.image_size) == (1, 10)
    assert tuple(bundle.test.materialize().shape[1:]) == (1, 10, 10)  # resized once, when decoded
    assert dataset.mean == (0.5,) and dataset.std == (0.25,)


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda root: None, "put one folder per class there"),
        (lambda root: write_image_folder(root, classes=("only",)), "at least two class folders"),
        (lambda root: (write_image_folder(root), (root / "cat" / "000.png").write_bytes(b"not a png")), "is not a readable image"),
    ],
)
def test_missing_or_bad_folders_are_clear_errors(tmp_path, make, says):
    make(tmp_path / "pets")
    with pytest.raises(BenchError, match=says):
        data.get(f"folder:{tmp_path / 'pets'}").load(tmp_path)


@pytest.mark.slow
def test_a_folder_named_in_a_study_file_trains(tmp_path, store):
    write_image_folder(tmp_path / "pets", per_class=16, size=10)
    study = tmp_path / "pets.toml"
    study.write_text(
        '[datasets.pets]\nroot = "pets"\nimage_size = 8\n[train]\nmax_epochs = 1\n[gradflow]\nnum_batches = 1\n'
        '[[grid]]\ndatasets = ["pets"]\nmodels = ["tiny"]\n'
    )
    result = bench("run", "--study", str(study), *store_args(store), *TINY_MODEL)
    assert result.returncode == 0, result.stdout + result.stderr
    experiment = tracking.experiment_id(store["uri"], "test")
    (run,) = tracking.runs_of(store["uri"], experiment)
    assert run.status == "FINISHED" and run.tags["dataset"] == "pets"
    assert 0.0 <= run.metrics["test/top1"] <= 1.0
