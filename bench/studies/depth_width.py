"""The GradAttn depth/width study: Optuna searches the transformer of a GradAttn model.

A trial is one normal tracked run (bench.runner.execute) of the sampled transformer, nested in
MLflow under the study's parent run. Its objective is the best validation accuracy; the parameter
count and the mean epoch time are trial attributes, so accuracy per parameter can be read off.
Per-epoch validation accuracy goes to the trial and a MedianPruner stops poor trials early: the
engine stops gracefully after the epoch, the run ends KILLED and is tagged ``optuna_state=PRUNED``.

The search space and settings live in ``studies/depth-width.toml`` (the defaults below are the
same); command-line options override them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import optuna
import tomllib

from bench import plugins, tracking
from bench.callbacks import Callback
from bench.errors import BenchError
from bench.spec import GradFlowConfig, ModelConfig, RunSpec, TrainConfig
from bench.studies import storage as study_storage
from bench.studies.workers import WorkersResult, run_workers, worker_id

KIND = "depth-width"
TRANSFORMER_OPTIONS = ("num_layers", "d_model", "nhead", "dim_feedforward", "dropout")
# Optuna's trial states as MLflow tag values (tag `optuna_state` on each trial's run).
COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"


# -- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """Transformer shapes to search (the issue's space); dim_feedforward = ff_multiplier x d_model."""

    num_layers: tuple[int, int] = (1, 6)  # inclusive integer range
    d_model: tuple[int, ...] = (64, 128, 256, 512)
    nhead: tuple[int, ...] = (2, 4, 8)
    ff_multiplier: tuple[int, ...] = (1, 2, 4)
    dropout: tuple[float, float] = (0.0, 0.3)  # uniform range

    def validate(self) -> "SearchSpace":
        low, high = self.num_layers
        if not 1 <= low <= high:
            raise BenchError(f"The num_layers range must satisfy 1 <= low <= high, got {low}..{high}.")
        for name in ("d_model", "nhead", "ff_multiplier"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise BenchError(f"The {name} choices must be positive integers, got {list(values)}.")
        low, high = self.dropout
        if not 0 <= low <= high < 1:
            raise BenchError(f"The dropout range must satisfy 0 <= low <= high < 1, got {low}..{high}.")
        return self

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """One point of the space.

        Heads are a categorical over all listed values, sampled independently of d_model: an Optuna
        categorical needs a static choice list, and keeping d_model and heads as two parameters keeps
        their importances and the parallel-coordinate plot readable. A combination the model rejects
        (d_model not divisible by heads, or an odd head dimension under RoPE) is pruned before any
        training, which the TPE sampler learns to avoid; with the default space every combination
        is valid (the smallest head dimension is 64 / 8 = 8).
        """
        return {
            "num_layers": trial.suggest_int("num_layers", *self.num_layers),
            "d_model": trial.suggest_categorical("d_model", list(self.d_model)),
            "nhead": trial.suggest_categorical("nhead", list(self.nhead)),
            "ff_multiplier": trial.suggest_categorical("ff_multiplier", list(self.ff_multiplier)),
            "dropout": trial.suggest_float("dropout", *self.dropout),
        }


def model_config(params: dict[str, Any]) -> ModelConfig:
    return ModelConfig(
        num_layers=params["num_layers"],
        d_model=params["d_model"],
        nhead=params["nhead"],
        dim_feedforward=params["ff_multiplier"] * params["d_model"],
        dropout=params["dropout"],
    )


@dataclass(frozen=True)
class SamplerSettings:
    n_startup_trials: int = 10  # random trials before TPE models the space
    seed: int | None = None  # worker i uses seed + i, so parallel workers do not propose the same point

    def build(self, worker_index: int) -> optuna.samplers.BaseSampler:
        seed = None if self.seed is None else self.seed + worker_index
        # constant_liar: trials running in other workers count as poor, so workers spread out.
        return optuna.samplers.TPESampler(n_startup_trials=self.n_startup_trials, seed=seed, constant_liar=True)


@dataclass(frozen=True)
class PrunerSettings:
    n_startup_trials: int = 5  # no pruning until this many trials have finished
    n_warmup_steps: int = 2  # epochs a trial always trains before it can be pruned

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials, n_warmup_steps=self.n_warmup_steps)


@dataclass(frozen=True)
class DepthWidthStudy:
    dataset: str | None = None
    model: str = "gradattn-rope"
    n_trials: int = 30  # trials this invocation adds to the study
    study_name: str | None = None  # default: depth-width-DATASET-MODEL
    seed: int = 42  # every trial trains with the same seed: differences come from the shape
    preprocessing: str = "protocol"
    splits: str = "protocol"
    space: SearchSpace = field(default_factory=SearchSpace)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    pruner: PrunerSettings = field(default_factory=PrunerSettings)
    train: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 30})  # TrainConfig fields
    gradflow: dict[str, Any] = field(default_factory=lambda: {"num_batches": 5})  # GradFlowConfig fields

    @property
    def name(self) -> str:
        return self.study_name or f"{KIND}-{self.dataset}-{self.model}"

    def base_spec(self) -> RunSpec:
        """The run every trial starts from; the trial fills in the transformer options."""
        if not self.dataset:
            raise BenchError("Name the dataset to search on with --dataset (e.g. --dataset digits).")
        try:
            train, gradflow = TrainConfig(**self.train), GradFlowConfig(**self.gradflow)
        except TypeError as error:
            raise BenchError(f"Unknown setting in the depth-width study: {error}.") from None
        return RunSpec(self.dataset, self.model, self.seed, self.preprocessing, self.splits, train, ModelConfig(), gradflow).validate()

    def validate(self) -> "DepthWidthStudy":
        from bench import models

        self.base_spec()
        missing = [o for o in TRANSFORMER_OPTIONS if o not in models.info(self.model).options]
        if missing:
            gradattn = ", ".join(models.names("gradattn-*"))
            raise BenchError(f"{self.model} has no transformer to search (no {', '.join(missing)}); choose --model from {gradattn}.")
        if self.n_trials < 1:
            raise BenchError(f"--n-trials must be at least 1, got {self.n_trials}.")
        if self.sampler.n_startup_trials < 0 or self.pruner.n_startup_trials < 0 or self.pruner.n_warmup_steps < 0:
            raise BenchError("Sampler and pruner start-up counts must not be negative.")
        study_storage.check_study_name(self.name)
        self.space.validate()
        return self


