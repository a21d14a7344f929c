"""What one run is: dataset, model, seeds and every setting that changes its result.

Every setting is declared here once, as a field of these dataclasses with its default, its help and
the section of the reference protocol (`protocol.md`) it comes from (``bench.config.schema``); the CLI
(``--set train.lr=3e-4``, ``bench run --help``), study files and studies all read that declaration. Settings left unset take their
mode's default (``MODE_DEFAULTS``): protocol mode fixes the original's defects, notebook mode keeps
them to reproduce the published cells. ``resolved()`` fills every default in, so a run's recorded
settings are the ones it used, and ``config_hash`` (of the resolved settings that change training)
identifies a run across processes and machines: a finished configuration is never trained twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, fields, replace
from typing import Any

from bench.config.schema import SECTION, Schema, section, setting, shown
from bench.config.thresholds import GradFlowThresholds
from bench.core.errors import BenchError
from bench.core.modes import PREPROCESSING_MODES

SPLIT_MODES = ("protocol", "official", "grouped")
PRECISIONS = ("fp32", "bf16", "fp16")
PROTOCOL_SPLIT_SEED = 42  # protocol 2.2: random_split's generator, the only split the notebooks made
MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit
SEED_RANGE = {"minimum": 0, "maximum": MAX_SEED}  # every seed a user gives, training, split or sampler


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


def by_mode(attribute: str) -> str:
    """What an unset mode-dependent setting resolves to, for its help: ``protocol: x, notebook: y``."""
    return "the mode's (" + ", ".join(f"{mode} {shown(getattr(d, attribute))}" for mode, d in MODE_DEFAULTS.items()) + ")"


def mode_setting(attribute: str, help: str, **declared: Any) -> Any:
    """A setting left None that resolves to ``MODE_DEFAULTS[mode].<attribute>`` (``RunSpec.resolved``)."""
    return setting(None, help, unset=by_mode(attribute), mode=attribute, **declared)


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = setting(100, "Epochs at most; early stopping ends most runs sooner (no run reached 100).", protocol="3.1", minimum=1)
    lr: float = setting(1e-3, "Adam learning rate.", protocol="3.1", above=0)
    weight_decay: float = setting(1e-4, "Coupled L2 on all parameters (Adam, not AdamW).", protocol="3.1", minimum=0)
    beta1: float = setting(0.9, "Adam beta1.", protocol="3.1", minimum=0, below=1)
    beta2: float = setting(0.999, "Adam beta2.", protocol="3.1", minimum=0, below=1)
    eps: float = setting(1e-8, "Adam epsilon.", protocol="3.1", above=0)
    batch_size: int | None = setting(
        None, "Batch size.", protocol="2.1", unset="the dataset's (64 for PAD-UFES-20, else 128)", minimum=1
    )
    plateau_factor: float = setting(0.2, "ReduceLROnPlateau factor, on validation accuracy.", protocol="3.3", above=0, below=1)
    plateau_patience: int = setting(3, "Epochs without improvement before the learning rate drops.", protocol="3.3", minimum=1)
    min_lr: float = setting(1e-7, "Lowest learning rate of the plateau schedule.", protocol="3.3", minimum=0)
    early_stopping_patience: int = setting(
        7, "Stops this many epochs after the last strict improvement of validation accuracy.", protocol="3.3", minimum=1
    )
    # The original's restore was a no-op, so its test metrics are last-epoch ones. Both weight sets
    # are evaluated on test; this picks the headline.
    restore_best: bool | None = mode_setting(
        "restore_best",
        "Headline the best-validation weights (also the ones analysed after training); false: the last epoch's.",
        protocol="7.2", analysis=True, hashed_before=True,  # both weight sets are always evaluated
    )
    deterministic: bool = setting(True, "cudnn.deterministic with cudnn.benchmark off; false is faster.", protocol="3.4")
    # Also CUBLAS_WORKSPACE_CONFIG and torch.use_deterministic_algorithms without fallback.
    strict_determinism: bool = setting(
        False, "Also deterministic cuBLAS and no nondeterministic op: one without a deterministic kernel fails instead of warning.", protocol="7.14"
    )
    precision: str = setting("fp32", "fp32 (the original's), or bf16 / fp16 autocast.", protocol="3.1", choices=PRECISIONS)
    # NHWC: oneDNN skips its layout reorders; 1.27x train throughput for ResNet-18 at 16 px on a 2-core
    # CPU (`bench perf`).
    channels_last: bool = setting(True, "NHWC activations, faster on CUDA and on the CPU; false: the original memory format.")
    # Equal-compute comparisons: training ends at the step that spends either budget (docs/statistics.md).
    # Hashed only when set, so the configurations logged before these settings existed keep their hash.
    max_time_s: float | None = setting(
        None, "Training budget in seconds (training and validation passes); the fit ends when spent.", unset="no limit",
        above=0, hashed_when_set=True,
    )
    max_gflops: float | None = setting(
        None, "Training budget in GFLOPs (counted training-step FLOPs per image x images trained); the fit ends when spent.",
        unset="no limit", above=0, hashed_when_set=True,
    )
    compile: bool = setting(False, "torch.compile the model.")


@dataclass(frozen=True)
class ModelConfig:
    """Transformer and initialisation options; unset ones keep the model's published default."""

    num_layers: int | None = setting(None, "GradAttn encoder layers.", protocol="1.5", unset="the model's (3)", minimum=1)
    d_model: int | None = setting(
        None, "GradAttn width.", protocol="1.5", unset="the model's (256; No PE in notebook mode: see model.preset)", minimum=1
    )
    nhead: int | None = setting(None, "GradAttn attention heads.", protocol="1.5", unset="the model's (8)", minimum=1)
    dim_feedforward: int | None = setting(None, "GradAttn feed-forward width.", protocol="1.5", unset="the model's (512)", minimum=1)
    dropout: float | None = setting(None, "GradAttn encoder dropout.", protocol="1.5", unset="the model's (0.1)", minimum=0, below=1)
    init: str | None = mode_setting(
        "init", "uniform (PyTorch's defaults for every model) or per-model (each notebook's policy).", protocol="7.12, 1.9"
    )
    encoder: str | None = mode_setting(
        "encoder", "shared (one layer implementation: only the position scheme differs) or published (the notebooks').",
        protocol="7.4, 1.6-1.8",
    )
    # A preset is the sizes it resolves to: it is recorded, the sizes are the identity.
    preset: str | None = setting(
        None, "nope-small (32/16/2, for gradattn-nope only) or none (the published sizes).", protocol="7.3",
        unset="the mode's (protocol none, notebook each notebook's No-PE size)", identity=False,
    )

    def for_model(self, accepted: tuple[str, ...]) -> dict[str, Any]:
        """The options set here that the model accepts (a ResNet takes `init` only)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name in accepted
        }


@dataclass(frozen=True)
class GradFlowConfig:
    # The thresholds only score the stored gradient norms (`bench sensitivity` rescores them).
    vanishing: float = setting(
        1e-6, "A layer is vanishing below this mean gradient norm (analysis only: never retrains).", protocol="5.3",
        above=0, analysis=True,
    )
    exploding: float = setting(
        10.0, "A layer is exploding above this mean gradient norm (analysis only: never retrains).", protocol="5.3",
        above=0, analysis=True,
    )
    # Every gradient-flow setting is analysis only (declared ``analysis=True``): the analysis restores
    # every state it touches, so training is the same whatever they are; they are recorded, but leave
    # the config hash and the report's grouping alone. Those marked ``hashed_before`` were part of the
    # hash of runs logged before, which planning still finds (RunSpec.config_hashes).
    num_batches: int = setting(
        20, "Batches the gradient-flow analysis reads (PAD-UFES-20's test split had 6).", protocol="5.1", minimum=1,
        analysis=True, hashed_before=True,
    )
    every: int = setting(0, "Also analyse every N epochs during training; 0: only at the end.", minimum=0, analysis=True, hashed_before=True)
    # The original analysed the test split in train mode after training; protocol mode reads a fixed,
    # seeded set of training batches with the eval transform, state saved and restored.
    split: str | None = mode_setting(
        "gradflow_split", "The split whose batches are analysed.", protocol="7.7", choices=("train", "val", "test"),
        analysis=True, hashed_before=True,
    )
    mode: str = setting(
        "train", "Forward in train mode (dropout, batch statistics) as training sees it, or eval.", choices=("train", "eval"),
        analysis=True, hashed_before=True,
    )

    @property
    def thresholds(self):
        """The pair as the analyzer takes it (``GradFlowThresholds``, which checks it)."""
        return GradFlowThresholds(self.vanishing, self.exploding)

    def validate(self) -> None:
        try:
            self.thresholds
        except ValueError as error:
            problem = str(error)
            raise BenchError(f"{problem[:1].upper()}{problem[1:]}; set gradflow.vanishing and gradflow.exploding accordingly.") from None


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str
    seed: int = 42  # protocol 3.4: the only seed the original ran; initialisation and batch order
    preprocessing: str = setting(
        "protocol", "protocol (the original's defects fixed) or notebook (what the notebooks did, defects included).",
        protocol="7", choices=PREPROCESSING_MODES,
    )
    splits: str = setting(
        "protocol", "protocol (pooled 70/15/15 re-splits), official (each dataset's own) or grouped (PAD-UFES-20 by patient).",
        protocol="2.2, 7.8", choices=SPLIT_MODES,
    )
    train: TrainConfig = section(TrainConfig, "train")
    model_config: ModelConfig = section(ModelConfig, "model")
    gradflow: GradFlowConfig = section(GradFlowConfig, "gradflow")
    # Which train/val/test split: fixed while training seeds vary, so their spread is initialisation
    # variance on one test set; vary it for a study of split variance.
    split_seed: int = PROTOCOL_SPLIT_SEED

    @classmethod
    def from_settings(cls, settings: dict[str, Any], dataset: str, model: str, **given: Any) -> "RunSpec":
        """A spec of ``dataset`` and ``model`` with checked ``settings`` (``train.lr`` -> value) set."""
        return schema().build(cls, settings, dataset=dataset, model=model, **given)

    @property
    def run_name(self) -> str:
        name = f"{self.dataset}/{self.model}/{self.seed}"
        return name if self.split_seed == PROTOCOL_SPLIT_SEED else f"{name}/split{self.split_seed}"

    @property
    def mode_defaults(self) -> ModeDefaults:
        return MODE_DEFAULTS[self.preprocessing]

    @property
    def restore_best(self) -> bool:
        return _with_mode_defaults(self.train, self.mode_defaults).restore_best

    @property
    def gradflow_split(self) -> str:
        return _with_mode_defaults(self.gradflow, self.mode_defaults).split

    def validate(self) -> "RunSpec":
        """Check everything that can be checked before any data is read; returns self for chaining."""
        from bench import data, models

        models.info(self.model)
        schema().check(self)
        seeds_schema().check(Seeds((self.seed,), (self.split_seed,)))
        data.get(self.dataset).check_options(self.preprocessing, self.splits)
        self.gradflow.validate()
        # an unknown init, encoder or preset, or sizes the model cannot be built with, fail here
        models.check_buildable(self.model, **self.resolved().model_config.for_model(models.info(self.model).options))
        return self

    def resolved(self) -> "RunSpec":
        """This spec with every default filled in: the mode's choices, the dataset's batch size, the
        model's sizes after its preset. Options a model does not take are None (a ResNet has no
        d_model); resolving twice changes nothing."""
        from bench import data, models

        mode = self.mode_defaults
        train = replace(
            _with_mode_defaults(self.train, mode),
            batch_size=self.train.batch_size or data.get(self.dataset).batch_size,
        )
        accepted = models.info(self.model).options
        given = self.model_config.for_model(accepted)
        preset = NOTEBOOK_PRESETS.get(self.dataset) if mode.notebook_presets else None
        defaults = _with_mode_defaults(replace(self.model_config, preset=self.model_config.preset or preset), mode)
        given |= {k: v for k, v in defaults.for_model(accepted).items() if k not in given}
        options = models.resolve_options(self.model, **given)
        model_config = ModelConfig(**{f.name: options.get(f.name) for f in fields(ModelConfig)})
        return replace(self, train=train, model_config=model_config, gradflow=_with_mode_defaults(self.gradflow, mode))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunSpec":
        raw = dict(raw)
        sections = {f.name: f.default_factory(**raw.pop(f.name, {})) for f in fields(cls) if SECTION in f.metadata}
        return cls(**sections, **raw)

    def config_hash(self) -> str:
        """A stable 16-hex-digit identity of everything that changes the trained weights, after every
        default is resolved: spelling a default out (``model.d_model=256``, ``train.batch_size=128``)
        and leaving it implicit give the same hash. Settings declared ``identity=False`` (a preset,
        which is the sizes it resolves to) or ``analysis=True`` (every ``gradflow.*`` and
        ``train.restore_best``: training is the same whatever they are) are recorded but leave it
        alone, so changing them never retrains a finished configuration."""
        return self._hash(lambda meta: meta.get("identity") is False or meta.get("analysis", False))

    def config_hashes(self) -> tuple[str, ...]:
        """This configuration's hash, then the one runs logged before the analysis settings left the
        hash carry (planning finds a finished configuration under either)."""
        legacy = self._hash(lambda meta: meta.get("identity") is False or (meta.get("analysis", False) and not meta.get("hashed_before")))
        return tuple(dict.fromkeys((self.config_hash(), legacy)))

    def _hash(self, left_out) -> str:
        resolved = self.resolved().to_dict()
        for key in schema().keys.values():
            unset = key.field.metadata.get("hashed_when_set") and resolved[key.attribute][key.field.name] is None
            if unset or left_out(key.field.metadata):
                resolved[key.attribute].pop(key.field.name)
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

    def configuration(self) -> str:
        """The configuration's name, what its seeds share: `digits/resnet18`, then the mode where it is
        not the protocol's, the split seed where it is not, and each setting that differs from the mode's default for this dataset
        and model (`digits/resnet18 notebook train.lr=0.0003`), analysis-only ones aside, as the
        report groups runs. The `configuration` tag, by which the MLflow UI groups seeds."""
        ours = self.flat_params()
        default = RunSpec(self.dataset, self.model, seed=self.seed, preprocessing=self.preprocessing, split_seed=self.split_seed).flat_params()
        keys = sorted((set(ours) | set(default)) - analysis_only_keys())
        differing = [f"{key}={ours.get(key)}" for key in keys if ours.get(key) != default.get(key)]
        mode = [] if self.preprocessing == "protocol" else [self.preprocessing]
        split = [] if self.split_seed == PROTOCOL_SPLIT_SEED else [f"split_seed={self.split_seed}"]
        return " ".join([f"{self.dataset}/{self.model}", *mode, *split, *differing])

    def notebook_deviations(self) -> list[str]:
        """The resolved settings in which this run differs from its dataset's notebook cell for the
        model (seed aside): empty for a faithful reproduction."""
        ours = self.flat_params()
        cell = RunSpec(self.dataset, self.model, seed=self.seed, preprocessing="notebook").flat_params()
        return [f"{key}={ours.get(key)}" for key in sorted(set(ours) | set(cell)) if ours.get(key) != cell.get(key)]


def _with_mode_defaults(config, mode: ModeDefaults):
    """``config`` with each unset mode-dependent setting (declared by ``mode_setting``) resolved."""
    unset = {f.name: getattr(mode, f.metadata["mode"]) for f in fields(config) if "mode" in f.metadata and getattr(config, f.name) is None}
    return replace(config, **unset)


@dataclass(frozen=True)
class Seeds:
    """A grid's seeds: every training seed crossed with every split seed (None: not given here)."""

    seeds: tuple[int, ...] | None = setting(
        None, "Training seeds: initialisation and batch order.", unset="42", protocol="3.4", flag="--seeds", **SEED_RANGE
    )
    split_seeds: tuple[int, ...] | None = setting(
        None, "Split seeds, crossed with the training seeds, for a study of split variance.", unset="42, the protocol's split",
        protocol="2.2", flag="--split-seeds", **SEED_RANGE,
    )

    def or_defaults(self) -> "Seeds":
        return Seeds(self.seeds or (42,), self.split_seeds or (PROTOCOL_SPLIT_SEED,))


@functools.cache
def seeds_schema() -> Schema:
    """The grid's seeds as settings (a study file's ``seeds``/``split_seeds``, ``--seeds``, ``--split-seeds``)."""
    return Schema(Seeds)


@functools.cache
def analysis_only_keys() -> frozenset[str]:
    """The recorded parameters (``gradflow.num_batches``, ``train.restore_best``, ...) that change no
    training: the report groups runs without them."""
    return frozenset(key.name for key in schema().keys.values() if key.field.metadata.get("analysis"))


@functools.cache
def schema() -> Schema:
    """Every setting of a run: ``preprocessing``, ``splits`` and the ``train``, ``model`` and ``gradflow`` sections."""
    return Schema(RunSpec)
