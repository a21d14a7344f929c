"""The scale check (scripts/scale.py) at a small fraction of the real sizes: a worker loading a dataset
holds at most about 1.5 times the decoded size of its splits, decoding or from the cache, and two
workers holding one dataset share one copy of it. Memory, never time, is asserted."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="reads processes' memory from /proc"),
]


def _scale_script():
    spec = importlib.util.spec_from_file_location("scale", REPO / "scripts" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scale = _scale_script()
# Each about 200 MB decoded, so that what loading holds stands well above what the interpreter and
# its allocators keep of their own (some 50 MB after decoding on threads).
FRACTIONS = {"cifar10": 1.0, "svhn": 0.1, "tiny-imagenet": 0.16, "pcam": 0.02, "tissuemnist": 1.0}


@pytest.mark.parametrize("name", sorted(FRACTIONS))
def test_a_worker_loading_holds_at_most_one_and_a_half_times_the_decoded_splits(tmp_path, name):
    scale.write_dataset(name, tmp_path, FRACTIONS[name])
    decoding, from_cache = (scale._probe("load", name, str(tmp_path)) for _ in range(2))
    assert decoding["decoded"] > 150e6
    for load in (decoding, from_cache):
        gained = load["peak_rss"] - load["rss_before"]
        # the decoded splits are held (as mapped pages the digest read), and hardly more
        assert gained <= 1.5 * load["decoded"], (name, gained / load["decoded"])


def test_two_workers_holding_one_dataset_share_one_copy_of_it(tmp_path):
    scale.write_dataset("svhn", tmp_path, FRACTIONS["svhn"])
    scale._probe("load", "svhn", str(tmp_path))  # builds the decoded cache, as the first run does
    shared = scale.share("svhn", tmp_path)
    train_bytes = 0.7 * FRACTIONS["svhn"] * sum(scale.FULL_SIZES["svhn"]["sizes"]) * 3 * 32 * 32
    assert shared["pss_one"] > 0.8 * train_bytes  # one worker alone counts every page it read
    # two count its pages once between them (not twice), beside what each allocates of its own
    assert shared["pss_two"] < 1.5 * shared["pss_one"]
