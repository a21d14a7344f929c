"""Threshold sensitivity of the gradient health score (protocol 5.3, 7.17).

The original called a layer vanishing below a mean output-gradient norm of 1e-6 and exploding
above 10, both arbitrary. Are the conclusions about each model's gradient health robust to that
choice? Every finished run stored its raw per-layer, per-batch norms (``gradflow/gradflow.json``),
so verdicts, counts and both health scores can be recomputed for any (vanishing, exploding) pair
with ``bench.gradflow.stats.score``, without retraining.

The grid runs as an Optuna study (GridSampler over the pairs) in the same storage as the other
studies: each trial is one pair, its value the spread of health across models (how much that
pair separates them), its user attributes the per-model scores. The table, one heat map per model
and a ranking figure are written locally and logged under one MLflow "sensitivity" run that names
its source runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

import optuna
import pandas as pd

from bench import tracking
from bench.config.spec import GradFlowConfig
from bench.core.errors import BenchError
from bench.core.numbers import parse_numbers
from bench.studies import storage as study_storage
from bench.studies.tables import to_markdown
from bench.tracking import metric_names

KIND = "sensitivity"
DEFAULT_VANISHING = (1e-8, 1e-7, 1e-6, 1e-5)
DEFAULT_EXPLODING = (1.0, 10.0, 100.0, 1000.0)
PROTOCOL_PAIR = (GradFlowConfig.vanishing, GradFlowConfig.exploding)  # the runs' defaults, protocol 5.3
GRADFLOW_ARTIFACT = "gradflow/gradflow.json"
SCORES = ("health", "health_notebook", "n_vanishing", "n_exploding", "n_layers")


# -- the grid ---------------------------------------------------------------------------------------


def parse_thresholds(text: str, option: str) -> tuple[float, ...]:
    values = parse_numbers(text, option, float, valid=lambda v: math.isfinite(v) and v > 0, what="positive finite numbers like 1e-8,1e-7")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class ThresholdGrid:
    vanishing: tuple[float, ...] = DEFAULT_VANISHING
    exploding: tuple[float, ...] = DEFAULT_EXPLODING

    @classmethod
    def parse(cls, vanishing: str, exploding: str) -> "ThresholdGrid":
        grid = cls(parse_thresholds(vanishing, "--vanishing"), parse_thresholds(exploding, "--exploding"))
        # Every pair must be a valid classification (protocol 5.3): checking the closest pair checks all.
        try:
            GradFlowConfig(vanishing=max(grid.vanishing), exploding=min(grid.exploding)).thresholds
        except ValueError as error:
            raise BenchError(f"Every vanishing threshold must lie below every exploding one ({error}); fix --vanishing or --exploding.") from None
        return grid

    @property
    def pairs(self) -> list[tuple[float, float]]:
        return [(v, e) for v in self.vanishing for e in self.exploding]


# -- the source runs -----------------------------------------------------------------------------------


@dataclass
class SourceRun:
    run_id: str
    model: str
    seed: str
    preprocessing: str
    report: object  # bench.gradflow.GradFlowReport
    logged_health: float | None
    logged_health_notebook: float | None

    @property
    def label(self) -> str:
        """How the model shows in tables: its name, plus the preprocessing when not the protocol's."""
        return self.model if self.preprocessing == "protocol" else f"{self.model} [{self.preprocessing}]"


def _named_runs(uri: str, dataset: str, run_ids: list[str]) -> list[tracking.Run]:
    runs = []
    for run_id in dict.fromkeys(run_ids):
        try:
            run = tracking.get_run(uri, run_id)
        except Exception:
            raise BenchError(f"Run {run_id} is not in the tracking store {tracking.shown_uri(uri)}; check --run-id and --tracking-uri.") from None
        if run.tags.get("dataset") != dataset:
            raise BenchError(f"Run {run_id} is a run of {run.tags.get('dataset')!r}, not {dataset!r}; name runs of {dataset} only.")
        if run.status != tracking.FINISHED:
            raise BenchError(f"Run {run_id} is {run.status}, not FINISHED; only finished runs carry their gradient-flow records.")
        runs.append(run)
    return runs


