"""A seeded fault soak of `bench run`: a small grid against a real `mlflow server` on loopback, over and
over, with faults at random moments (kills, Ctrl-C, the server or its database going away), each
grid rerun until it is done and then checked (scripts/soak_checks.py).

    python scripts/soak.py --rounds 30 --seed 1 [--store postgres] [--keep]

Each round is a fresh experiment: the grid's command runs in a process group of its own, a fault
drawn by the seed lands at a random moment of it (scripts/soak_faults.py), the command is run again
until it exits 0, a second fault drawn for the round may land on the rerun. The first grid runs without a fault:
its final metrics are what every round must end with. Prints the faults injected by kind and every
violation; exits 0 when there is none, 1 otherwise, 2 when the soak cannot start.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the checks load every logged model
sys.path.insert(0, str(REPO / "tests"))  # the tests' loopback servers and small model

import soak_checks  # noqa: E402
import soak_faults  # noqa: E402
from loopback import MlflowServer, PostgresCluster, postgres_skip_reason  # noqa: E402
from soak_faults import Command, Fault  # noqa: E402
from support import TINY_MODEL  # noqa: E402

EPOCHS = 4
SEEDS = (1, 2)
DATASETS = ("synthetic", "digits")
NAMES = [f"{dataset}/tiny/{seed}" for dataset in DATASETS for seed in SEEDS]
GRID = (
    "--datasets", ",".join(DATASETS), "--models", "tiny", "--seeds", ",".join(map(str, SEEDS)), "--max-epochs", str(EPOCHS),
    "--set", "gradflow.num_batches=1", "--devices", "cpu", "--jobs-per-device", "2", *TINY_MODEL,
)
COMMAND_TIMEOUT_S = 600.0  # a command still there after this is hung: a violation
MAX_COMMANDS = 8  # commands per round before the grid counts as never finishing
SECOND_FAULT = 0.5  # the chance that a round draws a second fault, for its rerun
GROUP_GRACE_S = 5.0  # workers notice a killed parent within a second or two (bench.execution.worker)


@dataclass
class Tally:
    injected: Counter = field(default_factory=Counter)
    missed: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    rounds: int = 0


class World:
    """The servers, the folders, and how a command of the grid is started."""

    def __init__(self, root: Path, store: str) -> None:
        self.root = root
        os.environ["BENCH_DATA_DIR"] = str(root / "data")  # the grid's data folder, where the checks read the test splits
        self.database = PostgresCluster().start() if store == "postgres" else None
        backend = self.database.createdb("mlflow") if self.database else f"sqlite:///{root / 'mlflow.db'}"
        self.server = MlflowServer(backend, root / "server").start()
        self.kinds = soak_faults.KINDS + (soak_faults.POSTGRES_KINDS if self.database else ())
        self.current: Command | None = None

    # -- what the faults act on (soak_faults.Servers)
    def kill_server(self) -> None:
        self.server.stop(kill=True)

    def start_server(self) -> None:
        self.server.start()

    def halt_database(self) -> None:
        self.database.halt()

    def resume_database(self) -> None:
        self.database.resume()

    def close(self) -> None:
        if self.current is not None:  # a soak stopped halfway leaves no command behind
            self.current.signal_group(signal.SIGKILL)
        self.server.stop()
        if self.database:
            self.database.stop()

    # -- the grid
    def place(self, experiment: str) -> Path:
        place = self.root / experiment
        place.mkdir(parents=True, exist_ok=True)
        return place

    def command(self, experiment: str, attempt: int) -> Command:
        self.current = self._command(experiment, attempt)
        return self.current

    def _command(self, experiment: str, attempt: int) -> Command:
        place = self.place(experiment)
        args = [
            sys.executable, "-m", "bench", "run", *GRID, "--tracking-uri", self.server.url, "--experiment", experiment,
            "--checkpoint-dir", str(place / "checkpoints"),
        ]
        env = os.environ | {"PYTHONUNBUFFERED": "1", "BENCH_OUTBOX_DIR": str(place / "outbox")}
        return Command(args, place, env, place / f"command-{attempt}.log")


def run_grid(world: World, experiment: str, pending: list[Fault], tally: Tally) -> tuple[list[str], list[Fault]]:
    """Run the grid's command until it exits 0, the next pending fault on each command; the violations
    seen and the faults injected. A fault that finds its command ended goes back to the front of
    `pending`, earlier in the next command's life."""
    found, injected = [], []
    for attempt in range(1, MAX_COMMANDS + 1):
        command = world.command(experiment, attempt)
        fault = pending.pop(0) if pending else None
        if fault:
            soak_faults.inject(fault, command, world)
            if fault.injected:
                tally.injected[fault.kind] += 1
                injected.append(fault)
            else:
                tally.missed[fault.kind] += 1
                pending.insert(0, Fault(fault.kind, fault.at_s / 2, fault.pauses_s))
        code = _wait(command)
        tally.exits[code] += 1
        found += _command_violations(command, code, fault if fault and fault.injected else None, attempt)
        if code == 0:
            if not soak_checks.grid_done(world.server.url, experiment, NAMES):
                found.append(f"command {attempt} exited 0 with the grid unfinished")
                continue
            return found, injected
    return found + [f"the grid is not done after {MAX_COMMANDS} commands"], injected


