"""The GradAttn depth/width study: Optuna searches the transformer of a GradAttn model.

A trial is one normal tracked run (bench.execution.runner.execute) of the sampled transformer, nested in
MLflow under the study's parent run, trained on any backend (local workers, Ray, Slurm) through the
driver that runs `bench run`'s grid: the parent asks Optuna for trials and tells it their results. Its objective is the best validation accuracy; the parameter
count and the mean epoch time are trial attributes, so accuracy per parameter can be read off.
Per-epoch validation accuracy goes to the trial and a MedianPruner stops poor trials early: the
engine stops gracefully after the epoch, the run ends KILLED and is tagged ``optuna_state=PRUNED``.

The search space and settings live in ``studies/depth-width.toml`` (the defaults below are the
same), read by ``bench.config.studyfile`` against the settings declared here and the runs' (bench/config/spec.py);
``--set`` on the command line overrides them.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from bench import tracking
from bench.config import studyfile
from bench.config.schema import Schema, section, setting
from bench.config.spec import SEED_RANGE, ModelConfig, RunSpec
from bench.core.errors import BenchError
from bench.execution.tasks import Task, TaskState
from bench.execution.worker import worker_id
from bench.studies import storage as study_storage
from bench.studies.search_space import TRANSFORMER_OPTIONS, SearchSpace, model_config
from bench.train.callbacks import Callback

KIND = "depth-width"
# Optuna's trial states as MLflow tag values (tag `optuna_state` on each trial's run).
COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"
PRUNED_AFTER = "pruned_after_epoch"  # the trial's user attribute its worker sets when the pruner stops it


# -- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSettings:
    n_startup_trials: int = setting(10, "Random trials before TPE models the space.", minimum=0)
    seed: int | None = setting(None, "Seed of the TPE sampler.", unset="none", **SEED_RANGE)

    def build(self) -> optuna.samplers.BaseSampler:
        # constant_liar: trials still training count as poor, so parallel trials spread out.
        return optuna.samplers.TPESampler(n_startup_trials=self.n_startup_trials, seed=self.seed, constant_liar=True)


@dataclass(frozen=True)
class PrunerSettings:
    n_startup_trials: int = setting(5, "No pruning until this many trials have finished (MedianPruner).", minimum=0)
    n_warmup_steps: int = setting(2, "Epochs a trial always trains before it can be pruned.", minimum=0)

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials, n_warmup_steps=self.n_warmup_steps)


# What a trial's run trains with unless the study says otherwise: shorter than the protocol's grid.
DEFAULT_RUN_SETTINGS = {"train.max_epochs": 30, "gradflow.num_batches": 5}


@dataclass(frozen=True)
class DepthWidthStudy:
    dataset: str | None = setting(None, "Dataset to search on (e.g. cifar10, digits).", unset="none (required)")
    model: str = setting("gradattn-rope", "The GradAttn model whose transformer is searched.")
    n_trials: int = setting(30, "Trials this invocation adds to the study, shared by all workers.", minimum=1)
    study_name: str | None = setting(None, "The Optuna study; running again with it continues the study.", unset=f"{KIND}-DATASET-MODEL")
    seed: int = setting(42, "Training seed of every trial: differences come from the shape alone.", **SEED_RANGE)
    space: SearchSpace = section(SearchSpace, "space")
    sampler: SamplerSettings = section(SamplerSettings, "sampler")
    pruner: PrunerSettings = section(PrunerSettings, "pruner")
    # The trials' run settings (preprocessing, splits, train.*, gradflow.*: bench/config/spec.py), by key.
    settings: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RUN_SETTINGS))

    @property
    def name(self) -> str:
        return self.study_name or f"{KIND}-{self.dataset}-{self.model}"

    def base_spec(self) -> RunSpec:
        """The run every trial starts from; the trial fills in the transformer options."""
        if not self.dataset:
            raise BenchError("Name the dataset to search on with --dataset (e.g. --dataset digits).")
        return RunSpec.from_settings(self.settings, self.dataset, self.model, seed=self.seed).validate()

    def validate(self) -> "DepthWidthStudy":
        from bench import models

        self.base_spec()
        missing = [o for o in TRANSFORMER_OPTIONS if o not in models.info(self.model).options]
        if missing:
            gradattn = ", ".join(models.names("gradattn-*"))
            raise BenchError(f"{self.model} has no transformer to search (no {', '.join(missing)}); choose --model from {gradattn}.")
        STUDY_SETTINGS.check(self)
        study_storage.check_study_name(self.name)
        self.space.validate()
        return self


STUDY_SETTINGS = Schema(DepthWidthStudy, listed_by="bench study depth-width --help")
# A study file and --set take the study's own settings and the trials' run settings; not the
# [model] section, whose transformer the study searches (and `model` names the GradAttn model).
SCHEMA = STUDY_SETTINGS | Schema(RunSpec, exclude=("model",), defaults=DEFAULT_RUN_SETTINGS)


def load(path: Path) -> dict[str, Any]:
    """A depth-width study file's settings by key (see studies/depth-width.toml), checked."""
    return studyfile.read(path, SCHEMA)[0]


