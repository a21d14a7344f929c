"""The soak's faults: what can happen to a `bench run` and its servers, drawn by a seeded random
generator, and how each is done to the real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from support import worker_pids

KILL_COMMAND = "kill the command (SIGKILL, whole process group)"
KILL_WORKER = "kill one worker (SIGKILL)"
CTRL_C = "Ctrl-C once"
CTRL_C_TWICE = "Ctrl-C twice"
SERVER_DOWN = "MLflow server killed, restarted after a pause"
SERVER_DOWN_TWICE = "MLflow server killed and restarted twice in a row"
DATABASE_RESTART = "PostgreSQL restarted (immediate stop, start after a pause)"

KINDS = (KILL_COMMAND, KILL_WORKER, CTRL_C, CTRL_C_TWICE, SERVER_DOWN, SERVER_DOWN_TWICE)
POSTGRES_KINDS = (DATABASE_RESTART,)
# What a command hit by each fault may exit with: SIGKILL (-9), a run that failed or could not be
# logged (1), a store gone before training began (2), an interrupted grid (130), or done (0: the
# fault landed after the last run).
EXIT_CODES = {
    KILL_COMMAND: {-9, 0}, KILL_WORKER: {1, 0}, CTRL_C: {130, 0}, CTRL_C_TWICE: {130, 0},
    SERVER_DOWN: {0, 1, 2}, SERVER_DOWN_TWICE: {0, 1, 2}, DATABASE_RESTART: {0, 1, 2},
}


class Servers(Protocol):
    """What the faults act on besides the command: the MLflow server and, with PostgreSQL, the database."""

    def kill_server(self) -> None: ...
    def start_server(self) -> None: ...
    def halt_database(self) -> None: ...
    def resume_database(self) -> None: ...


@dataclass
class Fault:
    kind: str
    at_s: float  # seconds after the command started
    pauses_s: tuple[float, ...] = ()  # how long a server stays down, the gap between two presses, ...
    injected: bool = False
    note: str = ""  # why it was not injected

    def describe(self) -> str:
        pauses = ", ".join(f"{p:.1f} s" for p in self.pauses_s)
        return f"{self.kind} at {self.at_s:.1f} s" + (f" (pauses {pauses})" if pauses else "")


def draw(rng: random.Random, kinds: tuple[str, ...], window_s: float) -> Fault:
    """A fault of a random kind at a random moment of a command that takes about `window_s` seconds."""
    kind = rng.choice(kinds)
    at_s = rng.uniform(0.5, window_s)
    if kind == CTRL_C_TWICE:
        pauses: tuple[float, ...] = (rng.uniform(0.05, 3.0),)
    elif kind == SERVER_DOWN:
        pauses = (rng.uniform(0.5, 20.0),)
    elif kind == SERVER_DOWN_TWICE:
        pauses = (rng.uniform(0.5, 10.0), rng.uniform(0.0, 5.0), rng.uniform(0.5, 10.0))
    elif kind == DATABASE_RESTART:
        pauses = (rng.uniform(0.5, 15.0),)
    else:
        pauses = ()
    return Fault(kind, at_s, pauses)


@dataclass
class Command:
    """One `bench run` in a process group of its own, as a terminal starts a foreground job."""

    args: list[str]
    cwd: Path
    env: dict
    log: Path
    process: subprocess.Popen = field(init=False)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, number: int) -> None:
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:
            pass

    def group_alive(self) -> bool:
        """Some process of the command's group is left (a worker that outlived its parent)."""
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def inject(fault: Fault, command: Command, servers: Servers) -> None:
    """Wait for the fault's moment and do it; `fault.injected` says whether the command was still there."""
    time.sleep(max(0.0, command.started + fault.at_s - time.monotonic()))
    if not command.alive():
        fault.note = "the command had ended"
        return
    fault.injected = True
    if fault.kind == KILL_COMMAND:
        command.signal_group(signal.SIGKILL)
    elif fault.kind == KILL_WORKER:
        _kill_a_worker(fault, command)
    elif fault.kind in (CTRL_C, CTRL_C_TWICE):
        command.signal_group(signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        if fault.kind == CTRL_C_TWICE:
            time.sleep(fault.pauses_s[0])
            command.signal_group(signal.SIGINT)
    elif fault.kind in (SERVER_DOWN, SERVER_DOWN_TWICE):
        for down_s, gap_s in zip(fault.pauses_s[::2], (*fault.pauses_s[1::2], 0.0)):
            servers.kill_server()
            time.sleep(down_s)
            servers.start_server()
            time.sleep(gap_s)
    elif fault.kind == DATABASE_RESTART:
        servers.halt_database()
        time.sleep(fault.pauses_s[0])
        servers.resume_database()
    else:
        raise ValueError(f"unknown fault {fault.kind!r}")


def _kill_a_worker(fault: Fault, command: Command, wait_s: float = 15.0) -> None:
    """SIGKILL one worker, waiting a little for one where the command has not started any yet."""
    deadline = time.monotonic() + wait_s
    while command.alive() and time.monotonic() < deadline:
        workers = worker_pids(command.process.pid)
        if workers:
            os.kill(workers[0], 9)
            return
        time.sleep(0.2)
    fault.injected = False
    fault.note = "no worker to kill before the command ended"
