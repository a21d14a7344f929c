"""What one run is: dataset, model, seed and every setting that changes its result.

The protocol defaults live here and nowhere else, each with the section of the reference protocol
(`protocol.md`) it comes from. The CLI and study files override them; `config_hash` identifies a run
across processes and machines, so a finished configuration is never trained twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from bench.errors import BenchError

Preprocessing = Literal["protocol", "notebook"]
PREPROCESSING_MODES = ("protocol", "notebook")
SPLIT_MODES = ("protocol", "official", "grouped")
PRECISIONS = ("fp32", "bf16", "fp16")


def check_finite(config) -> None:
    """Every number of a settings dataclass is finite: NaN passes every range check unnoticed."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}.")


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 100  # protocol 3.1 (no run reached it)
    lr: float = 1e-3  # protocol 3.1: Adam lr
    weight_decay: float = 1e-4  # protocol 3.1: coupled L2 (Adam, not AdamW), on all parameters
    beta1: float = 0.9  # protocol 3.1
    beta2: float = 0.999  # protocol 3.1
    eps: float = 1e-8  # protocol 3.1
    batch_size: int | None = None  # None: the dataset's own (protocol 2.1: 64 for PAD-UFES-20, else 128)
    plateau_factor: float = 0.2  # protocol 3.3: ReduceLROnPlateau on val accuracy
    plateau_patience: int = 3  # protocol 3.3
    min_lr: float = 1e-7  # protocol 3.3
    early_stopping_patience: int = 7  # protocol 3.3: stops 7 epochs after the last strict improvement
    # protocol 7.2: the original's restore was a no-op, so its test metrics are last-epoch ones.
    # None: restore in protocol mode, last-epoch weights in notebook mode (to reproduce the numbers).
    restore_best: bool | None = None
    deterministic: bool = True  # protocol 3.4 (cudnn.deterministic); also turns cudnn.benchmark off
    precision: str = "fp32"  # protocol 3.1: no mixed precision
    # NHWC activations: faster on CUDA and on the CPU (oneDNN skips its layout reorders; 1.27x train
    # throughput for ResNet-18 at 16 px on a 2-core CPU, `bench perf`). Off: the original memory format.
    channels_last: bool = True
    compile: bool = False  # torch.compile, opt-in

    def validate(self) -> None:
        check_finite(self)
        if self.max_epochs < 1:
            raise BenchError(f"--max-epochs must be at least 1, got {self.max_epochs}.")
        if self.lr <= 0 or self.min_lr < 0:
            raise BenchError("The learning rate must be positive and --min-lr not negative.")
        if self.weight_decay < 0:
            raise BenchError(f"--weight-decay must not be negative, got {self.weight_decay}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise BenchError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if not 0 < self.plateau_factor < 1:
            raise BenchError(f"--plateau-factor must lie in (0, 1), got {self.plateau_factor}.")
        if self.plateau_patience < 1 or self.early_stopping_patience < 1:
            raise BenchError("Plateau and early-stopping patience must be at least 1 epoch.")
        if self.precision not in PRECISIONS:
            raise BenchError(f"Unknown --precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}.")


@dataclass(frozen=True)
class ModelConfig:
    """Transformer and initialisation options; None keeps the model's published default."""

    num_layers: int | None = None  # protocol 1.5: 3
    d_model: int | None = None  # protocol 1.5: 256 (No PE on some datasets: 32, see `preset`)
    nhead: int | None = None  # protocol 1.5: 8
    dim_feedforward: int | None = None  # protocol 1.5: 512
    dropout: float | None = None  # protocol 1.5: 0.1
    init: str | None = None  # protocol 1.9 per model ("protocol") or one policy for all ("uniform", 7.12)
    encoder: str | None = None  # "published" (protocol 1.6-1.8) or "shared" (only the PE differs, 7.4)
    preset: str | None = None  # "nope-small" = 32/16/2, the No PE runs the notebooks made (7.3)

    def for_model(self, accepted: tuple[str, ...]) -> dict[str, Any]:
        """The options set here that the model accepts (a ResNet takes `init` only)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name in accepted
        }


@dataclass(frozen=True)
class GradFlowConfig:
    vanishing: float = 1e-6  # protocol 5.3
    exploding: float = 10.0  # protocol 5.3
    num_batches: int = 20  # protocol 5.1 (PAD-UFES-20's test split had only 6)
    every: int = 0  # also analyse every N epochs during training; 0: only at the end
    # protocol 7.7: the original analysed the test split in train mode after training; we default to
    # a fixed set of validation batches, state saved and restored. Notebook mode uses the original's.
    split: str | None = None  # None: "val" (protocol mode) or "test" (notebook mode)
    mode: str = "train"  # forward in train mode (dropout, batch statistics) as training sees it

    def validate(self) -> None:
        check_finite(self)
        if not 0 < self.vanishing < self.exploding:
            raise BenchError("Gradient thresholds must satisfy 0 < vanishing < exploding.")
        if self.num_batches < 1 or self.every < 0:
            raise BenchError("--gradflow-batches must be >= 1 and --gradflow-every >= 0.")
        if self.split not in (None, "train", "val", "test"):
            raise BenchError(f"Unknown gradient-flow split {self.split!r}; use train, val or test.")
        if self.mode not in ("train", "eval"):
            raise BenchError(f"Unknown gradient-flow mode {self.mode!r}; use train or eval.")


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str
    seed: int = 42  # protocol 3.4: the only seed the original ran
    preprocessing: str = "protocol"
    splits: str = "protocol"
    train: TrainConfig = field(default_factory=TrainConfig)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    gradflow: GradFlowConfig = field(default_factory=GradFlowConfig)

    @property
    def run_name(self) -> str:
        return f"{self.dataset}/{self.model}/{self.seed}"

    @property
    def restore_best(self) -> bool:
        if self.train.restore_best is not None:
            return self.train.restore_best
        return self.preprocessing == "protocol"

    @property
    def gradflow_split(self) -> str:
        if self.gradflow.split is not None:
            return self.gradflow.split
        return "test" if self.preprocessing == "notebook" else "val"

    def validate(self) -> "RunSpec":
        """Check everything that can be checked without torch; returns self for chaining."""
        from bench import data, models

        data.get(self.dataset)
        models.info(self.model)
        if self.preprocessing not in PREPROCESSING_MODES:
            raise BenchError(
                f"Unknown --preprocessing {self.preprocessing!r}; choose protocol or notebook."
            )
        if self.splits not in SPLIT_MODES:
            raise BenchError(f"Unknown --splits {self.splits!r}; choose one of {', '.join(SPLIT_MODES)}.")
        self.train.validate()
        self.gradflow.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunSpec":
        raw = dict(raw)
        return cls(
            train=TrainConfig(**raw.pop("train", {})),
            model_config=ModelConfig(**raw.pop("model_config", {})),
            gradflow=GradFlowConfig(**raw.pop("gradflow", {})),
            **raw,
        )

    def config_hash(self) -> str:
        """A stable 16-hex-digit identity of everything that changes the result.

        Defaults are resolved first (restore_best, gradient-flow split), so spelling a default out
        and leaving it implicit give the same hash.
        """
        resolved = self.to_dict()
        resolved["train"]["restore_best"] = self.restore_best
        resolved["gradflow"]["split"] = self.gradflow_split
        canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, Any]:
        """Every setting as a flat `section.key -> value` mapping (the MLflow parameters)."""
        flat: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        flat["train.restore_best"] = self.restore_best
        flat["gradflow.split"] = self.gradflow_split
        return flat

    def with_seed(self, seed: int) -> "RunSpec":
        return replace(self, seed=seed)