def _latest_runs(uri: str, experiment_id: str, dataset: str) -> list[tracking.Run]:
    """The newest finished run of every configuration of the dataset (a --force rerun replaces one)."""
    found = tracking.grid_runs(uri, experiment_id, dataset=dataset, status=tracking.FINISHED)
    found = sorted((r for r in found if metric_names.has(r.metrics, "gradflow/health")), key=lambda r: r.start_time, reverse=True)
    latest: dict[str, tracking.Run] = {}
    for run in found:
        latest.setdefault(run.tags.get(tracking.CONFIG_HASH_TAG, run.run_id), run)
    return list(latest.values())


def _catalogue_order(source: "SourceRun") -> tuple:
    """Models in the registry's order (resnet18 ... gradattn-rope), then preprocessing and seed."""
    from bench import models

    known = models.names()
    position = known.index(source.model) if source.model in known else len(known)
    return (position, source.model, source.preprocessing != "protocol", source.preprocessing, source.seed)


def find_sources(uri: str, experiment_id: str, experiment: str, dataset: str, run_ids: list[str] | None = None) -> list[SourceRun]:
    """The runs to rescore, with their stored gradient-flow reports."""
    from bench.gradflow import GradFlowReport

    runs = _named_runs(uri, dataset, run_ids) if run_ids else _latest_runs(uri, experiment_id, dataset)
    if not runs:
        raise BenchError(
            f"Experiment {experiment!r} has no finished runs of {dataset} to rescore; train them first with "
            f"`bench run --datasets {dataset} --models all` (same --tracking-uri and --experiment)."
        )
    sources = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            run_id = run.run_id
            if GRADFLOW_ARTIFACT not in tracking.list_artifacts(uri, run_id, "gradflow"):
                if run_ids:
                    raise BenchError(f"Run {run_id} has no {GRADFLOW_ARTIFACT}; it finished before gradient-flow records were stored.")
                continue
            path = tracking.download_artifact(uri, run_id, GRADFLOW_ARTIFACT, Path(tmp) / run_id)
            try:
                report = GradFlowReport.from_json(path.read_text())
            except (ValueError, KeyError, TypeError) as error:
                raise BenchError(f"The gradient-flow record of run {run_id} cannot be read ({error}); rerun it with `bench run --force`.") from None
            tags, metrics = run.tags, run.metrics
            sources.append(
                SourceRun(
                    run_id=run_id,
                    model=tags.get("model", "?"),
                    seed=tags.get("seed", ""),
                    preprocessing=tags.get("preprocessing", "protocol"),
                    report=report,
                    logged_health=metric_names.read(metrics, "gradflow/health", None),
                    logged_health_notebook=metric_names.read(metrics, "gradflow/health_notebook", None),
                )
            )
    if not sources:
        raise BenchError(
            f"No finished run of {dataset} in experiment {experiment!r} has gradient-flow records; rerun them with "
            f"`bench run --datasets {dataset} --models all --force`."
        )
    return sorted(sources, key=_catalogue_order)


# -- scores -------------------------------------------------------------------------------------------


def score_pair(sources: list[SourceRun], vanishing: float, exploding: float) -> dict[str, dict[str, float]]:
    """label -> scores at one threshold pair, averaged over the label's runs (seeds)."""
    from bench.gradflow import GradFlowThresholds, score

    thresholds = GradFlowThresholds(vanishing, exploding)
    per_label: dict[str, list[dict]] = {}
    for source in sources:
        result = score(source.report.records, thresholds, source.report.notebook)
        per_label.setdefault(source.label, []).append(
            {
                "health": result["health_score"],
                "health_notebook": result["health_score_notebook"],
                "n_vanishing": result["n_vanishing"],
                "n_exploding": result["n_exploding"],
                "n_layers": result["n_layers"],
            }
        )
    return {
        label: {key: fmean(r[key] for r in results) for key in SCORES} | {"runs": len(results)}
        for label, results in per_label.items()
    }


def _objective(sources: list[SourceRun], grid: ThresholdGrid):
    def objective(trial: optuna.Trial) -> float:
        vanishing = trial.suggest_float("vanishing", min(grid.vanishing), max(grid.vanishing), log=True)
        exploding = trial.suggest_float("exploding", min(grid.exploding), max(grid.exploding), log=True)
        scores = score_pair(sources, vanishing, exploding)
        trial.set_user_attr("models", scores)
        health = [s["health"] for s in scores.values()]
        return max(health) - min(health)  # how far this pair separates the models

    return objective