SECTIONS = {"space": SearchSpace, "sampler": SamplerSettings, "pruner": PrunerSettings}
TOP_LEVEL = {"description", "dataset", "model", "n_trials", "study_name", "seed", "preprocessing", "splits", "train", "gradflow", "plugins", "datasets"}


def load_config(path: Path) -> DepthWidthStudy:
    """Read a depth-width study file (see studies/depth-width.toml); mistakes are BenchErrors."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"Study file {path} does not exist; see studies/depth-width.toml.") from None
    except tomllib.TOMLDecodeError as error:
        raise BenchError(f"Study file {path} is not valid TOML ({error}).") from None
    unknown = set(raw) - TOP_LEVEL - set(SECTIONS)
    if unknown:
        raise BenchError(f"Study file {path} has unknown keys {sorted(unknown)}; allowed: {sorted(TOP_LEVEL | set(SECTIONS))}.")
    plugins.from_study_file(raw, path)
    values: dict[str, Any] = {k: v for k, v in raw.items() if k in TOP_LEVEL - {"description", "plugins", "datasets"}}
    for section, cls in SECTIONS.items():
        given = raw.get(section, {})
        allowed = {f.name for f in fields(cls)}
        if set(given) - allowed:
            raise BenchError(f"Study file {path}: [{section}] has unknown keys {sorted(set(given) - allowed)}; allowed: {sorted(allowed)}.")
        values[section] = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    for section, cls in (("train", TrainConfig), ("gradflow", GradFlowConfig)):
        allowed = {f.name for f in fields(cls)}
        bad = set(raw.get(section, {})) - allowed
        if bad:
            raise BenchError(f"Study file {path}: [{section}] has unknown keys {sorted(bad)}; allowed: {sorted(allowed)}.")
    return DepthWidthStudy(**values)


def override(config: DepthWidthStudy, **options: Any) -> DepthWidthStudy:
    """Apply the command-line options that were given (None: not given).

    Keys: top-level fields by name, `space.X`, `sampler.X`, `pruner.X`, `train.X`, `gradflow.X`.
    """
    updates: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        if not name:
            updates[key] = value
        elif section in SECTIONS:
            updates[section] = replace(updates.get(section, getattr(config, section)), **{name: value})
        else:
            updates[section] = updates.get(section, dict(getattr(config, section))) | {name: value}
    return replace(config, **updates)


def valid_heads(config: DepthWidthStudy) -> dict[int, tuple[int, ...]]:
    """d_model -> the head counts the model accepts with it (built on the meta device, no memory).

    Every d_model choice needs at least one: otherwise the space has a dead value.
    """
    import torch

    from bench import models

    options = models.info(config.model).options
    valid: dict[int, tuple[int, ...]] = {}
    for d_model in config.space.d_model:
        accepted = []
        for nhead in config.space.nhead:
            shape = ModelConfig(num_layers=1, d_model=d_model, nhead=nhead, dim_feedforward=d_model)
            try:
                with torch.device("meta"):
                    models.build(config.model, 10, 3, **shape.for_model(options))
            except BenchError:
                continue
            accepted.append(nhead)
        if not accepted:
            raise BenchError(
                f"No head count in {list(config.space.nhead)} fits d_model {d_model} for {config.model} "
                "(d_model must be divisible by heads, with an even head dimension for RoPE); change the d_model or nhead choices."
            )
        valid[d_model] = tuple(accepted)
    return valid


# -- one trial ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyJob:
    """Everything a worker needs, picklable for spawned processes."""

    config: DepthWidthStudy
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    valid_heads: dict[int, tuple[int, ...]]
    target_trials: int  # workers stop once the study holds this many trials
    budget: int  # trials this invocation adds
    data_dir: str
    checkpoint_root: str


class TrialFailed(Exception):
    """A trial's run raised (e.g. out of memory); the trial is FAIL and the study goes on."""


