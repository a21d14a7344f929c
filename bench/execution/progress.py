"""What the parent shows while the grid runs: a live rich table, or plain lines when not a terminal."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from bench.execution.tasks import ALREADY_FINISHED, HELD_STATE, TaskState, outcome

STATE_STYLE = {"finished": "green", "failed": "red", "killed": "yellow", "running": "cyan"}


def _pct(value: float | None) -> str:
    return "" if _missing(value) else f"{100 * value:.2f}%"


def _missing(value) -> bool:
    """None, or NaN: a table's empty cell (a DataFrame holds a missing number as NaN)."""
    return value is None or value != value


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def eta_seconds(state: TaskState, max_epochs: int, patience: int) -> float | None:
    """Time left if validation accuracy stops improving now: early stopping fires at best + patience."""
    if not state.epoch_times or state.status != "running":
        return None
    last = min(max_epochs, max(state.best_epoch, 1) + patience)
    remaining = max(last - state.epoch, 0)
    return remaining * (sum(state.epoch_times) / len(state.epoch_times))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def grid_table(states: list[TaskState]) -> Table:
    table = Table(title="bench run", expand=False)
    numeric = ("seed", "epoch", "train loss", "val loss", "val acc", "best", "lr")
    for column in ("dataset", "model", "seed", "device", "epoch", "train loss", "val loss", "val acc", "best", "lr", "ETA", "state"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for state in states:
        spec = state.task.spec
        eta = eta_seconds(state, spec.train.max_epochs, spec.train.early_stopping_patience)
        status = state.status + (" (resumed)" if state.task.resumed and state.status == "running" else "")
        table.add_row(
            spec.dataset,
            spec.model,
            str(spec.seed),
            state.slot,
            f"{state.epoch}/{spec.train.max_epochs}" if state.epoch else "",
            _num(state.train_loss),
            _num(state.val_loss),
            _pct(state.val_acc),
            _pct(state.best_val_acc),
            "" if state.lr is None else f"{state.lr:.1e}",
            _duration(eta),
            f"[{STATE_STYLE.get(state.status, 'white')}]{status}[/]",
        )
    return table


def make_console() -> Console:
    """A rich Console; printed to a file or a pipe, its tables are never wrapped or cut (logs keep every name)."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=LOG_WIDTH)


LOG_WIDTH = 1_000  # wider than any table here, so rich never shrinks a column

class GridDisplay:
    """`update(states)` is called often; redraws at most a few times a second."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self._last_lines: dict[int, tuple] = {}
        self._last_draw = 0.0

    def __enter__(self) -> "GridDisplay":
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, states: list[TaskState]) -> None:
        if self.live is not None:
            if time.monotonic() - self._last_draw > 0.25:
                self.live.update(grid_table(states))
                self._last_draw = time.monotonic()
            return
        for index, state in enumerate(states):  # plain log lines: one per epoch and state change
            key = (state.status, state.epoch)
            if self._last_lines.get(index) == key:
                continue
            self._last_lines[index] = key
            self.console.print(plain_line(state), highlight=False, markup=False)


def plain_line(state: TaskState) -> str:
    """One run's progress as a log line: its name, slot, state and the epoch's numbers, each field
    only where it has a value (a queued run has no slot yet, a starting one no epoch)."""
    spec = state.task.spec
    head = [state.task.run_name, f"[{state.slot}]" if state.slot else "", state.status]
    if state.status == "failed":
        return _joined(head) + (f": {state.error}" if state.error else "")
    if not state.epoch:
        return _joined(head)
    eta = eta_seconds(state, spec.train.max_epochs, spec.train.early_stopping_patience)
    fields = {
        "epoch": f"{state.epoch}/{spec.train.max_epochs}", "train loss": _num(state.train_loss),
        "val loss": _num(state.val_loss), "val acc": _pct(state.val_acc), "best": _pct(state.best_val_acc),
        "lr": "" if state.lr is None else f"{state.lr:.1e}", "ETA": _duration(eta),
    }
    return _joined(head) + ": " + _joined(f"{name} {value}" for name, value in fields.items() if value)


def _joined(parts) -> str:
    return " ".join(part for part in parts if part)

def print_problems(console: Console, rows: list[dict]) -> None:
    """One line per failed or unsynced run of a grid's rows (bench.execution.grid.GridResult.rows);
    the error text printed literally (it may hold brackets)."""
    for row in rows:
        kind = outcome(row["state"], row["error"])
        if kind == "failed":
            console.print(f"[red]FAILED[/] {escape(row['run_name'])}: {escape(row['error'] or '')}", highlight=False)
        elif kind == "unsynced":  # trained and checkpointed; only the tracking server was missing
            message = (row["error"] or "").split(": ", 1)[-1]
            console.print(f"[yellow]NOT SYNCED[/] {escape(row['run_name'])}: {escape(message)}", highlight=False)


def interrupted(rows: list[dict]) -> int:
    return sum(outcome(row["state"], row["error"]) == "interrupted" for row in rows)


SHOWN_STATE = {  # how the table names the states of configurations this call did not train
    ALREADY_FINISHED: lambda row: f"skipped (finished: {row['run_id'][:8]})",
    HELD_STATE: lambda row: f"another process (run {row['run_id'][:8]})",
}


def summary_table(rows: list[dict]) -> Table:
    """The grid's verdict, a row per configuration (bench.execution.grid.GridResult.rows)."""
    table = Table(title="Results (test split)")
    for column in ("dataset", "model", "seed", "state", "test top-1", "epochs", "wall time", "grad health", "health (notebook)"):
        table.add_column(column)
    for row in rows:
        state = SHOWN_STATE.get(row["state"], lambda row: row["state"])(row)
        table.add_row(
            row["dataset"], row["model"], str(row["seed"]), state, _pct(row["test_top1"]),
            "" if _missing(row["epochs"]) else str(int(row["epochs"])), "" if _missing(row["wall_s"]) else _duration(row["wall_s"]),
            _pct(row["health"]), _pct(row["health_notebook"]),
        )
    return table