def _wait(command: Command) -> int | None:
    remaining = COMMAND_TIMEOUT_S - (time.monotonic() - command.started)
    try:
        return command.process.wait(timeout=max(1.0, remaining))
    except Exception:
        command.signal_group(signal.SIGKILL)
        command.process.wait()
        return None


def _command_violations(command: Command, code: int | None, fault: Fault | None, attempt: int) -> list[str]:
    where = f"command {attempt} ({fault.describe() if fault else 'no fault'}; log {command.log})"
    found = []
    if code is None:
        found.append(f"{where}: still running after {COMMAND_TIMEOUT_S:.0f} s, killed")
    elif code not in (soak_faults.EXIT_CODES[fault.kind] if fault else {0}):
        found.append(f"{where}: exit code {code}")
    if fault is None or fault.kind != soak_faults.KILL_COMMAND:
        output = command.output()
        if "Traceback (most recent call last)" in output:
            found.append(f"{where}: printed a traceback")
    deadline = time.monotonic() + GROUP_GRACE_S
    while command.group_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if command.group_alive():
        found.append(f"{where}: processes of the command outlived it")
        command.signal_group(signal.SIGKILL)
    return found


def soak(rounds: int, seed: int, store: str, root: Path) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    world = World(root, store)
    try:
        started = time.monotonic()
        found, _ = run_grid(world, "reference", [], tally)
        window_s = time.monotonic() - started  # a fault lands somewhere in a command's life
        reference_runs = soak_checks.grid_runs(world.server.url, "reference")
        reference = {run.name: soak_checks.final_metrics(world.server.url, run) for run in reference_runs}
        found += soak_checks.check_grid(world.server.url, "reference", NAMES, {}, world.place("reference"))
        _report("reference", found, tally)
        experiments, pending = [], []
        for number in range(1, rounds + 1):
            experiment = f"round-{number:03d}"
            experiments.append(experiment)
            pending.append(soak_faults.draw(rng, world.kinds, window_s))
            if rng.random() < SECOND_FAULT:
                pending.append(soak_faults.draw(rng, world.kinds, window_s / 2))
            round_started = time.monotonic()
            found, injected = run_grid(world, experiment, pending, tally)
            found += soak_checks.check_grid(world.server.url, experiment, NAMES, reference, world.place(experiment))
            tally.rounds += 1
            shown = "; ".join(f.describe() for f in injected) or "no fault landed"
            _report(f"{experiment} ({time.monotonic() - round_started:.0f} s): {shown}", found, tally)
        final = []  # nothing a later round did may have changed an earlier one
        for experiment in ["reference", *experiments]:
            final += [f"at the end, {experiment}: {v}" for v in
                      soak_checks.check_grid(world.server.url, experiment, NAMES, reference, world.place(experiment))]
        _report("final check of every round", final, tally)
    finally:
        world.close()
    return tally


def _report(what: str, found: list[str], tally: Tally) -> None:
    tally.violations += found
    print(f"{what}: {'ok' if not found else f'{len(found)} violation(s)'}", flush=True)
    for violation in found:
        print(f"  VIOLATION {violation}", flush=True)


def _summary(tally: Tally, seed: int, store: str, wall_s: float) -> str:
    injected = sum(tally.injected.values())
    lines = [
        f"soak: seed {seed}, store {store}, {tally.rounds} round(s), {wall_s / 60:.1f} min",
        f"faults injected: {injected}",
        *(f"  {n:3d}  {kind}" for kind, n in sorted(tally.injected.items())),
        f"faults that found their command ended (tried again earlier in the next): {sum(tally.missed.values())}",
        "commands' exit codes: " + ", ".join(f"{code}: {n}" for code, n in sorted(tally.exits.items(), key=str)),
        f"violations: {len(tally.violations)}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="grids to run, each with one or two faults")
    parser.add_argument("--seed", type=int, default=1, help="draws the faults, their moments and pauses")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite", help="the MLflow server's backend store")
    parser.add_argument("--keep", action="store_true", help="keep the soak's folder (logs, stores) and print where it is")
    options = parser.parse_args()
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    if options.store == "postgres" and postgres_skip_reason():
        print(f"error: --store postgres needs a local PostgreSQL: {postgres_skip_reason()}.", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped from outside: the servers go too
    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    started = time.monotonic()
    try:
        tally = soak(options.rounds, options.seed, options.store, root)
    finally:
        if options.keep:
            print(f"soak folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(_summary(tally, options.seed, options.store, time.monotonic() - started))
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
