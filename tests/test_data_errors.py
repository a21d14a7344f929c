"""Missing, truncated and corrupt files become one clear BenchError naming the dataset, the file and
what to do; the CLI turns it into exit code 2 without a traceback. Downloads verify checksums."""

from __future__ import annotations

import csv
import hashlib
import io
import tarfile

import numpy as np
import pytest
from data_fixtures import (
    run_bench,
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
from bench.data import cifar10 as cifar_module
from bench.data.downloads import Remote, fetch


@pytest.mark.parametrize(
    "name", ["cifar10", "fashionmnist", "svhn", "bloodmnist", "tissuemnist", "pcam", "tiny-imagenet"]
)
def test_missing_files_name_dataset_files_place_and_download(tmp_path, name):
    dataset = data.get(name)
    expected = dataset.missing_files(tmp_path)
    assert expected and all(not p.exists() for p in expected)
    with pytest.raises(BenchError) as caught:
        dataset.load(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{name} needs ") and str(tmp_path) in message
    assert str(expected[0].relative_to(tmp_path)) in message
    assert f"bench data download {name}" in message and "http" in message


def test_pad_ufes_has_no_anonymous_download_and_says_how_to_get_it(tmp_path):
    pad = data.get("pad-ufes-20")
    with pytest.raises(BenchError, match="metadata.csv.*Kaggle.*maxjen/pad-ufes-20.*Mendeley"):
        pad.download(tmp_path)
    written = write_pad(tmp_path)
    gone = written["rows"][3]["img_id"]
    (written["root"] / "images" / gone).unlink()
    with pytest.raises(BenchError, match=rf"missing 1 of the images metadata.csv lists \(e.g. {gone}\)"):
        pad.load(tmp_path)


def test_digits_and_synthetic_need_nothing(tmp_path):
    for name in ("digits", "synthetic"):
        assert data.get(name).missing_files(tmp_path) == []
        data.get(name).download(tmp_path)  # nothing to do, no error


def truncate(path, keep=0.5):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def test_truncated_hdf5_is_reported_with_its_file(tmp_path):
    write_pcam(tmp_path)
    broken = tmp_path / "pcam" / "camelyonpatch_level_2_split_valid_x.h5"
    truncate(broken, 0.3)
    with pytest.raises(BenchError, match=f"pcam: {broken} is not a readable HDF5 file.*bench data download pcam"):
        data.get("pcam").load(tmp_path)


def test_hdf5_with_wrong_image_shape_is_reported(tmp_path):
    import h5py

    write_pcam(tmp_path)
    path = tmp_path / "pcam" / "camelyonpatch_level_2_split_test_x.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.zeros((8, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(
        BenchError, match=r"test_x.h5 holds uint8 images of shape \(8, 32, 32, 3\), expected uint8 \(N, 96, 96, 3\)"
    ):
        data.get("pcam").load(tmp_path)


def test_bad_npz_and_npz_without_the_expected_arrays(tmp_path):
    (tmp_path / "bloodmnist.npz").write_bytes(b"this is not a zip archive at all")
    with pytest.raises(BenchError, match="bloodmnist: .*bloodmnist.npz is not a readable .npz file"):
        data.get("bloodmnist").load(tmp_path)
    np.savez(tmp_path / "bloodmnist.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(BenchError, match="has no train_images/train_labels arrays"):
        data.get("bloodmnist").load(tmp_path)
    write_medmnist(tmp_path, "tissuemnist", channels=3)  # colour images where gray ones belong
    with pytest.raises(BenchError, match=r"tissuemnist: .* expected uint8 \(N, 28, 28\)"):
        data.get("tissuemnist").load(tmp_path)


def test_unreadable_and_wrongly_sized_jpegs(tmp_path):
    from PIL import Image

    written = write_tiny_imagenet(tmp_path)
    image = written["root"] / "val" / "images" / "val_2.JPEG"
    image.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(BenchError, match="tiny-imagenet: .*val_2.JPEG is not a readable image"):
        data.get("tiny-imagenet").load(tmp_path)
    Image.new("RGB", (32, 32)).save(image, format="JPEG")
    with pytest.raises(BenchError, match="val_2.JPEG is 32x32 pixels, expected 64x64"):
        data.get("tiny-imagenet").load(tmp_path)


def test_truncated_cifar_batch_and_fashion_idx(tmp_path):
    write_cifar10(tmp_path)
    truncate(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(BenchError, match="cifar10: .*data_batch_3 is not a CIFAR-10 batch"):
        data.get("cifar10").load(tmp_path)
    write_fashionmnist(tmp_path, gz=True)
    truncate(tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz", 0.6)
    with pytest.raises(BenchError, match="fashionmnist: .*t10k-images-idx3-ubyte.gz could not be read"):
        data.get("fashionmnist").load(tmp_path)


def test_svhn_labels_outside_1_to_10_are_rejected(tmp_path):
    from scipy.io import savemat

    write_svhn(tmp_path)
    savemat(
        tmp_path / "extra_32x32.mat",
        {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.array([[1], [11], [3], [4]], np.uint8)},
    )
    with pytest.raises(BenchError, match=r"extra_32x32.mat has labels outside 1..10"):
        data.get("svhn").load(tmp_path)


def rewrite_metadata(root, drop=None, change=None):
    path = root / "metadata.csv"
    rows = list(csv.DictReader(path.open()))
    fields = [f for f in rows[0] if f != drop]
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **(change or {})})


def test_pad_metadata_missing_columns_or_unknown_diagnoses(tmp_path):
    written = write_pad(tmp_path)
    rewrite_metadata(written["root"], drop="patient_id")
    data.get("pad-ufes-20").load(tmp_path)  # the protocol split does not need patients
    with pytest.raises(BenchError, match="metadata.csv lacks the column.s. patient_id"):
        data.get("pad-ufes-20").load(tmp_path, splits="grouped")
    rewrite_metadata(written["root"], drop="diagnostic")
    with pytest.raises(BenchError, match="lacks the column.s. diagnostic.*PAD-UFES-20 archive"):
        data.get("pad-ufes-20").load(tmp_path)
    write_pad(tmp_path)
    rewrite_metadata(written["root"], change={"diagnostic": "MELANOMA"})
    with pytest.raises(BenchError, match="has diagnostics MELANOMA besides ACK, BCC"):
        data.get("pad-ufes-20").load(tmp_path)


def test_invalid_option_combinations(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(BenchError, match="Unknown preprocessing 'legacy'"):
        data.get("cifar10").load(tmp_path, preprocessing="legacy")
    with pytest.raises(BenchError, match="cifar10 has no 'grouped' splits.*pad-ufes-20 only"):
        data.get("cifar10").load(tmp_path, splits="grouped")
    with pytest.raises(BenchError, match="pad-ufes-20 has no 'official' splits; choose one of: protocol, grouped"):
        data.get("pad-ufes-20").load(tmp_path, splits="official")
    with pytest.raises(BenchError, match="digits has no 'official' splits"):
        data.get("digits").load(tmp_path, splits="official")
    with pytest.raises(BenchError, match="non-negative"):
        data.get("cifar10").load(tmp_path, seed=-1)


def test_fetch_verifies_the_checksum_and_leaves_nothing_half_written(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(b"payload" * 1000)
    good = hashlib.md5(source.read_bytes()).hexdigest()
    target_dir = tmp_path / "data"
    path = fetch("demo", Remote(source.as_uri(), good, "sub/file.bin"), target_dir)
    assert path.read_bytes() == source.read_bytes()
    with pytest.raises(BenchError, match="download of .* for demo is corrupt.*bench data download demo"):
        fetch("demo", Remote(source.as_uri(), "0" * 32, "other.bin"), target_dir)
    with pytest.raises(BenchError, match="Could not download .*missing.bin for demo.*check the network connection"):
        fetch("demo", Remote((tmp_path / "missing.bin").as_uri(), good, "third.bin"), target_dir)
    assert sorted(p.name for p in target_dir.rglob("*")) == ["file.bin", "sub"]


def test_cifar10_download_unpacks_a_checksummed_archive(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    write_cifar10(staging)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(buffer.getvalue())
    # The real download code against a local copy of the archive (no network in tests).
    monkeypatch.setattr(
        cifar_module,
        "ARCHIVE",
        Remote(tarball.as_uri(), hashlib.md5(buffer.getvalue()).hexdigest(), "cifar-10-python.tar.gz"),
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data.get("cifar10").download(data_dir)
    assert data.get("cifar10").missing_files(data_dir) == []
    assert not (data_dir / "cifar-10-python.tar.gz").exists()
    assert len(data.get("cifar10").load(data_dir).train) == 28


def test_cli_reports_corrupt_and_missing_data_with_exit_code_2(tmp_path):
    write_pcam(tmp_path)
    truncate(tmp_path / "pcam" / "camelyonpatch_level_2_split_train_y.h5", 0.2)
    corrupt = run_bench("data", "check", "pcam", "--data-dir", str(tmp_path))
    assert corrupt.returncode == 2
    assert "Traceback" not in corrupt.stderr
    lines = corrupt.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pcam: ") and "train_y.h5" in lines[0]
    missing = run_bench("data", "check", "cifar10", "--data-dir", str(tmp_path))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert (
        "cifar10 needs cifar-10-batches-py/data_batch_1" in missing.stderr
        and "bench data download cifar10" in missing.stderr
    )
