"""The Python API: what the `bench` commands do, as functions a notebook calls, returning data.

    import bench
    runs = bench.run(datasets="digits", models="resnet18", max_epochs=1, backend="inline")
    report = bench.report()          # report.results, report.health, report.runs: DataFrames

Every keyword is a command-line option's name (``--max-epochs`` is ``max_epochs``), checked by the
same declaration and with the same one-sentence errors (a BenchError). Nothing heavy is imported
until a function runs, so ``import bench`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import pandas as pd

    from bench.results.report import Report
    from bench.studies.sensitivity import SensitivityResult
    from bench.studies.summary import StudySummary

__all__ = ["run", "report", "sensitivity", "depth_width"]

ORIGIN = "bench.run"


def run(
    datasets: str | Iterable[str] = "digits",
    models: str | Iterable[str] = "all",
    seeds: int | str | Iterable[int] | None = None,
    split_seeds: int | str | Iterable[int] | None = None,
    *,
    study: str | Path | None = None,
    backend: str = "local",
    force: bool = False,
    prune_checkpoints: bool = False,
    skip_missing: bool = False,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> "pd.DataFrame":
    """Train the dataset x model x seed grid (what `bench run` does); one row per configuration:
    run id, dataset, model, seed, split seed, state, test top-1, gradient health, epochs, wall time,
    error and the run's name.

    Args:
        datasets: names, wildcards or ``all`` (a comma list or a list).
        models: names, wildcards (``gradattn-*``) or ``all``.
        seeds: training seeds (default 42); split_seeds: split seeds, crossed with them.
        study: a study file (TOML) with the grid and its settings; the arguments given here win.
        backend: ``local`` (worker processes), ``inline`` (this process: a debugger or a notebook
            steps into the runs), ``ray`` or ``slurm``.
        force: rerun configurations that already finished.
        progress: show the live table (a terminal) or one line per epoch (a notebook, a log).
        settings: run settings by key, ``{"train.lr": 3e-4}``.
        **options: any other option of `bench run` by its name: where runs go (``data_dir``,
            ``checkpoint_dir``, ``tracking_uri``, ``experiment``), what they keep (``plugins``,
            ``log_model``, ``system_metrics``), placement (``devices``, ``jobs_per_device``, ...),
            and any run setting by its key's last part where that is unique (``max_epochs=1``,
            ``lr=3e-4``, ``preprocessing="notebook"``) or with ``__`` for the dot (``train__lr``).

    The DataFrame's ``attrs`` hold the tracking URI, the experiment id and the exit code `bench run`
    would give (0 all finished, 1 a run failed, 130 interrupted).
    """
    import pandas as pd

    from bench.config import options as declared
    from bench.config import studyfile
    from bench.config.spec import Seeds, schema
    from bench.core import plugins
    from bench.execution.grid import run_grid
    from bench.execution.progress import GridDisplay

    places, keeping, placement, given = _sorted_options(options, ORIGIN)
    given |= _checked_settings(settings or {}, schema(), ORIGIN)
    plugins.use(keeping.plugins)
    grid = studyfile.load(Path(study)) if study else studyfile.Grid(pairs=studyfile.pairs_from(_listed(datasets), _listed(models)))
    checked = declared.given(Seeds, {"seeds": _seed_list(seeds), "split_seeds": _seed_list(split_seeds)}, ORIGIN)
    grid = grid.overridden(checked.seeds, checked.split_seeds, given)
    shown = {}
    if progress:
        console = _console()
        shown = {"say": lambda message: console.print(message, markup=False, highlight=False), "display": GridDisplay(console)}
    result = run_grid(
        grid, places, keeping, backend, placement, force=force, prune_checkpoints=prune_checkpoints, skip_missing=skip_missing, **shown
    )
    frame = pd.DataFrame(result.rows())
    frame.attrs.update(tracking_uri=result.uri, experiment_id=result.experiment_id, exit_code=result.exit_code)
    return frame


def report(
    experiment: str | None = None,
    tracking_uri: str | None = None,
    out: str | Path = "bench-report",
    metric: str = "top1",
    baselines: str | Iterable[str] = (),
    primary: str | None = None,
    log: bool = False,
) -> "Report":
    """The report of an experiment's finished runs (what `bench report` writes to ``out``): its
    tables as DataFrames (``results``, ``health``, ``runs``, ``verdict``), the verdicts in plain
    words (``sentences``), its Markdown and the files written.

    Args:
        metric: the test metric compared: ``top1``, ``balanced_acc``, ``macro_f1`` or any logged one.
        baselines: the models each other model is compared with across datasets (the first is the
            per-dataset rows' Δ; default ResNet-18 where it has runs); ``("senet18", "cbam18")``
            compares GradAttn with the attention models.
        primary: the model the experiment was run for; the others are labelled exploratory (default:
            the study file's ``primary``, recorded on the runs).
        log: also log the files to the experiment, as its run named ``report`` (``logged_to`` is
            its link in the MLflow UI).
    """
    from bench import tracking
    from bench.config import options as declared
    from bench.results.report import Options, write_report

    places = declared.given(declared.Places, {"experiment": experiment, "tracking_uri": tracking_uri}, "bench.report")
    uri = tracking.resolve_uri(places.tracking_uri)
    experiment_id = tracking.prepare(uri, places.experiment)
    chosen = Options(metric, (baselines,) if isinstance(baselines, str) else tuple(baselines), primary)
    written = write_report(uri, places.experiment, Path(out), chosen)
    if log:
        run_id = tracking.log_report(uri, experiment_id, written.paths, f"`bench report --metric {chosen.metric}`: {len(written.runs)} finished runs.")
        written.logged_to = tracking.run_url(uri, experiment_id, run_id)
    return written


def sensitivity(
    dataset: str,
    run_ids: Iterable[str] = (),
    vanishing: str | Iterable[float] = "1e-8,1e-7,1e-6,1e-5",
    exploding: str | Iterable[float] = "1,10,100,1000",
    experiment: str | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    out: str | Path = "bench-sensitivity",
) -> "SensitivityResult":
    """The threshold-sensitivity study of the gradient health score on a dataset's finished runs (no
    retraining); what `bench sensitivity DATASET` does. Returns the study's table, metrics and files."""
    from bench import tracking
    from bench.config import options as declared
    from bench.studies import sensitivity as sens

    places = declared.given(declared.Places, {"experiment": experiment, "tracking_uri": tracking_uri}, "bench.sensitivity")
    grid = sens.ThresholdGrid.parse(_joined(vanishing), _joined(exploding))
    return sens.run_sensitivity(
        dataset, grid=grid, run_ids=list(run_ids), tracking_uri=tracking.resolve_uri(places.tracking_uri),
        experiment=places.experiment, storage_url=storage, out_dir=Path(out) / dataset,
    )


def depth_width(
    config_file: str | Path | None = None,
    *,
    backend: str = "local",
    progress: bool = True,
    storage: str | None = None,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> "StudySummary":
    """The depth-width study of GradAttn's transformer (what `bench study depth-width` does): its
    summary (best trial, top trials, importances, every trial as a DataFrame).

    Args:
        config_file: a study file (default: the built-in space, as studies/depth-width.toml).
        storage: the Optuna storage (default: optuna.db beside a sqlite tracking store).
        settings: the study's keys, ``{"space.d_model": (64, 128)}``.
        **options: as for `run`, and the study's keys by name (``dataset="digits"``, ``n_trials=4``,
            ``max_epochs=2``).
    """
    import contextlib

    from bench import data, tracking
    from bench.core import plugins
    from bench.execution import backends
    from bench.execution.progress import GridDisplay
    from bench.studies import depth_width as dw

    origin = "bench.depth_width"
    places, keeping, placement, given = _sorted_options(options, origin, dw.SCHEMA)
    plugins.use(keeping.plugins)
    values = dw.load(Path(config_file)) if config_file else {}
    config = dw.configure(values | given | _checked_settings(settings or {}, dw.SCHEMA, origin)).validate()
    places = places.checked()
    data.get(config.dataset).require(places.data_dir)
    executor = backends.create(backend, placement)
    uri = tracking.resolve_uri(places.tracking_uri)
    destination = backends.Destination.of(uri, places, keeping)
    display = None
    if progress:
        console = _console()
        console.print(
            f"study {config.name!r}: {config.n_trials} trial(s) of {config.model} on {config.dataset}; "
            f"{executor.description}; tracking: {tracking.shown_uri(uri)} (experiment {places.experiment!r})", markup=False,
        )
        display = GridDisplay(console)
    with display or contextlib.nullcontext():
        return dw.run_study(config, backend=executor, destination=destination, experiment=places.experiment, storage_url=storage,
                            on_update=display.update if display else lambda states: None)


# -- keywords as declared options -------------------------------------------------------------------


def _sorted_options(options: dict[str, Any], origin: str, settings_schema=None):
    """``options`` split by their declaration: (Places, Keeping, Placement, checked run settings)."""
    from bench.config import options as declared
    from bench.config.spec import schema
    from bench.execution.backends import Placement

    settings_schema = settings_schema or schema()
    groups = {cls: {} for cls in (declared.Places, declared.Keeping, Placement)}
    owner = {name: cls for cls in groups for name in declared.keys(cls)}
    loose: dict[str, Any] = {}
    for name, value in options.items():
        if name in owner:
            groups[owner[name]][name] = value
        else:
            loose[name] = value
    if "plugins" in groups[declared.Keeping] and isinstance(groups[declared.Keeping]["plugins"], str):
        groups[declared.Keeping]["plugins"] = [groups[declared.Keeping]["plugins"]]
    built = [declared.given(cls, values, origin) for cls, values in groups.items()]
    return (*built, _checked_settings({_setting_key(name, settings_schema, origin): v for name, v in loose.items()}, settings_schema, origin))


def _setting_key(name: str, settings_schema, origin: str) -> str:
    """A keyword as a settings key: ``train__lr`` -> ``train.lr``; ``max_epochs`` -> the one key ending so."""
    from bench.core.errors import BenchError

    dotted = name.replace("__", ".")
    if dotted in settings_schema.keys:
        return dotted
    matches = [key for key in settings_schema.keys if key.rsplit(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BenchError(f"{name} ({origin}) could be {' or '.join(matches)}; write it with __ for the dot, e.g. {matches[0].replace('.', '__')}=...")
    return settings_schema.key(dotted, f"{origin}({name}=...)").name  # an unknown key: one sentence naming it


def _checked_settings(values: dict[str, Any], settings_schema, origin: str) -> dict[str, Any]:
    checked = {}
    for key, value in values.items():
        declared = settings_schema.key(key, origin)
        checked[key] = declared.coerce(value, f"{origin}({key}=...)", from_text=isinstance(value, str) and declared.kind is not str)
    return checked


def _listed(names: str | Iterable[str]) -> str:
    return names if isinstance(names, str) else ",".join(names)


def _joined(values: str | Iterable[float]) -> str:
    return values if isinstance(values, str) else ",".join(str(v) for v in values)


def _seed_list(seeds: int | str | Iterable[int] | None):
    if seeds is None or isinstance(seeds, str):
        return seeds
    return [seeds] if isinstance(seeds, int) else list(seeds)


def _console():
    from bench.execution.progress import make_console

    return make_console()