def configure(values: dict[str, Any]) -> DepthWidthStudy:
    """The study with ``values`` (checked settings, by key) over the defaults."""
    own = {k: v for k, v in values.items() if k in STUDY_SETTINGS.keys}
    runs = DEFAULT_RUN_SETTINGS | {k: v for k, v in values.items() if k not in own}
    return STUDY_SETTINGS.build(DepthWidthStudy, own, settings=runs)


def valid_heads(config: DepthWidthStudy) -> dict[int, tuple[int, ...]]:
    """d_model -> the head counts the model accepts with it (built on the meta device, no memory).

    Every d_model choice needs at least one: otherwise the space has a dead value.
    """
    from bench import models

    options = models.info(config.model).options
    valid: dict[int, tuple[int, ...]] = {}
    for d_model in config.space.d_model:
        accepted = []
        for nhead in config.space.nhead:
            shape = ModelConfig(num_layers=1, d_model=d_model, nhead=nhead, dim_feedforward=d_model)
            try:
                models.check_buildable(config.model, **shape.for_model(options))
            except BenchError:
                continue
            accepted.append(nhead)
        if not accepted:
            raise BenchError(
                f"No head count in {list(config.space.nhead)} fits d_model {d_model} for {config.model} "
                "(d_model must be divisible by heads, with an even head dimension for RoPE); change space.d_model or space.nhead."
            )
        valid[d_model] = tuple(accepted)
    return valid


# -- one trial ----------------------------------------------------------------------------------------


class TrialPruning(Callback):
    """Engine callback, in the worker that trains a trial: reports each epoch's validation accuracy
    to the trial and asks the engine to stop when the pruner says so (the run ends KILLED; the parent
    then tells Optuna the trial was pruned). Picklable: it opens the storage in the worker."""

    def __init__(self, storage: str, study_name: str, number: int, pruner: PrunerSettings) -> None:
        self.storage, self.study_name, self.number, self.pruner = storage, study_name, number, pruner
        self.pruned = False
        self._trial: optuna.Trial | None = None

    def _open(self) -> optuna.Trial:
        if self._trial is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = study_storage.open_storage(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner.build())
            self._trial = optuna.trial.Trial(study, _trial_id(storage, self.study_name, self.number))
        return self._trial

    def on_fit_start(self, start_epoch: int, history) -> None:
        self._open().set_user_attr("worker", worker_id())

    def on_epoch_end(self, record) -> None:
        trial = self._open()
        trial.report(record.val_acc, step=record.epoch)
        if trial.should_prune():
            self.pruned = True
            trial.set_user_attr(PRUNED_AFTER, record.epoch)

    def should_stop(self) -> bool:
        return self.pruned


