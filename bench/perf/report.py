"""Benchmark results as JSON, with the machine they were measured on, so machines can be compared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.core.environment import machine_info
from bench.core.files import atomic_write_bytes


def write_json(payload: dict[str, Any], path: Path) -> Path:
    """Write `payload` to `path` through a temporary file, so a crash never leaves half a report."""
    text = json.dumps(payload, indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(Path(path), lambda handle: handle.write(text.encode()))
    return Path(path)


SCHEMA = "gradattn-bench/perf/1"


def payload(benchmark: str, device: str, settings: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """One benchmark's JSON document: what was measured, where, with which settings, and the figures."""
    from datetime import datetime, timezone

    return {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "settings": settings,
        **sections,
    }


def data_pipeline_summary(result) -> dict[str, Any]:
    """The figures of a `bench.perf.data_pipeline.DataPipelineResult`, its settings apart."""
    return {
        "settings": {key: getattr(result, key) for key in ("source", "images", "batch_size", "batches", "warmup", "workers", "device")},
        "ours_images_per_s": result.ours_median,
        "baseline_images_per_s": result.baseline_median,
        "ratio": result.ratio,
        "repeats": {"ours": list(result.ours), "baseline": list(result.baseline)},
    }
