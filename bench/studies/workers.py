"""Several processes pulling trials from one study: one per device slot (bench.scheduler.resolve_slots).

Each worker opens the shared storage itself and runs ``target(job, device, index, stop)``; the
storage hands out the trials, so workers need no queue between them. One slot runs in this
process (no spawn cost); more slots run as spawned processes pinned to their device, as the grid
scheduler does. Ctrl-C once sets ``stop`` (running trials end after their epoch); twice stops at once.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable

from bench.errors import BenchError
from bench.scheduler import Slot, watch_parent

Target = Callable[[Any, str, int, Any], None]


@dataclass
class WorkerEnd:
    slot: str
    worker: str  # "host:pid", as the worker tags the trials it runs
    exitcode: int | None
    error: str | None = None  # a BenchError message: the study cannot go on as configured


@dataclass
class WorkersResult:
    ends: list[WorkerEnd]
    interrupted: bool

    @property
    def dead(self) -> list[WorkerEnd]:
        """Workers that died without finishing their trials (killed, out of memory, a crash)."""
        return [e for e in self.ends if e.exitcode not in (0, 2) and e.error is None]

    def raise_user_error(self) -> None:
        for end in self.ends:
            if end.error:
                raise BenchError(end.error)


def worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


@contextlib.contextmanager
def _on_sigint(handler):
    """Install a Ctrl-C handler for the block (signals can only be handled on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _pin(slot: Slot) -> None:
    if slot.cuda_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot.cuda_index)
    if slot.threads:
        os.environ["OMP_NUM_THREADS"] = str(slot.threads)


def _process_main(target: Target, job: Any, slot: Slot, index: int, stop, errors, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    _pin(slot)  # before torch is first imported
    threading.Thread(target=watch_parent, args=(parent_pid,), daemon=True).start()
    import torch

    if slot.threads:
        torch.set_num_threads(slot.threads)
    try:
        target(job, slot.device, index, stop)
    except BenchError as error:
        errors.put(str(error))
        raise SystemExit(BenchError.exit_code) from None


def run_workers(target: Target, job: Any, slots: list[Slot]) -> WorkersResult:
    """Run `target` once per slot until each returns; returns how every worker ended."""
    if len(slots) == 1:
        return _run_here(target, job, slots[0])
    ctx = mp.get_context("spawn")
    stop, errors = ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=_process_main, args=(target, job, slot, index, stop, errors, os.getpid()), daemon=True)
        for index, slot in enumerate(slots)
    ]
    interrupts = {"count": 0}

    def on_sigint(signum, frame):
        interrupts["count"] += 1
        stop.set()
        if interrupts["count"] >= 2:
            for process in processes:
                if process.is_alive():
                    process.kill()

    with _on_sigint(on_sigint):
        for process in processes:
            process.start()
        for process in processes:
            while process.is_alive():
                process.join(timeout=0.5)
    messages = []
    while True:
        try:
            messages.append(errors.get(timeout=0.1))
        except queue.Empty:
            break
    ends = [
        WorkerEnd(slot.name, worker_id(process.pid), process.exitcode, messages[0] if process.exitcode == 2 and messages else None)
        for slot, process in zip(slots, processes)
    ]
    return WorkersResult(ends, interrupted=stop.is_set())


def _run_here(target: Target, job: Any, slot: Slot) -> WorkersResult:
    stop = threading.Event()
    interrupts = {"count": 0}

    def on_sigint(signum, frame):
        interrupts["count"] += 1
        stop.set()
        if interrupts["count"] >= 2:
            raise KeyboardInterrupt

    # Pinning by environment is for fresh processes; here the device is named outright.
    device = f"cuda:{slot.cuda_index}" if slot.cuda_index is not None else "cpu"
    exitcode = 0
    with _on_sigint(on_sigint):
        try:
            target(job, device, 0, stop)
        except KeyboardInterrupt:
            exitcode = 130
    return WorkersResult([WorkerEnd(slot.name, worker_id(), exitcode)], interrupted=stop.is_set())