def _trial_name(config: DepthWidthStudy, number: int) -> str:
    return f"{config.name}/trial-{number:03d}"


def _trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


class TrialSource:
    """The study's trials as tasks for the driver (bench.execution.backends.driver): a trial is asked from
    Optuna when there is room for it, trained as a tracked run like any grid run, and told to Optuna
    when its run ends. At most `in_flight` trials train at once; TPE's constant liar counts those
    still training as poor, so parallel trials spread out."""

    def __init__(self, config: DepthWidthStudy, study: optuna.Study, storage: optuna.storages.BaseStorage, storage_url: str,
                 tracking_uri: str, experiment_id: str, parent_run_id: str, in_flight: int, checkpoint_root: Path) -> None:
        self.config, self.study, self.storage, self.storage_url = config, study, storage, storage_url
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.in_flight, self.checkpoint_root = in_flight, Path(checkpoint_root)
        self.valid_heads = valid_heads(config)
        self.base_spec = config.base_spec()
        self.asked = 0
        self.trials: dict[str, optuna.Trial] = {}  # run id -> the trial it trains
        self.interrupted = False

    def take(self, active: int) -> list[Task]:
        tasks: list[Task] = []
        while self.asked < self.config.n_trials and active + len(tasks) < self.in_flight and not self.interrupted:
            self.asked += 1
            task = self._ask()
            if task is not None:
                tasks.append(task)
        return tasks

    def _ask(self) -> Task | None:
        """A new trial as a task; None for a shape the model rejects (pruned before any training)."""
        trial = self.study.ask()
        params = self.config.space.sample(trial)
        if params["nhead"] not in self.valid_heads[params["d_model"]]:
            reason = f"{params['nhead']} heads do not fit d_model {params['d_model']} for {self.config.model}"
            trial.set_user_attr("invalid", reason)
            _announce(self.study.tell(trial, state=optuna.trial.TrialState.PRUNED))
            return None
        run_id = self._create_run(trial, params)
        trial.set_user_attr(tracking.RUN_ID_FIELD, run_id)
        self.trials[run_id] = trial
        pruning = TrialPruning(self.storage_url, self.config.name, trial.number, self.config.pruner)
        spec = replace(self.base_spec, model_config=model_config(params))
        return Task(spec, run_id, resumed=False, callbacks=(pruning,), name=_trial_name(self.config, trial.number))

    def _create_run(self, trial: optuna.Trial, params: dict[str, Any]) -> str:
        tags = {
            tracking.TRIAL_TAG: str(trial.number),  # the grid scheduler never resumes runs carrying it
            tracking.STUDY_TAG: self.config.name,
            "optuna_state": "RUNNING",
            **{f"optuna_param.{k}": str(v) for k, v in params.items()},
        }
        name = _trial_name(self.config, trial.number)
        return tracking.create_run(self.tracking_uri, self.experiment_id, name, tags, parent_run_id=self.parent_run_id)

    def ended(self, state: TaskState) -> None:
        run_id = state.run_id
        trial = self.trials.pop(run_id)
        shutil.rmtree(self.checkpoint_root / run_id, ignore_errors=True)  # a trial is never resumed
        parameters = tracking.get_run(self.tracking_uri, run_id).tags.get("parameters")
        if parameters is not None:
            trial.set_user_attr("parameters", int(parameters))
        if state.epoch_times:
            trial.set_user_attr("epoch_time_s", sum(state.epoch_times) / len(state.epoch_times))
        trial.set_user_attr("epochs", len(state.epoch_times))
        pruned = PRUNED_AFTER in self.storage.get_trial(_trial_id(self.storage, self.config.name, trial.number)).user_attrs
        if state.status == "finished":
            outcome, value = COMPLETE, state.best_val_acc
        elif state.status == "killed" and pruned:
            outcome, value = PRUNED, None
        else:  # failed, or stopped by Ctrl-C
            outcome, value = FAIL, None
            self.interrupted = self.interrupted or state.status in ("killed", "not started")
        tracking.RunLogger(self.tracking_uri, run_id).set_tags({"optuna_state": outcome})
        _announce(self.study.tell(trial, value, state=optuna.trial.TrialState[outcome]))


