"""The Python API (bench.run, bench.report): the command line's names, plain data back, runs that
train in the calling process with the inline backend, and the same one-sentence errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import REPO, TINY_MODEL, bench, isolated_catalogue, store_args

import bench as api
from bench import models, tracking
from bench.core.errors import BenchError

TINY_FILE = TINY_MODEL[1]


def _places(store: dict) -> dict:
    return {"tracking_uri": store["uri"], "checkpoint_dir": store["checkpoints"], "data_dir": store["data"], "experiment": "api"}


def test_run_inline_trains_in_this_process_and_returns_one_row_per_run(ready_store):
    calls_before = os.getpid()
    with isolated_catalogue():
        frame = api.run(
            datasets="synthetic", models="tiny", seeds=[1, 2], max_epochs=1, gradflow__num_batches=1,
            backend="inline", plugins=[TINY_FILE], progress=False, **_places(ready_store),
        )
        assert list(frame.columns[:6]) == ["run_id", "dataset", "model", "seed", "split_seed", "state"]
        assert sorted(frame.seed) == [1, 2] and set(frame.state) == {"finished"} and frame.test_top1.notna().all()
        assert frame.attrs["exit_code"] == 0
        stored = {r.run_id: r for r in tracking.runs_of(ready_store["uri"], frame.attrs["experiment_id"])}
        assert set(stored) == set(frame.run_id) and {r.status for r in stored.values()} == {tracking.FINISHED}
        assert {r.params["train.max_epochs"] for r in stored.values()} == {"1"}  # max_epochs reached the spec
        assert {r.tags["env.torch_threads"] for r in stored.values()} == {str(__import__("torch").get_num_threads())}
        again = api.run(datasets="synthetic", models="tiny", seeds=[1, 2], max_epochs=1, gradflow__num_batches=1,
                        backend="inline", plugins=[TINY_FILE], progress=False, **_places(ready_store))
        assert set(again.state) == {"already finished"} and set(again.run_id) == set(frame.run_id)
        assert again.test_top1.tolist() == frame.set_index("run_id").loc[again.run_id, "test_top1"].tolist()
    assert "tiny" not in models.names() and os.getpid() == calls_before


@pytest.mark.parametrize(
    "options, says",
    [
        ({"seeds": [2**32]}, "seeds (bench.run(seeds=...)) must be at most 4294967295"),
        ({"split_seeds": -1}, "split_seeds (bench.run(split_seeds=...)) must be at least 0"),
        ({"max_epoch": 1}, "Unknown setting max_epoch"),
        ({"dropout": 2.0}, "model.dropout (bench.run(model.dropout=...)) must be below 1"),
        ({"lr": "fast"}, "train.lr (bench.run(train.lr=...)) must be a number"),
        ({"backend": "kubernetes"}, "Unknown backend 'kubernetes'"),
        ({"jobs_per_device": 2, "backend": "inline"}, "--jobs-per-device belongs to the local backend"),
        ({"experiment": " "}, "--experiment is empty"),
    ],
)
def test_bad_keywords_are_one_sentence_and_nothing_is_created(store, options, says):
    with pytest.raises(BenchError) as raised:
        api.run(datasets="digits", models="resnet18", progress=False, **(_places(store) | options))
    assert str(raised.value).startswith(says), str(raised.value)
    assert not (store["root"] / "mlflow.db").exists()


@pytest.mark.parametrize(
    "args, source",
    [
        (["--seeds", "-1"], "seeds (command line: --seeds) must be at least 0"),
        (["--split-seeds", "4294967296"], "split_seeds (command line: --split-seeds) must be at most 4294967295"),
        (["--study", "{study}"], "seeds (study file {study}) must be at most 4294967295"),
    ],
)
def test_seeds_out_of_range_stop_with_their_source_before_any_run(store, tmp_path, args, source):
    study = tmp_path / "big.toml"
    study.write_text('seeds = [4294967296]\n[[grid]]\ndatasets = ["digits"]\nmodels = ["resnet18"]\n')
    args = [a.format(study=study) for a in args]
    result = bench("run", "--datasets", "digits", "--models", "resnet18", *args, *store_args(store))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == f"error: {source.format(study=study)}, got {'-1' if '-1' in args else '4294967296'}."
    assert not (store["root"] / "mlflow.db").exists()  # no store, so no run


def test_import_bench_loads_neither_torch_nor_mlflow():
    code = "import sys, bench; print(sorted(m for m in ('torch', 'mlflow', 'optuna', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_the_documented_call_prints_one_row(tmp_path):
    code = "import bench; print(bench.run(datasets='digits', models='resnet18', max_epochs=1, backend='inline').to_string())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    table = result.stdout.strip().splitlines()[-2:]
    assert table[0].split()[:6] == ["run_id", "dataset", "model", "seed", "split_seed", "state"]
    assert table[1].split()[2:7] == ["digits", "resnet18", "42", "42", "finished"]


def test_report_returns_the_tables(ready_store, tmp_path):
    with isolated_catalogue():
        ran = api.run(datasets="synthetic", models="tiny", max_epochs=1, gradflow__num_batches=1, backend="inline",
                plugins=[TINY_FILE], progress=False, **_places(ready_store))
        assert list(ran.state) == ["finished"], ran.to_dict("records")
        report = api.report(experiment="api", tracking_uri=ready_store["uri"], out=tmp_path / "report")
    assert list(report.results.dataset) == ["synthetic"] and list(report.results.model) == ["tiny"]
    assert len(report.runs) == 1 and (tmp_path / "report" / "results.md").read_text() == report.markdown
    assert report._repr_markdown_() == report.markdown
