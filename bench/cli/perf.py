"""``bench perf``: throughput benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

import typer

from bench.cli._app import app, with_options
from bench.cli._app import console as make_console
from bench.config.options import Places
from bench.config.spec import seeds_schema
from bench.core.errors import BenchError
from bench.core.numbers import parse_numbers

perf_app = typer.Typer(
    help="Throughput benchmarks against baselines measured in the same run. Without a command: training and "
    "evaluation throughput, peak memory, and the harness, data-pipeline and gradient-flow ratios."
)
app.add_typer(perf_app, name="perf")


# Where the harness logs while it is measured: a temporary store unless --tracking-uri names one.
WITH_SCRATCH_STORE = with_options(only=("tracking_uri",), unset={"tracking_uri": "a temporary sqlite store"}, places=Places)


def _positive_ints(text: str, option: str) -> list[int]:
    return parse_numbers(text, option, int, valid=lambda value: value >= 1, what="positive integers")


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def _by_model(results, figure) -> str:
    return ", ".join(f"{r.model} {figure(r):.2f}x" for r in results)


@perf_app.callback(invoke_without_command=True)
@WITH_SCRATCH_STORE
def perf(
    ctx: typer.Context,
    models: str = typer.Option("resnet18,gradattn-rope", "--models", "-m", help="Comma list, wildcards or 'all'."),
    image_size: int = typer.Option(32, "--image-size", help="Square input size in pixels."),
    batch_size: int = typer.Option(128, "--batch-size"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    steps: int = typer.Option(20, "--steps", help="Timed steps per repeat: one harness epoch, whose epoch-end logging they share."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed steps before the first repeat."),
    repeats: int = typer.Option(3, "--repeats", help="Alternating repeats; medians are compared."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 autocast."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="NHWC activations, as `bench run` by default."),
    compile_model: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile both loops."),
    deterministic: bool = typer.Option(True, "--deterministic/--fast", help="As `bench run` (train.deterministic); --fast turns cudnn.benchmark on."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice); 1 gives steadier ratios on a busy machine."),
    data_benchmark: bool = typer.Option(True, "--data/--no-data", help="Also measure the data pipeline (as `bench perf data`)."),
    data_images: int = typer.Option(10_000, "--data-images", help="Images of the data-pipeline benchmark."),
    data_batches: int = typer.Option(50, "--data-batches", help="Timed batches per repeat of the data-pipeline benchmark."),
    data_workers: int = typer.Option(2, "--data-workers", help="Workers of the notebook-style DataLoader."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure, with the machine, to this JSON file."),
    *,
    places: Places,
) -> None:
    """Training and evaluation throughput and peak memory per model, and three ratios measured in the
    same run: harness overhead (vs a bare PyTorch loop), data pipeline (vs a notebook-style DataLoader)
    and gradient-flow analysis (vs a plain step). Subcommands run single benchmarks."""
    if ctx.invoked_subcommand is not None:
        return
    if threads is not None and threads < 1:
        raise BenchError(f"--threads must be at least 1, got {threads}.")
    from dataclasses import asdict

    from rich.table import Table

    from bench import models as registry
    from bench.perf import report
    from bench.perf.train import Workload, run_benchmark

    names = registry.expand(models)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    workload = Workload(
        image_size=image_size, batch_size=batch_size, steps=steps, warmup=warmup, repeats=repeats, device=device,
        precision=precision, channels_last=channels_last, deterministic=deterministic, compile=compile_model,
    ).validate()
    console = make_console()
    console.print(f"Measuring {', '.join(names)} on {device}: {image_size} px, batch {batch_size}, {steps} steps x {repeats} repeats", highlight=False)
    results = run_benchmark(names, workload, on_model=lambda r: console.print(f"  {r.model} done", highlight=False), tracking_uri=places.tracking_uri)
    pipeline = None
    if data_benchmark:
        from bench.perf.data_pipeline import run_benchmark as run_data_benchmark

        pipeline = run_data_benchmark(
            images=data_images, batches=data_batches, repeats=repeats, warmup=warmup, batch_size=batch_size,
            workers=data_workers, device=device, source="auto",
        )

    table = Table(title=f"Throughput on {device}: {image_size} px, batch {batch_size}, {precision}{', channels-last' if channels_last else ''}")
    for column in ("model", "train img/s", "bare img/s", "eval img/s", "peak memory"):
        table.add_column(column, justify="left" if column == "model" else "right")
    summaries = [r.summary() for r in results]
    for r, s in zip(results, summaries):
        memory = f"{_gib(s['peak_memory_bytes'])} {'CUDA' if s['peak_memory_kind'].startswith('cuda') else 'RSS'}"
        table.add_row(r.model, f"{s['train_images_per_s']:,.1f}", f"{s['bare_train_images_per_s']:,.1f}", f"{s['eval_images_per_s']:,.1f}", memory)
    console.print(table)
    epoch_end_ms = max(1000 * s["epoch_end_s"] for s in summaries)
    console.print(
        f"harness overhead (our step / bare loop): {_by_model(results, lambda r: r.training.harness_overhead)} (target <= 1.05); "
        f"its MLflow logging and progress take {epoch_end_ms:.0f} ms per epoch",
        highlight=False,
    )
    if pipeline is not None:
        console.print(f"data pipeline (ours / notebook-style DataLoader, images/s): {pipeline.ratio:.2f}x (target >= 5x)", highlight=False)
    else:
        console.print("data pipeline: not measured (--no-data)", highlight=False)
    console.print(
        f"gradient-flow analysis (analysed / plain step): {_by_model(results, lambda r: r.gradflow.overhead)} (target <= 1.1); "
        f"plain step after analysis / before: {_by_model(results, lambda r: r.gradflow.after_analysis)}; "
        f"hooks removed: {'yes' if all(r.hooks_removed for r in results) else 'NO'}",
        highlight=False,
    )
    console.print(f"no host sync inside the step: {'; '.join(f'{r.model} {r.sync_check}' for r in results)}", highlight=False)
    if json_path is not None:
        ratios = {
            "harness_overhead": {r.model: r.training.harness_overhead for r in results},
            "gradflow_overhead": {r.model: r.gradflow.overhead for r in results},
            "plain_step_after_analysis": {r.model: r.gradflow.after_analysis for r in results},
        }
        sections = {"models": {r.model: s for r, s in zip(results, summaries)}, "ratios": ratios}
        if pipeline is not None:
            ratios["data_pipeline"] = pipeline.ratio
            sections["data_pipeline"] = report.data_pipeline_summary(pipeline)
        settings = asdict(workload) | {"models": names, "tracking_uri": places.tracking_uri or "a temporary sqlite store"}
        path = report.write_json(report.payload("train", device, settings, **sections), json_path)
        console.print(f"wrote {path}", highlight=False)


@perf_app.command("options")
@WITH_SCRATCH_STORE
def options_command(
    device: str = typer.Option("cuda", "--device", help="cuda[:N] (or cpu, for a quick check)."),
    models: str = typer.Option("resnet18,gradattn-rope", "--models", "-m", help="Comma list, wildcards or 'all'."),
    sizes: str = typer.Option("32,64", "--sizes", help="Image sizes in pixels: 32 as CIFAR-10, 64 as MedMNIST and Tiny ImageNet."),
    configs: str = typer.Option("fp32,bf16+cl", "--configs", help="Speed options: fp32 (the original's) and bf16+cl (bf16 autocast + channels-last)."),
    batch_size: int = typer.Option(128, "--batch-size"),
    steps: int = typer.Option(100, "--steps", help="Timed steps per repeat (one harness epoch)."),
    warmup: int = typer.Option(10, "--warmup"),
    repeats: int = typer.Option(3, "--repeats"),
    deterministic: bool = typer.Option(True, "--deterministic/--fast", help="As `bench run`; --fast turns cudnn.benchmark on."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure, with the machine, to this JSON file."),
    *,
    places: Places,
) -> None:
    """Training images/s per image size and speed option (fp32, bf16 + channels-last), beside the bare PyTorch loop."""
    from bench import models as registry
    from bench.perf import options, report

    console = make_console()
    names = registry.expand(models)
    rows = options.run(
        names, _positive_ints(sizes, "--sizes"), [c.strip() for c in configs.split(",") if c.strip()],
        batch_size=batch_size, steps=steps, warmup=warmup, repeats=repeats, device=device, deterministic=deterministic,
        tracking_uri=places.tracking_uri,
        on_row=lambda r: console.print(f"  {r['model']} {r['image_size']} px {r['config']}: {r['train_images_per_s']:,.1f} img/s", highlight=False),
    )
    console.print(options.table(rows, device))
    if json_path is not None:
        settings = {"models": names, "sizes": sizes, "configs": configs, "batch_size": batch_size, "steps": steps,
                    "warmup": warmup, "repeats": repeats, "deterministic": deterministic}
        path = report.write_json(report.payload("options", device, settings, results=rows), json_path)
        console.print(f"wrote {path}", highlight=False)


@perf_app.command("grid")
@with_options(only=("data_dir",), places=Places)
def grid_command(
    dataset: str = typer.Option("digits", "--dataset", "-d"),
    models: str = typer.Option("resnet18", "--models", "-m", help="Comma list, wildcards or 'all'."),
    seeds: str = typer.Option("42,43,44,45", "--seeds", help="With the models, the runs of the grid."),
    max_epochs: int = typer.Option(2, "--max-epochs"),
    gradflow_batches: int = typer.Option(2, "--gradflow-batches", help="Batches of each run's final gradient-flow analysis."),
    slots: str = typer.Option("1,2", "--slots", help="Slot counts to compare: CPU slots (each gets the cores / slots threads) or the first k CUDA devices."),
    repeats: int = typer.Option(1, "--repeats", help="Alternating repeats per slot count; medians are compared."),
    devices: str = typer.Option("cpu", "--devices", help="cpu, or CUDA devices (auto or indices like 0,1,3): one run per device."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the timings, with the machine, to this JSON file."),
    *,
    places: Places,
) -> None:
    """Wall time of the same small grid through the real scheduler with 1 and with 2 CPU slots (or 1 and N GPUs)."""
    counts = _positive_ints(slots, "--slots")
    seed_list = list(seeds_schema().keys["seeds"].coerce(seeds, "command line: --seeds", from_text=True))

    from dataclasses import asdict

    from rich.table import Table

    from bench import data
    from bench import models as registry
    from bench.perf import report
    from bench.perf.grid import TARGET_RATIO, on_cpu, run_benchmark

    names = registry.expand(models)
    data.get(dataset)
    console = make_console()
    runs = len(names) * len(seed_list)
    cpu = on_cpu(devices)
    kind = "CPU slot(s)" if cpu else f"CUDA device(s) of {devices}"
    console.print(f"{dataset}: {runs} run(s) of {max_epochs} epoch(s), on {', '.join(map(str, sorted(set(counts))))} {kind}", highlight=False)
    result = run_benchmark(
        dataset=dataset, model_names=names, seeds=seed_list, max_epochs=max_epochs, gradflow_batches=gradflow_batches,
        slot_counts=counts, repeats=repeats, devices=devices, data_dir=places.data_dir,
        on_timing=lambda k, s: console.print(f"  {k} slot(s): {s:.1f} s", highlight=False),
    )
    table = Table(title=f"Grid wall time: {result.runs} {dataset} runs")
    for column in ("slots", "wall s (median)", "repeats", f"ratio to {result.slot_counts[0]} slot(s)"):
        table.add_column(column, justify="right")
    for k in result.slot_counts:
        table.add_row(str(k), f"{result.median(k):.1f}", ", ".join(f"{v:.1f}" for v in result.wall_s[k]), f"{result.ratio(k):.2f}")
    console.print(table)
    for k in result.slot_counts[1:]:
        target = f" (target <= {TARGET_RATIO})" if (k, result.slot_counts[0]) == (2, 1) and cpu else ""
        console.print(f"slot scaling: {k} slots / {result.slot_counts[0]} slot(s) = {result.ratio(k):.2f}{target}", highlight=False)
    if json_path is not None:
        ratios = {f"{k}/{result.slot_counts[0]}": result.ratio(k) for k in result.slot_counts[1:]}
        settings = {"dataset": dataset, "models": names, "seeds": seed_list, "max_epochs": max_epochs, "gradflow_batches": gradflow_batches, "repeats": repeats, "devices": devices}
        figures = asdict(result) | {"ratios": ratios}
        path = report.write_json(report.payload("grid", "cpu" if cpu else "cuda", settings, grid=figures), json_path)
        console.print(f"wrote {path}", highlight=False)


@perf_app.command("data")
@with_options(only=("data_dir",), places=Places)
def data_command(
    images: int = typer.Option(50_000, "--images", help="CIFAR-10-format images to draw batches from."),
    batches: int = typer.Option(100, "--batches", help="Timed batches per repeat and pipeline."),
    repeats: int = typer.Option(3, "--repeats", help="Alternating repeats; medians are compared."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed batches before each timing."),
    batch_size: int = typer.Option(128, "--batch-size"),
    workers: int = typer.Option(
        2, "--workers", help="DataLoader workers of the torchvision baseline (the notebooks used 2)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    threads: int = typer.Option(1, "--threads", help="torch threads of our pipeline (the baseline has its workers)."),
    source: str = typer.Option("auto", "--source", help="auto (real CIFAR-10 when present), synthetic or cifar10."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Instead: this dataset's training batches from its files (in --data-dir) against "
        "--model's training step, and for PCam against h5py reads.",
    ),
    model: str = typer.Option("resnet18", "--model", help="The model whose training step --dataset's reads are set against."),
    *,
    places: Places,
) -> None:
    """Training-batch throughput with the CIFAR-10 protocol augmentation: ours vs a notebook-style DataLoader.
    With --dataset: a dataset's reads against what a training step consumes."""
    from rich.table import Table

    from bench.perf.data_pipeline import run_benchmark

    if dataset is not None:
        _dataset_reads(dataset, model, batches, repeats, device, places)
        return

    result = run_benchmark(
        images=images,
        batches=batches,
        repeats=repeats,
        warmup=warmup,
        batch_size=batch_size,
        workers=workers,
        device=device,
        source=source,
        data_dir=places.data_dir,
        threads=threads,
    )
    table = Table(
        title=f"Training batches/s on {result.device}: {result.images:,} {result.source}, batch {result.batch_size}"
    )
    table.add_column("pipeline")
    table.add_column("images/s (median)", justify="right")
    table.add_column("repeats", justify="right")
    table.add_row(
        f"bench BatchLoader (device-side, batched, {result.threads} thread{'s' if result.threads > 1 else ''})",
        f"{result.ours_median:,.0f}",
        ", ".join(f"{v:,.0f}" for v in result.ours),
    )
    table.add_row(
        f"torchvision PIL DataLoader ({result.workers} workers)",
        f"{result.baseline_median:,.0f}",
        ", ".join(f"{v:,.0f}" for v in result.baseline),
    )
    console = make_console()
    console.print(table)
    console.print(f"ratio: {result.ratio:.1f}x (target >= 5x)", highlight=False)


