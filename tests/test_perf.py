"""`bench perf` at CI size: the JSON it writes, the harness it times, the hooks an analysis leaves,
the GPU script on the CPU and the grid benchmark's inputs. Speed itself is never asserted here."""

from __future__ import annotations

import json
import math

import pytest
import torch
from support import bench, cli, new_store

from bench import gradflow, tracking
from bench.core.errors import BenchError
from bench.perf.grid import GridScaling, grid_specs
from bench.perf.grid import run_benchmark as run_grid_benchmark
from bench.perf.train import TrackingStore, Workload, bare_epoch, build_model, leftover_hooks, synthetic_batches

TINY = ["--image-size", "8", "--batch-size", "4", "--steps", "1", "--warmup", "1", "--repeats", "1", "--threads", "1"]
MODEL_FIGURES = {
    "parameters", "train_images_per_s", "bare_train_images_per_s", "eval_images_per_s", "harness_overhead", "epoch_end_s",
    "gradflow_overhead", "plain_step_after_analysis", "plain_step_s", "analysed_step_s", "peak_memory_bytes",
}


def numbers(value, path="$"):
    """Every figure in a JSON document with where it sits: numbers outside "settings" (a setting
    such as 0 DataLoader workers may be 0; booleans are flags, not figures)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "settings":
                yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def assert_all_positive(document) -> None:
    found = list(numbers(document))
    assert found
    bad = [(path, value) for path, value in found if not (math.isfinite(value) and value > 0)]
    assert not bad, bad


@pytest.fixture(scope="module")
def perf_store(tmp_path_factory, migrated_store) -> str:
    """One sqlite store for the module; the harness logs here."""
    uri = new_store(tmp_path_factory.mktemp("perf"), migrated_store)["uri"]
    tracking.prepare(uri, TrackingStore.EXPERIMENT)
    return uri


@pytest.mark.slow
def test_bench_perf_json_has_every_figure_positive_and_prints_three_ratios(tmp_path, perf_store):
    out = tmp_path / "perf.json"
    result = bench(
        "perf", "--models", "resnet18,gradattn-rope", *TINY, "--tracking-uri", perf_store,
        "--data-images", "64", "--data-batches", "2", "--data-workers", "0", "--json", str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = " ".join(result.stdout.split())  # rich wraps long lines
    for line in ("harness overhead (our step / bare loop): resnet18", "data pipeline (ours / notebook-style DataLoader",
                 "gradient-flow analysis (analysed / plain step): resnet18"):
        assert line in text

    document = json.loads(out.read_text())
    assert {"platform", "cpu_count", "torch_version", "device", "device_name"} <= set(document["machine"])
    assert document["machine"]["torch_version"] == torch.__version__ and document["machine"]["torch_threads"] == 1
    assert document["settings"]["image_size"] == 8 and document["settings"]["models"] == ["resnet18", "gradattn-rope"]
    assert set(document["models"]) == {"resnet18", "gradattn-rope"}
    for figures in document["models"].values():
        assert MODEL_FIGURES <= set(figures)
        assert figures["hooks_removed"] is True
        assert figures["peak_memory_kind"] == "process_max_rss"
        assert figures["sync_check"].startswith("skipped")  # CUDA's sync debug mode: no CUDA here
        assert len(figures["repeats"]["training"]["harness"]) == 1
    assert set(document["ratios"]) >= {"harness_overhead", "gradflow_overhead", "data_pipeline"}
    assert {"ours_images_per_s", "baseline_images_per_s", "ratio"} <= set(document["data_pipeline"])
    assert document["data_pipeline"]["settings"]["workers"] == 0
    assert_all_positive({k: v for k, v in document.items() if k != "machine"})

    # The timed harness really logged: one epoch per warm-up and repeat, in the run the JSON names.
    for name, figures in document["models"].items():
        run_id = figures["harness_run_id"]
        assert tracking.run_status(perf_store, run_id) == tracking.FINISHED
        assert tracking.get_run(perf_store, run_id).name == f"perf/{name}"
        assert [step for step, _ in tracking.metric_history(perf_store, run_id, "train/loss")] == [1, 2]


def test_leftover_hooks_sees_hooks_and_analysis_leaves_none():
    workload = Workload(image_size=8, batch_size=2)
    model = build_model("gradattn-rope", workload)
    batch = synthetic_batches(workload, 1)[0]
    assert leftover_hooks(model) == 0
    handles = [model.classifier.register_forward_hook(lambda *args: None), next(model.parameters()).register_hook(lambda g: g)]
    assert leftover_hooks(model) == 2
    for handle in handles:
        handle.remove()
    report = gradflow.analyze(model, [batch])
    assert report.hooks_registered > 0
    assert leftover_hooks(model) == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_bare_loop_trains_like_the_harness_even_after_an_evaluation():
    from bench.train.engine import make_optimizer

    workload = Workload(image_size=8, batch_size=2)
    model = build_model("gradattn-rope", workload).eval()  # as Trainer.evaluate leaves it
    before = [p.detach().clone() for p in model.parameters()]
    seconds = bare_epoch(model, make_optimizer(model, workload.train_config(), torch.device("cpu")), synthetic_batches(workload, 1), workload)
    assert seconds > 0 and model.training  # dropout and batch statistics on, as in the harness's step
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_perf_options_runs_on_cpu_with_tiny_sizes(tmp_path, capsys, perf_store):
    out = tmp_path / "gpu.json"
    code, stdout, err = cli(
        capsys, "perf", "options", "--device", "cpu", "--models", "resnet18", "--sizes", "8", "--batch-size", "2",
        "--steps", "1", "--warmup", "1", "--repeats", "1", "--tracking-uri", perf_store, "--json", str(out),
    )
    assert code == 0, err
    document = json.loads(out.read_text())
    rows = document["results"]
    assert [(r["model"], r["image_size"], r["config"]) for r in rows] == [("resnet18", 8, "fp32"), ("resnet18", 8, "bf16+cl")]
    assert all("speedup_vs_bare_fp32" in r for r in rows)
    assert document["machine"]["device"] == "cpu"
    assert_all_positive(rows)
    assert "bf16+cl" in stdout


def test_grid_benchmark_default_grid_is_four_distinct_digits_runs():
    specs = grid_specs("digits", ["resnet18"], [42, 43, 44, 45], max_epochs=2, gradflow_batches=2)
    assert len({spec.config_hash() for spec in specs}) == 4
    assert {(s.dataset, s.train.max_epochs, s.gradflow.num_batches) for s in specs} == {("digits", 2, 2)}
    timing = GridScaling("digits", 4, 2, (1, 2), {1: [100.0, 120.0], 2: [55.0]})
    assert timing.ratio(2) == pytest.approx(0.5)


def test_grid_benchmark_slots_share_the_cores_on_the_cpu():
    import os

    from bench.perf.grid import slots_for

    two = slots_for("cpu", 2)
    assert [slot.device for slot in two] == ["cpu", "cpu"] and len({slot.name for slot in two}) == 2
    assert all(slot.threads == max(1, (os.cpu_count() or 1) // 2) for slot in two)
    assert slots_for("cpu", 1)[0].threads == (os.cpu_count() or 1)


def test_grid_benchmark_refuses_an_unknown_dataset_before_running_anything():
    with pytest.raises(BenchError, match="nope"):
        run_grid_benchmark(dataset="nope")


@pytest.mark.parametrize("changes, option", [({"image_size": 0}, "--image-size"), ({"precision": "fp64"}, "--precision"), ({"device": "tpu"}, "--device")])
def test_workload_rejects_bad_settings_with_the_option_to_fix(changes, option):
    with pytest.raises(BenchError, match=option):
        Workload(**changes).validate()


@pytest.mark.parametrize("args, message", [
    (["perf", "grid", "--slots", "0"], "--slots must be positive integers"),
    (["perf", "grid", "--seeds", "4x"], "seeds (command line: --seeds) must be a list of integers"),
    (["perf", "grid", "--devices", "0"], "CUDA device [0] does not exist"),
    (["perf", "grid", "--devices", "gpu"], "--devices must be auto, cpu or CUDA indices"),
    (["perf", "options", "--device", "cpu", "--configs", "fp64"], "Unknown --configs fp64"),
    pytest.param(["perf", "options", "--device", "cuda", "--sizes", "8", "--steps", "1"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_perf_user_errors_exit_2_with_one_line(tmp_path, args, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the entry point in this process: these stop before measuring anything
    code, _, err = cli(capsys, *args)
    assert code == 2, err[-2000:]
    assert message in err and "Traceback" not in err


def test_speed_options_are_run_parameters_and_deterministic_mode_turns_cudnn_benchmark_off():
    from bench.config.spec import RunSpec, TrainConfig
    from bench.train.reproducibility import configure_determinism

    fast = TrainConfig(precision="bf16", channels_last=True, compile=True, deterministic=False)
    params = RunSpec("digits", "resnet18", train=fast).flat_params()
    assert {k: params[f"train.{k}"] for k in ("precision", "channels_last", "compile", "deterministic")} == {
        "precision": "bf16", "channels_last": True, "compile": True, "deterministic": False,
    }
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        configure_determinism(False)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        configure_determinism(True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


@pytest.mark.slow
def test_perf_data_sets_a_datasets_reads_against_a_training_step_and_pcams_against_h5py(tmp_path, capsys):
    from data_fixtures import write_pcam
    from support import TINY_MODEL, isolated_catalogue

    from bench.core import plugins
    from bench.perf.data_reads import run_benchmark

    write_pcam(tmp_path, sizes=(300, 8, 8))
    with isolated_catalogue():
        plugins.use([TINY_MODEL[1]])
        result = run_benchmark("pcam", tmp_path, model="tiny", batches=2, repeats=2)
        assert (result.batches, result.batch_size, result.train_images) == (2, 128, 300)
        for rates in (result.loader, result.h5py, result.step):
            assert len(rates) == 2 and all(rate > 0 for rate in rates)
        assert result.headroom > 0 and result.over_h5py > 0
        code, out, err = cli(capsys, "perf", "data", "--dataset", "pcam", "--data-dir", str(tmp_path), "--model", "tiny",
                             "--batches", "1", "--repeats", "1")
    assert code == 0, err[-2000:]
    assert "h5py" in out and "tiny training step" in out and "reads / training step:" in out
    assert "loader / h5py reads:" in out
