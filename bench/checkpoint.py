"""Crash-safe checkpoints: atomic writes and the random-number state a resumed run needs."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError


def atomic_write_bytes(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it into place.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(obj: Any, path: Path) -> None:
    atomic_write_bytes(Path(path), lambda handle: torch.save(obj, handle))


def load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a torn or foreign file: say which one and what to do
        raise BenchError(
            f"Checkpoint {path} cannot be read ({error.__class__.__name__}); delete it to start that run afresh."
        ) from error


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device); protocol 3.4 plus Python's random."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
