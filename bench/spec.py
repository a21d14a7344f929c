"""What one run is: dataset, model, seeds and every setting that changes its result.

The protocol defaults live here and nowhere else, each with the section of the reference protocol
(`protocol.md`) it comes from. The CLI and study files override them. Settings left unset take their
mode's default (``MODE_DEFAULTS``): protocol mode fixes the original's defects, notebook mode keeps
them to reproduce the published cells. ``resolved()`` fills every default in, so a run's recorded
settings are the ones it used, and ``config_hash`` (of the resolved settings that change training)
identifies a run across processes and machines: a finished configuration is never trained twice.
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
PROTOCOL_SPLIT_SEED = 42  # protocol 2.2: random_split's generator, the only split the notebooks made


@dataclass(frozen=True)
class ModeDefaults:
    """The defaults that depend on the mode (each overridable by its own option)."""

    init: str  # "uniform": one policy for every model; "per-model": each model's own (protocol 1.9)
    encoder: str  # "shared": only the position scheme differs; "published": protocol 1.6-1.8
    restore_best: bool  # evaluate the best-validation weights as the headline (else the last epoch's)
    gradflow_split: str  # the split whose batches the gradient-flow analysis reads
    notebook_presets: bool  # GradAttn No PE in the size each notebook used (NOTEBOOK_PRESETS)


MODE_DEFAULTS = {
    # protocol 7.12, 7.4, 7.2 and 7.7: the recommended fixes.
    "protocol": ModeDefaults("uniform", "shared", restore_best=True, gradflow_split="train", notebook_presets=False),
    # protocol 1.9, 1.6-1.8, 3.3 (the restore was a no-op) and 5.1: what the notebooks did.
    "notebook": ModeDefaults("per-model", "published", restore_best=False, gradflow_split="test", notebook_presets=True),
}
# protocol 1.5 / 7.3 and section 6: the No-PE configuration of each published cell. 32/16/2 on these
# datasets; the current BloodMNIST, FashionMNIST and SVHN notebooks re-ran No PE at 256/8/512.
NOTEBOOK_PRESETS = {
    "cifar10": "nope-small", "tissuemnist": "nope-small", "pcam": "nope-small",
    "pad-ufes-20": "nope-small", "tiny-imagenet": "nope-small",
}
# Settings that change no trained weight: the thresholds only score the stored gradient norms
# (`bench sensitivity` rescores them), and a preset is the sizes it resolves to.
NOT_IN_IDENTITY = (("gradflow", "vanishing"), ("gradflow", "exploding"), ("model_config", "preset"))


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
    # protocol 7.2: the original's restore was a no-op, so its test metrics are last-epoch ones. Both
    # weight sets are evaluated on test; this picks the headline (and the weights analysed after
    # training). None: the mode's (best in protocol mode, last epoch in notebook mode).
    restore_best: bool | None = None
    deterministic: bool = True  # protocol 3.4 (cudnn.deterministic); also turns cudnn.benchmark off
    # Also CUBLAS_WORKSPACE_CONFIG and torch.use_deterministic_algorithms without fallback: an op with
    # no deterministic kernel then fails instead of warning (protocol 7.14).
    strict_determinism: bool = False
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
    init: str | None = None  # "uniform" (7.12) or "per-model" (1.9); None: the mode's
    encoder: str | None = None  # "shared" (only the PE differs, 7.4) or "published" (1.6-1.8); None: the mode's
    # "nope-small" = 32/16/2 (7.3), for the models it names only; "none" = published sizes.
    # None: the mode's (notebook mode: NOTEBOOK_PRESETS per dataset).
    preset: str | None = None

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
    # a fixed, seeded set of training batches (protocol mode), read with the eval transform, state
    # saved and restored. None: the mode's.
    split: str | None = None
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
    seed: int = 42  # protocol 3.4: the only seed the original ran; initialisation and batch order
    preprocessing: str = "protocol"
    splits: str = "protocol"
    train: TrainConfig = field(default_factory=TrainConfig)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    gradflow: GradFlowConfig = field(default_factory=GradFlowConfig)
    # Which train/val/test split: fixed while training seeds vary, so their spread is initialisation
    # variance on one test set; vary it for a study of split variance.
    split_seed: int = PROTOCOL_SPLIT_SEED

    @property
    def run_name(self) -> str:
        name = f"{self.dataset}/{self.model}/{self.seed}"
        return name if self.split_seed == PROTOCOL_SPLIT_SEED else f"{name}/split{self.split_seed}"

    @property
    def mode_defaults(self) -> ModeDefaults:
        return MODE_DEFAULTS[self.preprocessing]

    @property
    def restore_best(self) -> bool:
        if self.train.restore_best is not None:
            return self.train.restore_best
        return self.mode_defaults.restore_best

    @property
    def gradflow_split(self) -> str:
        return self.gradflow.split or self.mode_defaults.gradflow_split

    def validate(self) -> "RunSpec":
        """Check everything that can be checked before any data is read; returns self for chaining."""
        from bench import data, models

        data.get(self.dataset)
        models.info(self.model)
        if self.preprocessing not in PREPROCESSING_MODES:
            raise BenchError(
                f"Unknown --preprocessing {self.preprocessing!r}; choose protocol or notebook."
            )
        if self.splits not in SPLIT_MODES:
            raise BenchError(f"Unknown --splits {self.splits!r}; choose one of {', '.join(SPLIT_MODES)}.")
        if self.seed < 0 or self.split_seed < 0:
            raise BenchError(f"Seeds must be non-negative integers, got seed {self.seed}, split seed {self.split_seed}.")
        self.train.validate()
        self.gradflow.validate()
        self.resolved()  # an unknown init, encoder or preset, or impossible sizes, fail here
        return self

    def resolved(self) -> "RunSpec":
        """This spec with every default filled in: the mode's choices, the dataset's batch size, the
        model's sizes after its preset. Options a model does not take are None (a ResNet has no
        d_model); resolving twice changes nothing."""
        from bench import data, models

        mode = self.mode_defaults
        train = replace(
            self.train,
            restore_best=self.restore_best,
            batch_size=self.train.batch_size or data.get(self.dataset).batch_size,
        )
        accepted = models.info(self.model).options
        given = self.model_config.for_model(accepted)
        defaults = {
            "init": mode.init,
            "encoder": mode.encoder,
            "preset": NOTEBOOK_PRESETS.get(self.dataset) if mode.notebook_presets else None,
        }
        given |= {k: v for k, v in defaults.items() if k in accepted and k not in given and v is not None}
        options = models.resolve_options(self.model, **given)
        model_config = ModelConfig(**{f.name: options.get(f.name) for f in fields(ModelConfig)})
        gradflow = replace(self.gradflow, split=self.gradflow_split)
        return replace(self, train=train, model_config=model_config, gradflow=gradflow)

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
        """A stable 16-hex-digit identity of everything that changes the trained weights and the
        recorded results, after every default is resolved: spelling a default out (``--d-model
        256``, ``--batch-size 128``) and leaving it implicit give the same hash. Analysis-only
        settings (``NOT_IN_IDENTITY``) are recorded but leave it alone, so changing a gradient
        threshold never retrains a finished configuration."""
        resolved = self.resolved().to_dict()
        for section, key in NOT_IN_IDENTITY:
            resolved[section].pop(key)
        canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, Any]:
        """Every resolved setting as a flat `section.key -> value` mapping (the MLflow parameters);
        options the model does not take are left out."""
        flat: dict[str, Any] = {}
        for key, value in self.resolved().to_dict().items():
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items() if v is not None})
            else:
                flat[key] = value
        return flat

    def with_seed(self, seed: int) -> "RunSpec":
        return replace(self, seed=seed)

    def notebook_deviations(self) -> list[str]:
        """The resolved settings in which this run differs from its dataset's notebook cell for the
        model (seed aside): empty for a faithful reproduction."""
        ours = self.flat_params()
        cell = RunSpec(self.dataset, self.model, seed=self.seed, preprocessing="notebook").flat_params()
        return [f"{key}={ours.get(key)}" for key in sorted(set(ours) | set(cell)) if ours.get(key) != cell.get(key)]