def _dataset_reads(dataset: str, model: str, batches: int, repeats: int, device: str, places: Places) -> None:
    from rich.table import Table

    from bench.data.base import default_data_dir
    from bench.perf.data_reads import run_benchmark

    result = run_benchmark(
        dataset, places.data_dir or default_data_dir(), model=model, batches=batches, repeats=repeats, device=device
    )
    table = Table(
        title=f"{result.dataset} training batches on {result.device}: {result.batches} shuffled batches of "
        f"{result.batch_size} from {result.train_images:,} images"
    )
    table.add_column("")
    table.add_column("images/s (median)", justify="right")
    table.add_column("repeats", justify="right")
    rows = [("bench loader (rows gathered ahead by a thread, train transform)", result.loader)]
    if result.h5py:
        rows.append(("h5py: each batch's rows read from the file at its step", result.h5py))
    rows.append((f"{result.model} training step (what training consumes)", result.step))
    for label, values in rows:
        table.add_row(label, f"{statistics.median(values):,.0f}", ", ".join(f"{v:,.0f}" for v in values))
    console = make_console()
    console.print(table)
    console.print(f"reads / training step: {result.headroom:.1f}x (above 1: reading keeps up)", highlight=False)
    if result.over_h5py is not None:
        console.print(f"loader / h5py reads: {result.over_h5py:.1f}x", highlight=False)