def _announce(trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial, beside the live table."""
    p, attrs = trial.params, trial.user_attrs
    shape = (
        f"layers {p.get('num_layers')}, d_model {p.get('d_model')}, heads {p.get('nhead')}, "
        f"ff x{p.get('ff_multiplier')}, dropout {p.get('dropout', 0):.2f}"
    )
    value = f" best val acc {trial.value:.4f}" if trial.value is not None else ""
    size = f", {attrs['parameters']:,} params" if "parameters" in attrs else ""
    speed = f", {attrs['epoch_time_s']:.2f} s/epoch" if "epoch_time_s" in attrs else ""
    print(f"trial {trial.number}: {trial.state.name}{value} | {shape}{size}{speed}", flush=True)


# -- the study ----------------------------------------------------------------------------------------


def _parent_run(uri: str, experiment_id: str, config: DepthWidthStudy, storage_url: str) -> str:
    """The study's MLflow run, created once and reused when the study is continued."""
    shown_storage = tracking.shown_uri(storage_url)
    for run in tracking.study_runs(uri, experiment_id, KIND, config.name):
        if run.tags.get("optuna_storage") == shown_storage:
            tracking.set_status(uri, run.run_id, tracking.RUNNING)
            return run.run_id
    tags = {
        tracking.STUDY_TAG: config.name,
        "optuna_storage": shown_storage,
        tracking.STUDY_KIND_TAG: KIND,
        "dataset": config.dataset,
        "model": config.model,
    }
    return tracking.create_run(uri, experiment_id, f"study/{config.name}", tags)


def run_study(
    config: DepthWidthStudy,
    *,
    backend,
    destination,
    experiment: str,
    storage_url: str | None,
    on_update=lambda states: None,
):
    """Create or continue the study, train its trials on the backend, log the summary to the parent run."""
    from bench.execution.backends.driver import run_tasks
    from bench.studies import summary

    config.validate()
    uri = destination.tracking_uri
    experiment_id = tracking.prepare(uri, experiment)
    storage_url = storage_url or study_storage.default_storage(uri)
    storage = study_storage.open_storage(storage_url)
    study = study_storage.create_or_load(
        storage, config.name, direction="maximize", sampler=config.sampler.build(), pruner=config.pruner.build()
    )
    study_storage.check_kind(study, {"study_kind": KIND, "dataset": config.dataset, "model": config.model})
    parent = _parent_run(uri, experiment_id, config, storage_url)
    logger = tracking.RunLogger(uri, parent)
    logger.log_json(_config_dict(config), "study/config.json")
    # As many trials at once as the backend trains runs at once; a Slurm queue (no known capacity)
    # gets every trial of this invocation at once.
    in_flight = min(backend.capacity or config.n_trials, config.n_trials)
    source = TrialSource(config, study, storage, storage_url, uri, experiment_id, parent, in_flight, destination.checkpoint_root)
    try:
        states = run_tasks(backend, source, destination, on_update=on_update)
    except BaseException:
        logger.end(tracking.FAILED)
        raise
    outcome = summary.summarise(study, storage_url, parent)
    summary.log_to_run(logger, study, outcome)
    lost = [s for s in states if s.lost]
    logger.end(tracking.KILLED if source.interrupted else tracking.FAILED if lost else tracking.FINISHED)
    outcome.interrupted = source.interrupted
    outcome.dead_workers = [f"{s.slot} ({s.error})" for s in lost]
    return outcome


def _config_dict(config: DepthWidthStudy) -> dict[str, Any]:
    return asdict(config) | {"name": config.name}
