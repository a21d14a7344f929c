"""Learning-rate plateau and early stopping, with the original's exact semantics (protocol 3.3).

Both watch validation accuracy and count an epoch as an improvement only when it is strictly greater
than the best so far (no threshold, no min_delta). torch's own ReduceLROnPlateau differs (relative
threshold 1e-4, an eps rule at the floor), so it is deliberately not used (protocol 7.13).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class PlateauScheduler:
    """Multiply the LR by `factor` after `patience` epochs without a strict improvement."""

    factor: float = 0.2
    patience: int = 3
    min_lr: float = 1e-7
    best: float | None = None
    wait: int = 0

    def step(self, value: float, optimizer) -> bool:
        """Record one epoch's monitored value; returns True when the LR was cut."""
        if self.best is None or value > self.best:  # the first epoch only initialises
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        group = optimizer.param_groups[0]
        new_lr = max(group["lr"] * self.factor, self.min_lr)
        if new_lr == group["lr"]:  # at the floor: nothing changes and the wait keeps growing
            return False
        for group in optimizer.param_groups:
            group["lr"] = new_lr
        self.wait = 0  # the best value is deliberately not reset after a cut
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class EarlyStopping:
    """Stop `patience` epochs after the last strict improvement; remembers the best epoch."""

    patience: int = 7
    best: float | None = None
    best_epoch: int = 0
    wait: int = 0

    def step(self, value: float, epoch: int) -> tuple[bool, bool]:
        """Record one epoch; returns (improved, stop)."""
        if self.best is None or value > self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True, False
        self.wait += 1
        return False, self.wait >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
