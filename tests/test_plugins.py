"""Plugins: the example package found by its entry points, modules by --plugin and study files,
and broken plugins as one clear error; on the local backend and on Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import REPO, bench, store_args

from bench import tracking

EXAMPLE = REPO / "examples" / "bench-plugin-example"
QUICK = ["--max-epochs", "1", "--set", "gradflow.num_batches=1"]


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> dict[str, str]:
    """The example package pip-installed (no network, no build isolation) into a folder on PYTHONPATH.

    A folder rather than the test environment itself, so the suite leaves that environment as it
    found it; the package's metadata there is what importlib.metadata finds its entry points in.
    """
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def _runs(store, experiment="test"):
    exp = tracking.experiment_id(store["uri"], experiment)
    return {run.name: run for run in tracking.runs_of(store["uri"], exp)}


def _finished_with_test_metrics(run) -> None:
    assert run.status == "FINISHED"
    assert 0.0 <= run.metrics["test/top1"] <= 1.0
    assert "gradflow/health" in run.metrics  # the gradient-flow analysis ran on the plugin's model


def test_installed_plugin_is_found_with_no_option(example_site):
    listed = bench("models", "--models", "tinycnn", "--in-channels", "1", env=example_site)
    assert listed.returncode == 0, listed.stderr
    assert "tinycnn" in listed.stdout and "94,186" in listed.stdout  # parameter count like ours
    assert "tinycnn" not in bench("models").stdout  # not installed: not there


@pytest.mark.slow
def test_installed_plugin_trains_on_digits_and_on_its_own_data(example_site, store):
    result = bench("run", "--datasets", "digits,shapes", "--models", "tinycnn", *QUICK, "--jobs-per-device", "1", *store_args(store), env=example_site)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = _runs(store)
    assert set(runs) == {"digits/tinycnn/42", "shapes/tinycnn/42"}
    for run in runs.values():
        _finished_with_test_metrics(run)
    assert runs["shapes/tinycnn/42"].tags["dataset"] == "shapes"
    assert not any(store["checkpoints"].glob("**/*.pt"))  # checkpointed, then tidied like our runs


@pytest.mark.slow
def test_installed_plugin_trains_on_ray(example_site, store):
    pytest.importorskip("ray", reason="Ray is not installed; pip install 'gradattn-bench[ray]'")
    result = bench(
        "run", "--backend", "ray", "--cpus-per-run", "1", "--datasets", "digits", "--models", "tinycnn",
        *QUICK, *store_args(store, devices=None), env=example_site,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _finished_with_test_metrics(_runs(store)["digits/tinycnn/42"])


MLP = '''
import torch.nn as nn
from bench.models import ModelInfo, register_model

@register_model(ModelInfo("mlp", "mine", "a two-layer perceptron", "-", ("hidden",)))
def mlp(num_classes, in_channels, hidden=64):
    return nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(in_channels * 64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
'''


@pytest.fixture
def folder(tmp_path) -> Path:
    """Where a user keeps their own modules (not the store's folder, which is named bench/)."""
    (tmp_path / "mine").mkdir()
    return tmp_path / "mine"


@pytest.mark.slow
def test_a_module_of_ones_own_by_study_file_and_by_option(folder, store):
    (folder / "mymodels.py").write_text(MLP)
    study = folder / "mine.toml"
    study.write_text('plugins = ["mymodels"]\n[train]\nmax_epochs = 1\n[gradflow]\nnum_batches = 1\n'
                     '[[grid]]\ndatasets = ["digits"]\nmodels = ["mlp"]\n')
    by_file = bench("run", "--study", str(study), *store_args(store), cwd=REPO)  # found beside the study file
    assert by_file.returncode == 0, by_file.stdout + by_file.stderr
    by_option = bench("run", "--plugin", "mymodels", "--models", "mlp", "--seeds", "7", *QUICK, *store_args(store), cwd=folder)
    assert by_option.returncode == 0, by_option.stdout + by_option.stderr
    runs = _runs(store)
    for name in ("digits/mlp/42", "digits/mlp/7"):
        _finished_with_test_metrics(runs[name])


BROKEN = {
    "import error": ("import not_a_module_anywhere\n", "failed to import (ModuleNotFoundError"),
    "name clash": (
        "from bench.models import ModelInfo, register_model\n"
        "@register_model(ModelInfo('resnet18', 'mine', 'x', '-', ()))\ndef f(num_classes, in_channels):\n    pass\n",
        "model 'resnet18' is already registered",
    ),
    "wrong signature": (
        "from bench.models import ModelInfo, register_model\n"
        "@register_model(ModelInfo('mine', 'mine', 'x', '-', ('width',)))\ndef f(num_classes):\n    pass\n",
        "cannot be called as f(num_classes, in_channels, width=...)",
    ),
    "not a dataset": (
        "from bench.data import register\n@register\nclass Mine:\n    name = 'mine'\n",
        "must subclass bench.data.Dataset",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_plugin_is_one_sentence_and_exit_2(folder, store, case):
    source, says = BROKEN[case]
    (folder / "broken.py").write_text(textwrap.dedent(source))
    result = bench("run", "--plugin", "broken", *QUICK, *store_args(store), cwd=folder)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert says in result.stderr and "broken" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not Path(store["root"] / "checkpoints").exists()  # stopped before any run


def test_tables_printed_to_a_pipe_are_never_cut():
    from bench import models

    result = bench("models")  # stdout is a pipe here
    assert result.returncode == 0, result.stderr
    for name in models.names():
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert models.info(name).description in line  # one line per model, nothing wrapped or elided
