"""Training throughput per image size and speed option, beside the bare PyTorch loop (`bench perf options`).

For each model, size and option (the original's fp32; bf16 autocast + channels-last, the CUDA speed
options of TrainConfig): our harness (`bench perf`'s training step: Trainer, MLflow logging to a
temporary store, progress events) and the bare loop `zero_grad; cross_entropy(model(x), y).backward();
step` with the same options on the same pre-built batches; the speed-up compares with the bare fp32
loop, the notebooks' setting. Meant for a CUDA device; it runs anywhere (the tests use the CPU).
"""

from __future__ import annotations

from bench.core.errors import BenchError

# The options of each configuration: the original's fp32, and the CUDA speed options of TrainConfig.
CONFIGS = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
}


def run(
    names: list[str], sizes: list[int], configs: list[str], *, batch_size: int, steps: int, warmup: int, repeats: int,
    device: str, deterministic: bool = True, tracking_uri: str | None = None, on_row=lambda row: None,
) -> list[dict]:
    """One row per (model, image size, speed option): harness and bare-loop training images/s,
    evaluation images/s, peak memory, and the speed-up over the bare fp32 loop of the same model and size."""
    from bench.perf.train import Workload, median, tracking_store, training_only

    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise BenchError(f"Unknown --configs {', '.join(unknown) or '(none)'}; choose from {', '.join(CONFIGS)}.")
    planned = [
        (name, config, Workload(
            image_size=size, batch_size=batch_size, steps=steps, warmup=warmup, repeats=repeats,
            device=device, deterministic=deterministic, **CONFIGS[config],
        ).validate())
        for name in names
        for size in sizes
        for config in configs
    ]  # every setting checked before the store is created and anything is measured
    rows = []
    with tracking_store(tracking_uri) as store:
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
            on_row(rows[-1])
    for row in rows:  # speed-up over the bare fp32 loop of the same model and size
        reference = next((r for r in rows if (r["model"], r["image_size"], r["config"]) == (row["model"], row["image_size"], "fp32")), None)
        if reference is not None:
            row["speedup_vs_bare_fp32"] = row["train_images_per_s"] / reference["bare_train_images_per_s"]
    return rows


def table(rows: list[dict], device: str):
    from rich.table import Table

    shown = Table(title=f"Training images/s on {device}, batch {rows[0]['batch_size']}" if rows else "no results")
    for column in ("model", "px", "options", "bench", "bare PyTorch", "bench overhead", "vs bare fp32"):
        shown.add_column(column, justify="left" if column in ("model", "options") else "right")
    for row in rows:
        speedup = row.get("speedup_vs_bare_fp32")
        shown.add_row(
            row["model"], str(row["image_size"]), row["config"], f"{row['train_images_per_s']:,.0f}",
            f"{row['bare_train_images_per_s']:,.0f}", f"{row['harness_overhead']:.3f}x",
            f"{speedup:.2f}x" if speedup is not None else "",
        )
    return shown