class TrialInterrupted(Exception):
    """Ctrl-C stopped the trial's run after an epoch; the trial is FAIL and this worker stops."""


class PruningMonitor(Callback):
    """Engine callback: reports validation accuracy per epoch and asks the engine to stop when pruned."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned = False
        self.epoch_times: list[float] = []
        self.best_val_acc = 0.0

    def on_epoch_end(self, record) -> None:
        self.epoch_times.append(record.epoch_time_s)
        self.best_val_acc = record.best_val_acc
        self.trial.report(record.val_acc, step=record.epoch)
        if self.trial.should_prune():
            self.pruned = True

    def should_stop(self) -> bool:
        return self.pruned


class TrialObjective:
    def __init__(self, job: StudyJob, device: str, stop) -> None:
        from bench.runner import RunContext

        self.job = job
        self.stop = stop
        self.base_spec = job.config.base_spec()
        self.ctx = RunContext(
            tracking_uri=job.tracking_uri,
            data_dir=Path(job.data_dir),
            checkpoint_root=Path(job.checkpoint_root),
            device=device,
        )

    def _create_run(self, trial: optuna.Trial, params: dict[str, Any]) -> str:
        tags = {
            "mlflow.parentRunId": self.job.parent_run_id,
            "trial_number": str(trial.number),  # the grid scheduler never resumes runs carrying it
            "optuna_study": self.job.config.name,
            "optuna_state": "RUNNING",
            **{f"optuna_param.{k}": str(v) for k, v in params.items()},
        }
        name = f"{self.job.config.name}/trial-{trial.number:03d}"
        return tracking.create_run(self.job.tracking_uri, self.job.experiment_id, name, tags)

    def __call__(self, trial: optuna.Trial) -> float:
        from bench.runner import checkpoint_dir, execute

        trial.set_user_attr("worker", worker_id())
        params = self.job.config.space.sample(trial)
        if params["nhead"] not in self.job.valid_heads[params["d_model"]]:
            reason = f"{params['nhead']} heads do not fit d_model {params['d_model']} for {self.job.config.model}"
            trial.set_user_attr("invalid", reason)
            raise optuna.TrialPruned(reason)
        spec = replace(self.base_spec, model_config=model_config(params))
        run_id = self._create_run(trial, params)
        trial.set_user_attr("mlflow_run_id", run_id)
        logger = tracking.RunLogger(self.job.tracking_uri, run_id)
        monitor = PruningMonitor(trial)
        try:
            outcome = execute(spec, self.ctx, run_id, callbacks=[monitor], should_stop=self.stop.is_set)
        except BenchError:
            logger.set_tags({"optuna_state": FAIL})
            raise
        except Exception as error:  # execute logged it and marked the run FAILED
            logger.set_tags({"optuna_state": FAIL})
            raise TrialFailed(f"{error.__class__.__name__}: {error}") from error
        finally:
            # A trial is never resumed; its best weights are logged with a finished run.
            shutil.rmtree(checkpoint_dir(self.ctx, run_id), ignore_errors=True)
        self._record(trial, run_id, monitor)
        if outcome.status == tracking.KILLED:
            if monitor.pruned:
                logger.set_tags({"optuna_state": PRUNED})
                raise optuna.TrialPruned(f"pruned after epoch {len(monitor.epoch_times)}")
            logger.set_tags({"optuna_state": FAIL})
            trial.study.stop()
            raise TrialInterrupted("interrupted by Ctrl-C")
        logger.set_tags({"optuna_state": COMPLETE})
        return monitor.best_val_acc

    def _record(self, trial: optuna.Trial, run_id: str, monitor: PruningMonitor) -> None:
        parameters = tracking.client(self.job.tracking_uri).get_run(run_id).data.tags.get("parameters")
        if parameters is not None:
            trial.set_user_attr("parameters", int(parameters))
        if monitor.epoch_times:
            trial.set_user_attr("epoch_time_s", sum(monitor.epoch_times) / len(monitor.epoch_times))
        trial.set_user_attr("epochs", len(monitor.epoch_times))


def _announce(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial on stdout (workers share the terminal)."""
    p, attrs = trial.params, trial.user_attrs
    shape = (
        f"layers {p.get('num_layers')}, d_model {p.get('d_model')}, heads {p.get('nhead')}, "
        f"ff x{p.get('ff_multiplier')}, dropout {p.get('dropout', 0):.2f}"
    )
    value = f" best val acc {trial.value:.4f}" if trial.value is not None else ""
    size = f", {attrs['parameters']:,} params" if "parameters" in attrs else ""
    speed = f", {attrs['epoch_time_s']:.2f} s/epoch" if "epoch_time_s" in attrs else ""
    print(f"trial {trial.number}: {trial.state.name}{value} | {shape}{size}{speed}", flush=True)


