"""Crash-safe, verified, weights-only checkpoints and the random-number state a resumed run needs.

A checkpoint is a `torch.save` file holding only tensors, numbers, strings and containers of them
(RNG states included, stored as tensors), so it loads with `weights_only=True`: a file crafted to
run code on load is refused before anything in it runs. It carries a SHA-256 of its payload, so
bytes damaged on disk are found on load instead of training on garbage.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.core.files import atomic_write_bytes
from bench.core.locks import file_lock, holder

LAST = "last.pt"  # everything a resumed run needs, written at the end of every epoch
BEST = "best.pt"  # the weights of the best validation epoch so far
FORMAT = "gradattn-bench-checkpoint/1"


def payload_digest(obj: Any) -> str:
    """SHA-256 over a nested payload: every tensor's dtype, shape and bytes, every other leaf's repr."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key, item in value.items():
                feed(key)
                feed(item)
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    feed(obj)
    return digest.hexdigest()


def save(obj: Any, path: Path) -> None:
    """Write a checkpoint whole or not at all; a full disk is a DiskFull naming the folder."""
    wrapped = {"format": FORMAT, "sha256": payload_digest(obj), "payload": obj}
    # Serialized in memory first: torch's zip writer reports a failed file write without its errno
    # ("unexpected pos ..."), a plain write says ENOSPC.
    buffer = io.BytesIO()
    torch.save(wrapped, buffer)
    atomic_write_bytes(Path(path), lambda handle: handle.write(buffer.getbuffer()))


def load(path: Path) -> Any:
    """The payload of a checkpoint, verified; a BenchError naming the file when it cannot be trusted."""
    path = Path(path)
    advice = "delete it (or its run's checkpoint folder) to start that run afresh"
    try:
        wrapped = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # a global outside the weights-only allowlist: nothing ran
        reason = str(error).strip().splitlines()
        detail = next((line for line in reason if "GLOBAL" in line or "global" in line), reason[0] if reason else "")
        raise BenchError(
            f"Checkpoint {path} holds more than tensors and numbers ({detail.strip()[:160]}); it was not loaded "
            f"and nothing in it ran: {advice}."
        ) from None
    except Exception as error:  # a torn or foreign file: say which one and what to do
        raise BenchError(f"Checkpoint {path} cannot be read ({error.__class__.__name__}); {advice}.") from None
    if not isinstance(wrapped, dict) or wrapped.get("format") != FORMAT or "payload" not in wrapped:
        raise BenchError(f"Checkpoint {path} is not a gradattn-bench checkpoint with a checksum; {advice}.")
    if payload_digest(wrapped["payload"]) != wrapped.get("sha256"):
        raise BenchError(f"Checkpoint {path} is damaged (its checksum does not match its contents); {advice}.")
    return wrapped["payload"]


def load_resume(folder: Path) -> tuple[dict | None, dict | None]:
    """(last, best) checkpoints of a run folder, verified together; (None, None) when it starts afresh.

    The best weights must be those of the epoch `last` names as best, whenever `last` records a best
    epoch: a run never silently ends on other weights than its best ones. The trainer writes `last`
    before `best`, so a process killed between the two leaves `last` naming its own epoch as best:
    then `last` holds the best weights itself: the best file is written from it, not refused.
    """
    folder = Path(folder)
    if not (folder / LAST).exists():
        return None, None
    last = load(folder / LAST)
    best_epoch = int(last.get("early_stopping", {}).get("best_epoch") or 0)
    if not best_epoch:
        return last, None
    best = load(folder / BEST) if (folder / BEST).exists() else None
    if best is not None and int(best.get("epoch", -1)) == best_epoch:
        return last, best
    if best_epoch == int(last.get("epoch", -1)) and "model" in last:
        best = {"epoch": best_epoch, "model": last["model"]}
        save(best, folder / BEST)  # written now, as the killed process would have
        return last, best
    if best is None:
        raise BenchError(
            f"The best-weights checkpoint {folder / BEST} of epoch {best_epoch} is missing while {folder / LAST} "
            f"is there; restore it, or delete {folder} to train that run afresh."
        )
    raise BenchError(
        f"The best-weights checkpoint {folder / BEST} is of epoch {best.get('epoch')}, but {folder / LAST} "
        f"names epoch {best_epoch} as best; delete {folder} to train that run afresh."
    )


class FolderInUse(BenchError):
    """Another process holds the checkpoint folder of a run."""


@contextlib.contextmanager
def exclusive(folder: Path):
    """Hold a run's checkpoint folder for the block; a folder another process writes is a BenchError."""
    lock = Path(folder) / ".lock"
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(file_lock(lock, blocking=False))
    except BlockingIOError:
        raise FolderInUse(
            f"The checkpoint folder {folder} is being written by another process (pid {holder(lock)}); "
            "that run is left to it."
        ) from None
    with stack:
        yield


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and numbers (weights-only loadable)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    # random.setstate wants tuples all the way down; a round trip may give lists.
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device); protocol 3.4 plus Python's random."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
