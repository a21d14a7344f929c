"""The tags that identify a run in MLflow: its configuration, the versions and commit of the code,
and the machine it trained on (protocol 7.14)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from bench.config.spec import RunSpec
from bench.core import published
from bench.core.version import __version__
from bench.tracking import CONFIGURATION_TAG


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_tags(spec: RunSpec, device: str, parameters: int | None = None) -> dict[str, str]:
    tags = {
        "config_hash": spec.config_hash(),
        CONFIGURATION_TAG: spec.configuration(),  # what the UI's runs table groups seeds by
        "dataset": spec.dataset,
        "model": spec.model,
        "seed": str(spec.seed),
        "split_seed": str(spec.split_seed),
        "preprocessing": spec.preprocessing,
        "splits": spec.splits,
        "bench_version": __version__,
        "torch_version": torch.__version__,
        "device": device,
    }
    cell = published.cell(spec.dataset, spec.model) if spec.preprocessing == "notebook" else None
    if cell is not None:  # the published figure this run sets out to reproduce, and how it differs
        tags["published_cell"] = str(cell.row)
        tags["published_deviations"] = ", ".join(spec.notebook_deviations())[:4000] or "none"
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    if parameters is not None:
        tags["parameters"] = str(parameters)
    return tags


def environment_tags(device: torch.device) -> dict[str, str]:
    """Python, torch, CUDA/cuDNN where used, the GPU or CPU model and the thread count, as `env.*` tags."""
    from bench.core.environment import machine_info

    return {f"env.{key}": str(value) for key, value in machine_info(str(device)).items()}