def _grid_table(study: optuna.Study, grid: ThresholdGrid, labels: list[str]) -> pd.DataFrame:
    done: dict[tuple[float, float], dict] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        done[(trial.params["vanishing"], trial.params["exploding"])] = trial.user_attrs["models"]
    rows = [
        {"vanishing": v, "exploding": e, "model": label, **done[(v, e)][label], "protocol_pair": (v, e) == PROTOCOL_PAIR}
        for (v, e) in grid.pairs
        for label in labels
    ]
    table = pd.DataFrame(rows)
    by_pair = table.groupby(["vanishing", "exploding"])
    table["rank"] = by_pair["health"].rank(ascending=False, method="min").astype(int)  # 1 = healthiest
    table["rank_notebook"] = by_pair["health_notebook"].rank(ascending=False, method="min").astype(int)
    columns = ["vanishing", "exploding", "model", "runs", *SCORES, "rank", "rank_notebook", "protocol_pair"]
    return table[columns].sort_values(["vanishing", "exploding"], kind="stable").reset_index(drop=True)


def run_grid(
    sources: list[SourceRun], grid: ThresholdGrid, storage_url: str, study_name: str, dataset: str
) -> tuple[optuna.Study, pd.DataFrame]:
    """Score every pair as a trial of a GridSampler study; pairs already in the study are not redone."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.GridSampler({"vanishing": list(grid.vanishing), "exploding": list(grid.exploding)}, seed=0)
    study = study_storage.create_or_load(study_storage.open_storage(storage_url), study_name, direction="maximize", sampler=sampler)
    study_storage.check_kind(study, {"study_kind": KIND, "dataset": dataset})
    done = {
        (t.params["vanishing"], t.params["exploding"])
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }
    missing = [pair for pair in grid.pairs if pair not in done]
    if missing:
        study.optimize(_objective(sources, grid), n_trials=len(missing))
    return study, _grid_table(study, grid, list(dict.fromkeys(s.label for s in sources)))


# -- outputs ------------------------------------------------------------------------------------------


def _pivot(table: pd.DataFrame, value: str, scale: float = 1.0) -> pd.DataFrame:
    """One row per threshold pair, one column per model (in the table's model order)."""
    wide = table.pivot(index=["vanishing", "exploding"], columns="model", values=value)
    wide = wide[list(dict.fromkeys(table["model"]))]
    return (wide * scale if scale != 1.0 else wide).reset_index().rename_axis(columns=None)


def to_markdown_report(table: pd.DataFrame, dataset: str) -> str:
    counts = _pivot(table.assign(counts=table["n_vanishing"].map("{:g}".format) + " / " + table["n_exploding"].map("{:g}".format)), "counts")
    parts = [
        f"# Gradient-health threshold sensitivity: {dataset}",
        "",
        f"Protocol pair (vanishing, exploding) = {PROTOCOL_PAIR}. Health = healthy / layers with data; "
        "notebook formula = healthy layers the original could observe / hooks it registered (protocol 5.3).",
        "",
        "## Health score (%)",
        "",
        to_markdown(_pivot(table, "health", 100), digits=2),
        "## Health score, notebook formula (%)",
        "",
        to_markdown(_pivot(table, "health_notebook", 100), digits=2),
        "## Vanishing / exploding layers",
        "",
        to_markdown(counts),
        "## Rank by health (1 = healthiest)",
        "",
        to_markdown(_pivot(table, "rank")),
    ]
    return "\n".join(parts)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def write_outputs(table: pd.DataFrame, grid: ThresholdGrid, dataset: str, out_dir: Path) -> list[Path]:
    """sensitivity.csv, sensitivity.md, heatmap_MODEL.png per model and ranking.png in `out_dir`."""
    from bench.core.files import atomic_write_bytes
    from bench.studies import figures

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("sensitivity.csv", table.to_csv(index=False)), ("sensitivity.md", to_markdown_report(table, dataset))):
        path = out_dir / name
        atomic_write_bytes(path, lambda handle, text=text: handle.write(text.encode("utf-8")))
        paths.append(path)
    for label, rows in table.groupby("model", sort=False):
        path = out_dir / f"heatmap_{_safe(label)}.png"
        figures.health_heatmap(rows, grid, f"{label} on {dataset}", PROTOCOL_PAIR, path)
        paths.append(path)
    path = out_dir / "ranking.png"
    figures.ranking_across_thresholds(table, grid, f"Model ranking across thresholds ({dataset})", PROTOCOL_PAIR, path)
    paths.append(path)
    return paths


