"""The recorded split indices: compact, read back exactly, and runs logged as JSON still readable."""

from __future__ import annotations

import json

import pytest

from bench.core.errors import BenchError
from bench.data.split_record import read_split_indices, write_split_indices
from bench.data.splits import index_lists, resplit


def test_a_large_resplit_is_stored_far_smaller_than_json_and_read_back_exactly(tmp_path):
    indices = index_lists(resplit(200_000, 42))
    path = tmp_path / "split_indices.npz"
    write_split_indices(indices, path)
    as_json = len(json.dumps(indices, indent=2))  # how runs recorded them before
    assert path.stat().st_size < as_json / 3
    assert read_split_indices(path) == indices


def test_small_and_empty_splits_round_trip(tmp_path):
    indices = {"train": [3, 0, 2], "val": [1], "test": []}
    write_split_indices(indices, tmp_path / "s.npz")
    assert read_split_indices(tmp_path / "s.npz") == indices


def test_a_run_logged_with_json_indices_is_still_read(tmp_path):
    indices = {"train": [4, 1, 0], "val": [2], "test": [3]}
    (tmp_path / "split_indices.json").write_text(json.dumps(indices, indent=2))
    assert read_split_indices(tmp_path / "split_indices.json") == indices


def test_a_damaged_file_is_one_clear_error(tmp_path):
    (tmp_path / "split_indices.npz").write_bytes(b"not a zip")
    with pytest.raises(BenchError, match="split_indices.npz is not a readable split-indices file"):
        read_split_indices(tmp_path / "split_indices.npz")