def work(job: StudyJob, device: str, worker_index: int, stop) -> None:
    """One worker: pull trials from the shared study until it holds `target_trials` or Ctrl-C."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_storage.open_storage(job.storage)
    if len(storage.get_all_trials(storage.get_study_id_from_name(job.config.name), deepcopy=False)) >= job.target_trials:
        return  # the other workers used up the budget before this one started
    study = optuna.load_study(
        study_name=job.config.name,
        storage=storage,
        sampler=job.config.sampler.build(worker_index),
        pruner=job.config.pruner.build(),
    )
    # Counting running trials too (states=None) shares the budget among workers; two workers that
    # finish in the same instant can still each start one more, so a study may exceed it by a trial.
    study.optimize(
        TrialObjective(job, device, stop),
        n_trials=job.budget,
        callbacks=[optuna.study.MaxTrialsCallback(job.target_trials, states=None), _announce],
        catch=(TrialFailed, TrialInterrupted),
        gc_after_trial=True,
    )


# -- the study ----------------------------------------------------------------------------------------


def _parent_run(uri: str, experiment_id: str, config: DepthWidthStudy, storage_url: str) -> str:
    """The study's MLflow run, created once and reused when the study is continued."""
    shown_storage = tracking.shown_uri(storage_url)
    found = tracking.runs_of(
        uri, experiment_id, filter_string=f"tags.optuna_study = '{config.name}' and tags.study_kind = '{KIND}'"
    )
    for run in found:
        if run.data.tags.get("optuna_storage") == shown_storage:
            tracking.client(uri).update_run(run.info.run_id, status=tracking.RUNNING)
            return run.info.run_id
    tags = {
        "optuna_study": config.name,
        "optuna_storage": shown_storage,
        "study_kind": KIND,
        "dataset": config.dataset,
        "model": config.model,
    }
    return tracking.create_run(uri, experiment_id, f"study/{config.name}", tags)