def _summary_metrics(table: pd.DataFrame) -> dict[str, float]:
    """How often the ranking at a pair equals the ranking at the protocol pair (1.0: fully robust)."""
    rankings = {
        pair: tuple(rows.sort_values(["rank", "model"])["model"])
        for pair, rows in table.groupby(["vanishing", "exploding"])
    }
    if PROTOCOL_PAIR not in rankings:
        return {}
    same = sum(r == rankings[PROTOCOL_PAIR] for r in rankings.values())
    at_protocol = table[table["protocol_pair"]]
    return {
        "ranking_agreement": same / len(rankings),
        "protocol_health_spread": float(at_protocol["health"].max() - at_protocol["health"].min()),
    }


# -- the whole study ----------------------------------------------------------------------------------


@dataclass
class SensitivityResult:
    dataset: str
    table: pd.DataFrame
    sources: list[SourceRun]
    study_name: str
    storage: str
    run_id: str
    files: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def study_name_for(dataset: str, sources: list[SourceRun], grid: ThresholdGrid) -> str:
    """Same sources and grid -> same study, so running the command again reuses its trials."""
    key = json.dumps({"runs": sorted(s.run_id for s in sources), "v": grid.vanishing, "e": grid.exploding})
    return f"{KIND}-{dataset}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _sensitivity_run(uri: str, experiment_id: str, dataset: str, study_name: str, storage_url: str, sources: list[SourceRun]) -> str:
    found = tracking.study_runs(uri, experiment_id, KIND, study_name)
    if found:
        tracking.set_status(uri, found[0].run_id, tracking.RUNNING)
        return found[0].run_id
    by_label: dict[str, list[str]] = {}
    for source in sources:
        by_label.setdefault(source.label, []).append(source.run_id)
    tags = {
        tracking.STUDY_KIND_TAG: KIND,
        "dataset": dataset,
        tracking.STUDY_TAG: study_name,
        "optuna_storage": tracking.shown_uri(storage_url),
        "source_run_ids": ",".join(s.run_id for s in sources)[:5000],
        **{f"source_run.{_safe(label)}": ",".join(ids) for label, ids in by_label.items()},
    }
    return tracking.create_run(uri, experiment_id, f"sensitivity/{dataset}", tags)


def run_sensitivity(
    dataset: str,
    *,
    grid: ThresholdGrid,
    run_ids: list[str] | None,
    tracking_uri: str,
    experiment: str,
    storage_url: str | None,
    out_dir: Path,
) -> SensitivityResult:
    from bench import data

    data.get(dataset)  # an unknown name is a BenchError listing the known ones
    experiment_id = tracking.prepare(tracking_uri, experiment)
    sources = find_sources(tracking_uri, experiment_id, experiment, dataset, run_ids)
    storage_url = storage_url or study_storage.default_storage(tracking_uri)
    name = study_name_for(dataset, sources, grid)
    study, table = run_grid(sources, grid, storage_url, name, dataset)
    files = write_outputs(table, grid, dataset, out_dir)
    metrics = _summary_metrics(table)
    run_id = _sensitivity_run(tracking_uri, experiment_id, dataset, name, storage_url, sources)
    logger = tracking.RunLogger(tracking_uri, run_id)
    logger.log_params(
        {
            "vanishing": ",".join(f"{v:g}" for v in grid.vanishing),
            "exploding": ",".join(f"{e:g}" for e in grid.exploding),
            "source_runs": len(sources),
        }
    )
    logger.log_json(
        [
            {"run_id": s.run_id, "model": s.model, "label": s.label, "seed": s.seed, "preprocessing": s.preprocessing,
             "logged_health": s.logged_health, "logged_health_notebook": s.logged_health_notebook}
            for s in sources
        ],
        "sensitivity/sources.json",
    )
    for path in files:
        logger.log_file(path, "sensitivity")
    logger.log_metrics({metric_names.study_key(name): value for name, value in metrics.items()})
    logger.end(tracking.FINISHED)
    return SensitivityResult(dataset, table, sources, name, storage_url, run_id, files, metrics)
