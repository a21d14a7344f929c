"""Benchmark results as JSON, with the machine they were measured on, so machines can be compared."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Platform, CPU, torch and the device the figures were measured on."""
    import torch

    target = torch.device(device)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count() or 1,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "device": str(target),
    }
    if target.type == "cuda":
        index = target.index if target.index is not None else torch.cuda.current_device()
        info["device_name"] = torch.cuda.get_device_name(index)
        info["cuda_version"] = torch.version.cuda
        info["cudnn_version"] = torch.backends.cudnn.version()
    else:
        info["device_name"] = info["cpu"]
    return info


def write_json(payload: dict[str, Any], path: Path) -> Path:
    """Write `payload` to `path` through a temporary file, so a crash never leaves half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(payload, tmp, indent=2, sort_keys=False)
        tmp.write("\n")
    os.replace(tmp.name, path)
    return path


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
