"""A worker's life, whichever backend started it (local process, Ray task, Slurm job).

`start` comes first, before torch is imported: the worker leaves Ctrl-C to its parent, is pinned to
its slot (CUDA_VISIBLE_DEVICES, its share of the CPU threads), and, where its parent is the bench
process, ends when that parent ends, so a killed `bench run` leaves no orphan training (the run
resumes on the next invocation). `run_task` then trains one task through `runner.execute` and
tells the parent, through the mailbox, how it goes.

The parent's side of Ctrl-C is here too, so every backend follows one policy (`ctrl_c`): the first
Ctrl-C asks every run to stop at the end of its epoch (runs end KILLED, keep their checkpoint and
resume on the next invocation; runs not started yet do not start); the second stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench.core import plugins
from bench.execution.context import Context
from bench.execution.mailbox import Mailbox, Send
from bench.train.callbacks import Callback

if TYPE_CHECKING:
    from bench.execution.tasks import Task


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# -- the worker's side -----------------------------------------------------------------------------


def start(cuda_index: int | None = None, threads: int | None = None, parent_pid: int | None = None, env: dict | None = None) -> None:
    """Prepare this process to train: call before torch is first imported (pinning is by environment)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C (see ctrl_c)
    for key, value in (env or {}).items():
        os.environ.setdefault(key, value)
    if cuda_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(cuda_index)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    import torch

    if threads:
        torch.set_num_threads(threads)


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent dies (e.g. SIGKILL): its runs stay resumable, none trains on unseen."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(1.0)


class Progress(Callback):
    """Engine callback: the start of fitting and each epoch's figures, to the parent's live table."""

    def __init__(self, send: Send) -> None:
        self.send = send

    def on_fit_start(self, start_epoch: int, history) -> None:
        self.send("fit_start", {"start_epoch": start_epoch})

    def on_epoch_end(self, record) -> None:
        self.send("epoch", asdict(record))


def run_task(task: "Task", context: Context, device: str, slot: str | None = None) -> None:
    """Train one task; whatever happens, its end reaches the parent as an event (`done`, `failed`,
    or `not_started` when a stop was requested before it began)."""
    from bench.execution.runner import RunContext, execute

    mailbox = Mailbox(context.mailbox)
    send = mailbox.sender(task.run_id)
    if mailbox.stop_requested():
        send("not_started")
        return
    send("start", {"slot": slot, "worker": worker_id()})
    where = context.destination
    plugins.use_set(where.plugins)  # the command's plugins, before the spec's names are looked up
    run_context = RunContext(
        tracking_uri=where.tracking_uri,
        data_dir=Path(where.data_dir),
        checkpoint_root=Path(where.checkpoint_root),
        device=device,
        owner=context.owner,
        log_model=where.log_model,
        system_metrics=where.system_metrics,
    )
    try:
        outcome = execute(
            task.spec, run_context, task.run_id, callbacks=[Progress(send), *task.callbacks], should_stop=mailbox.stop_requested,
            on_run=lambda run_id: send("run", {"run_id": run_id}),
        )
    except BaseException as error:  # execute logged it (FAILED, or KILLED for an interrupt)
        # A failure every run would meet (a full disk) stops the grid, with its sentence as the command's.
        stops_grid = str(error) if getattr(error, "stops_grid", False) else None
        send("failed", {"error": f"{error.__class__.__name__}: {error}", "traceback": traceback.format_exc(), "stops_grid": stops_grid})
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        return
    send("done", asdict(outcome))


def run_allocated_task(task: "Task", context: Context, gpus: float, threads: int, env: dict | None = None) -> None:
    """A task in a process a cluster scheduler (Ray, Slurm) started and pinned to its GPUs through
    CUDA_VISIBLE_DEVICES: the first visible GPU when it was given any, else the CPU."""
    start(threads=threads, env=env)
    run_task(task, context, "cuda:0" if gpus > 0 else "cpu")


# -- the parent's side -----------------------------------------------------------------------------


@contextlib.contextmanager
def ctrl_c(stop_gracefully: Callable[[], None]):
    """The one Ctrl-C policy for the block: the first Ctrl-C calls `stop_gracefully`, the second
    raises KeyboardInterrupt (stop now). Signals reach the main thread only: elsewhere, no handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    presses = 0

    def on_sigint(signum, frame) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        stop_gracefully()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