def _fail_orphans(study: optuna.Study, result: WorkersResult, uri: str) -> list[int]:
    """Trials left RUNNING by a worker that died: mark them, and their runs, failed."""
    dead = {end.worker for end in result.dead}
    orphans = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) if t.user_attrs.get("worker") in dead]
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            logger = tracking.RunLogger(uri, run_id, retries=1)
            logger.set_tags({"optuna_state": FAIL, "failure": "worker process died"})
            logger.end(tracking.FAILED)
    return [t.number for t in orphans]


def run_study(
    config: DepthWidthStudy,
    *,
    tracking_uri: str,
    experiment: str,
    storage_url: str | None,
    slots: list,
    data_dir: Path,
    checkpoint_root: Path,
):
    """Create or continue the study, run its trials on the slots, log the summary to the parent run."""
    from bench.studies import summary

    config.validate()
    heads = valid_heads(config)
    experiment_id = tracking.prepare(tracking_uri, experiment)
    storage_url = storage_url or study_storage.default_storage(tracking_uri)
    study = study_storage.create_or_load(study_storage.open_storage(storage_url), config.name, direction="maximize")
    study_storage.check_kind(study, {"study_kind": KIND, "dataset": config.dataset, "model": config.model})
    parent = _parent_run(tracking_uri, experiment_id, config, storage_url)
    logger = tracking.RunLogger(tracking_uri, parent)
    logger.log_json(_config_dict(config), "study/config.json")
    job = StudyJob(
        config=config,
        storage=storage_url,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent,
        valid_heads=heads,
        target_trials=len(study.trials) + config.n_trials,
        budget=config.n_trials,
        data_dir=str(data_dir),
        checkpoint_root=str(checkpoint_root),
    )
    try:
        # More workers than trials would each start one: MaxTrialsCallback only acts after a trial.
        result = run_workers(work, job, slots[: config.n_trials])
    except BaseException:
        logger.end(tracking.FAILED)
        raise
    _fail_orphans(study, result, tracking_uri)
    outcome = summary.summarise(study, storage_url, parent)
    summary.log_to_run(logger, study, outcome)
    failed_workers = result.dead or any(end.error for end in result.ends)
    logger.end(tracking.KILLED if result.interrupted else tracking.FAILED if failed_workers else tracking.FINISHED)
    result.raise_user_error()
    outcome.interrupted = result.interrupted
    outcome.dead_workers = [f"{end.slot} (exit code {end.exitcode})" for end in result.dead]
    return outcome


def _config_dict(config: DepthWidthStudy) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config) | {"name": config.name}
