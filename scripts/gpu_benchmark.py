"""Training throughput on a CUDA device, beside the bare PyTorch loop.

ResNet-18 and GradAttn-RoPE at 32 px (CIFAR-10) and 64 px (MedMNIST, Tiny ImageNet), batch 128,
in fp32 (the original's setting) and with bf16 autocast + channels-last. For each, our harness
(`bench perf`'s training step: Trainer, MLflow logging to a temporary store, progress events) and
the bare loop `zero_grad; cross_entropy(model(x), y).backward(); step` with the same options, on the
same pre-built batches; the speed-up column compares with the bare fp32 loop, the notebooks' setting.

    python scripts/gpu_benchmark.py --device cuda:0 --json gpu.json

It runs on any device: the tests run it with `--device cpu` and tiny sizes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The options of each configuration: the original's fp32, and the CUDA speed options of TrainConfig.
CONFIGS = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda[:N] (or cpu, for a quick check)")
    parser.add_argument("--models", default="resnet18,gradattn-rope", help="comma list, wildcards or 'all'")
    parser.add_argument("--sizes", type=_ints, default=[32, 64], help="image sizes in pixels, comma list")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat (one harness epoch)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="cudnn.benchmark on (bench run --fast)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store the harness logs to (default: a temporary sqlite one)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure, with the machine, here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    from bench import models
    from bench.errors import BenchError
    from bench.perf.train import Workload, median, tracking_store, training_only

    configs = [c for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise BenchError(f"Unknown --configs {', '.join(unknown) or '(none)'}; choose from {', '.join(CONFIGS)}.")
    names = models.expand(args.models)
    planned = [
        (name, config, Workload(
            image_size=size, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
            device=args.device, deterministic=not args.fast, **CONFIGS[config],
        ).validate())
        for name in names
        for size in args.sizes
        for config in configs
    ]  # every setting checked before the store is created and anything is measured
    rows = []
    with tracking_store(args.tracking_uri) as store:
        for name, config, workload in planned:
            result = training_only(name, workload, store)
            rows.append({
                "model": name, "image_size": workload.image_size, "batch_size": workload.batch_size, "config": config,
                "train_images_per_s": median(result.harness), "bare_train_images_per_s": median(result.bare),
                "eval_images_per_s": median(result.evaluation), "harness_overhead": result.harness_overhead,
                "epoch_end_s": median(result.epoch_end_s), "peak_memory_bytes": result.peak_memory_bytes,
                "peak_memory_kind": result.peak_memory_kind,
                "repeats": {"harness": result.harness, "bare": result.bare, "evaluation": result.evaluation, "epoch_end_s": result.epoch_end_s},
            })
            print(f"{name} {workload.image_size} px {config}: {rows[-1]['train_images_per_s']:,.1f} img/s", flush=True)
    for row in rows:  # speed-up over the bare fp32 loop of the same model and size
        reference = next((r for r in rows if (r["model"], r["image_size"], r["config"]) == (row["model"], row["image_size"], "fp32")), None)
        if reference is not None:
            row["speedup_vs_bare_fp32"] = row["train_images_per_s"] / reference["bare_train_images_per_s"]
    return rows


def print_table(rows: list[dict], device: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Training images/s on {device}, batch {rows[0]['batch_size']}" if rows else "no results")
    for column in ("model", "px", "options", "bench", "bare PyTorch", "bench overhead", "vs bare fp32"):
        table.add_column(column, justify="left" if column in ("model", "options") else "right")
    for row in rows:
        speedup = row.get("speedup_vs_bare_fp32")
        table.add_row(
            row["model"], str(row["image_size"]), row["config"], f"{row['train_images_per_s']:,.0f}",
            f"{row['bare_train_images_per_s']:,.0f}", f"{row['harness_overhead']:.3f}x",
            f"{speedup:.2f}x" if speedup is not None else "",
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    from bench.errors import BenchError
    from bench.perf import report

    args = parse_args(argv)
    try:
        rows = run(args)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return BenchError.exit_code
    print_table(rows, args.device)
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        report.write_json(report.payload("gpu", args.device, settings, results=rows), args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
