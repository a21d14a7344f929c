"""The comparison from MLflow runs: tables (Markdown, CSV, LaTeX) and a figure, one row per configuration.

A configuration is everything that defines a result except the training seed: dataset, model, mode,
splits and split seed, and every other recorded setting. Runs of one configuration are its seeds
(the newest run of each seed counts); where configurations of one dataset, model and mode differ,
the differing settings become columns. Each row has the test top-1 mean with its 95 % t interval,
the difference to the ResNet-18 row of the same settings with its interval and test
(`significance.py`), the published notebook figure where the row reproduces it, and warnings
(`references.py`). The gradient-health table is grouped the same way.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import tracking
from bench.core import published
from bench.core.errors import BenchError
from bench.core.files import atomic_write_bytes
from bench.core.modes import PREPROCESSING_MODES
from bench.results import references, significance
from bench.tracking import metric_names

BASELINE = "resnet18"
NOT_SETTINGS = {"seed", "dataset", "model"}  # the row's own columns, or (the seed) what a row pools
ALWAYS_SHOWN = ("preprocessing", "splits", "split_seed")
PREDICTIONS = "evaluation/test_predictions.csv"


def published_results() -> pd.DataFrame:
    """The notebooks' test top-1 (%) per (dataset, model) with the row of notebook_results.csv."""
    return pd.DataFrame(
        [{"dataset": c.dataset, "model": c.model, "published_top1": c.top1, "published_row": c.row} for c in published.cells()]
    )


# -- runs ----------------------------------------------------------------------------------------


def collect_runs(uri: str, experiment: str) -> pd.DataFrame:
    """One row per finished grid run: the newest run of each (configuration, seed)."""
    exp_id = tracking.experiment_id(uri, experiment)
    rows = []
    for run in tracking.grid_runs(uri, exp_id, status=tracking.FINISHED):
        tags, metrics = run.tags, run.metrics
        if not metric_names.has(metrics, "test/top1") or "dataset" not in tags:
            continue  # a run with no test result to report
        settings = {k: v for k, v in run.params.items() if k not in NOT_SETTINGS}
        settings.setdefault("preprocessing", tags.get("preprocessing", "protocol"))
        settings.setdefault("splits", tags.get("splits", "protocol"))
        # Runs made before split seeds existed split with their training seed.
        settings.setdefault("split_seed", tags.get("split_seed", tags["seed"]))
        rows.append(
            {
                "run_id": run.run_id,
                "start_time": run.start_time,
                "dataset": tags["dataset"],
                "model": tags["model"],
                "seed": int(tags["seed"]),
                "preprocessing": settings["preprocessing"],
                "splits": settings["splits"],
                "split_seed": int(settings["split_seed"]),
                "settings": json.dumps(settings, sort_keys=True),
                "top1": 100 * metric_names.read(metrics, "test/top1"),
                "top1_best": 100 * metric_names.read(metrics, "test/best_top1"),
                "top1_last": 100 * metric_names.read(metrics, "test/last_top1"),
                "best_val_acc": metric_names.read(metrics, "val/best_acc"),
                "num_classes": int(tags.get("num_classes", 0)),
                "final_weights": tags.get("final_weights", ""),
                "published_cell": int(tags["published_cell"]) if tags.get("published_cell") else None,
                "published_deviations": tags.get("published_deviations", ""),
                "health": 100 * metric_names.read(metrics, "gradflow/health"),
                "health_notebook": 100 * metric_names.read(metrics, "gradflow/health_notebook"),
                "vanishing": metric_names.read(metrics, "gradflow/vanishing_layers"),
                "exploding": metric_names.read(metrics, "gradflow/exploding_layers"),
                "gradflow_batches": metric_names.read(metrics, "gradflow/batches"),
                "gradflow_batch_size": metric_names.read(metrics, "gradflow/batch_size"),
            }
        )
    if not rows:
        raise BenchError(f"Experiment {experiment!r} has no finished runs; start some with `bench run` first.")
    frame = pd.DataFrame(rows).sort_values("start_time")
    frame = frame.drop_duplicates(["dataset", "model", "settings", "seed"], keep="last").reset_index(drop=True)
    frame["at_chance"] = [_at_chance(uri, run) for run in frame.itertuples()]
    return frame


def _at_chance(uri: str, run) -> bool:
    if not run.num_classes or math.isnan(run.best_val_acc):
        return False
    train_acc = [value for _, value in sorted(tracking.metric_history(uri, run.run_id, "train/acc"))]
    return references.at_chance_while_training(run.best_val_acc, train_acc, run.num_classes)


# -- configurations ------------------------------------------------------------------------------------


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """Settings that differ between configurations of one (dataset, model, mode): the extra columns."""
    keys: set[str] = set()
    for _, part in runs.groupby(["dataset", "model", "preprocessing"]):
        configs = [json.loads(s) for s in part.settings.unique()]
        for key in set().union(*configs):
            if len({str(c.get(key)) for c in configs}) > 1:
                keys.add(key)
    return sorted(keys - set(ALWAYS_SHOWN))


def _overrides(dataset: str, model: str, config: dict, shown: list[str]) -> str:
    """The settings in which a configuration departs from its mode's defaults (those not already a
    column), e.g. `preset=nope-small, d_model=32`: what a reader needs to know the row is not default."""
    from bench.config.spec import RunSpec

    try:
        default = RunSpec(dataset, model, preprocessing=config["preprocessing"], splits=config["splits"],
                          split_seed=int(config["split_seed"])).flat_params()
    except BenchError:  # a model or dataset this installation does not know
        return ""
    keys = sorted(k for k in config if k not in shown and k not in ALWAYS_SHOWN and str(default.get(k)) != str(config[k]))
    return ", ".join(f"{k.split('.', 1)[-1]}={config[k]}" for k in keys)


def _baseline_key(settings: str) -> str:
    """The settings a ResNet-18 row shares with any model's: all but the model's own options
    (the initialisation policy is shared)."""
    raw = json.loads(settings)
    own = {k for k in raw if k.startswith("model_config.") and k != "model_config.init"}
    return json.dumps({k: v for k, v in raw.items() if k not in own}, sort_keys=True)


def in_paper_order(table: pd.DataFrame, between: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows by dataset, then `between`, then model, datasets and models in registry order (the
    paper's: ResNet-18 first); names the registries do not know come last, alphabetically."""
    from bench import data, models

    def rank(order: list[str]):
        return lambda name: order.index(name) if name in order else len(order)

    ranked = table.assign(_dataset=table.dataset.map(rank(data.names())), _model=table.model.map(rank(models.names())))
    ranked = ranked.sort_values(["_dataset", "dataset", *between, "_model", "model"], kind="stable")
    return ranked.drop(columns=["_dataset", "_model"]).reset_index(drop=True)


class Predictions:
    """Per-example test correctness of a run's headline weights, read from its artifact once."""

    def __init__(self, uri: str, folder: Path) -> None:
        self.uri, self.folder, self._cache = uri, folder, {}

    def correct(self, run) -> tuple[np.ndarray, np.ndarray] | None:
        if run.run_id not in self._cache:
            self._cache[run.run_id] = self._read(run)
        return self._cache[run.run_id]

    def _read(self, run):
        try:
            path = tracking.download_artifact(self.uri, run.run_id, PREDICTIONS, self.folder / run.run_id)
            table = pd.read_csv(path)
        except Exception:  # runs made before predictions were kept, or an unreadable artifact
            return None
        column = f"pred_{run.final_weights}"
        if column not in table:
            return None
        labels = table["label"].to_numpy()
        return labels, table[column].to_numpy() == labels


def _single_pair(predictions: Predictions | None, ours, base) -> significance.Comparison | None:
    if predictions is None:
        return None
    mine, theirs = predictions.correct(ours), predictions.correct(base)
    if mine is None or theirs is None or not np.array_equal(mine[0], theirs[0]):
        return None  # no per-example record, or not the same test examples
    return significance.paired_over_examples(mine[1], theirs[1])


def _leading_columns(dataset: str, model: str, config: dict, varying: list[str]) -> dict:
    """What names a configuration in both tables: dataset, model, mode, splits, differing settings."""
    return {
        "dataset": dataset,
        "model": model,
        "mode": config["preprocessing"],
        "splits": f"{config['splits']}, split seed {config['split_seed']}",
        **{key: config.get(key, "") for key in varying},
    }


def comparison_table(runs: pd.DataFrame, predictions: Predictions | None = None) -> pd.DataFrame:
    """One row per configuration: statistics, the difference to ResNet-18, published figure, warnings."""
    varying = varying_settings(runs)
    groups = list(runs.groupby(["dataset", "model", "settings"], sort=False))
    baselines = {
        (dataset, _baseline_key(settings)): group
        for (dataset, model, settings), group in groups
        if model == BASELINE
    }
    cells = {(c.dataset, c.model): c for c in published.cells()}
    rows = []
    for (dataset, model, settings), group in groups:
        config = json.loads(settings)
        mean, half = significance.t_interval(group.top1)
        row = {
            **_leading_columns(dataset, model, config, varying),
            "n": len(group),
            "seeds": ",".join(str(s) for s in sorted(group.seed)),
            "top1_mean": mean,
            "top1_ci": half,
            "top1_std": group.top1.std(ddof=1) if len(group) > 1 else math.nan,
            "top1_best_mean": group.top1_best.mean(),
            "top1_last_mean": group.top1_last.mean(),
            "headline_weights": "/".join(sorted(set(group.final_weights) - {""})),
        }
        row |= _versus_baseline(model, group, baselines.get((dataset, _baseline_key(settings))), predictions)
        row |= _published(config["preprocessing"], group, cells.get((dataset, model)))
        row["other_settings"] = _overrides(dataset, model, config, varying)
        row["warnings"] = "; ".join(_warnings(dataset, model, config["splits"], mean, group))
        row["settings"] = settings
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p_holm"] = np.nan
    for _, index in table.groupby("dataset").groups.items():
        table.loc[index, "p_holm"] = significance.holm(table.loc[index, "p"])
    best = table.groupby(["dataset", "mode", "splits"])["top1_mean"].transform("max")
    table["best"] = table["top1_mean"] == best
    return _ordered(table)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Paper order, protocol-mode rows before notebook-mode ones within a dataset."""
    ranked = table.assign(_mode=table["mode"].map({m: i for i, m in enumerate(PREPROCESSING_MODES)}))
    return in_paper_order(ranked, between=("_mode", "splits")).drop(columns="_mode")


def _versus_baseline(model, group, baseline, predictions) -> dict:
    empty = {"delta_vs_resnet18": math.nan, "delta_low": math.nan, "delta_high": math.nan, "pairs": 0, "p": math.nan, "test": ""}
    if model == BASELINE or baseline is None:
        return empty
    comparison = significance.paired_over_seeds(dict(zip(group.seed, group.top1)), dict(zip(baseline.seed, baseline.top1)))
    if comparison is None:
        return empty | {"test": "no seed in common with the ResNet-18 row"}
    if comparison.pairs == 1:
        seed = next(iter(set(group.seed) & set(baseline.seed)))
        ours = next(group[group.seed == seed].itertuples())
        base = next(baseline[baseline.seed == seed].itertuples())
        comparison = _single_pair(predictions, ours, base) or significance.Comparison(
            1, comparison.delta, math.nan, math.nan, math.nan, "one seed pair and no per-example predictions"
        )
    return {
        "delta_vs_resnet18": comparison.delta,
        "delta_low": comparison.low,
        "delta_high": comparison.high,
        "pairs": comparison.pairs,
        "p": comparison.p,
        "test": comparison.test,
    }


def _published(mode: str, group, cell) -> dict:
    """The published figure, and whether this row reproduces it (notebook mode runs name the cell)."""
    if cell is None:
        return {"published_top1": math.nan, "published_row": None, "reproduces": False, "deviations": ""}
    reproduces = mode == "notebook" and bool(group.published_cell.notna().all())
    deviations = sorted(set(group.published_deviations) - {"", "none"}) if reproduces else []
    return {"published_top1": cell.top1, "published_row": cell.row, "reproduces": reproduces, "deviations": "; ".join(deviations)}


def _warnings(dataset: str, model: str, splits: str, mean: float, group) -> list[str]:
    found = []
    if model == BASELINE:
        found.append(references.baseline_warning(dataset, mean))
    chance = sorted(group.seed[group.at_chance])
    if chance:
        found.append(f"val accuracy at chance while train accuracy rose (seed {', '.join(map(str, chance))})")
    found.append(references.split_warning(dataset, splits))
    return [w for w in found if w]


def health_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Gradient health per configuration, grouped exactly as the comparison table."""
    varying = varying_settings(runs)
    rows = []
    for (dataset, model, settings), group in runs.groupby(["dataset", "model", "settings"], sort=False):
        config = json.loads(settings)
        rows.append(
            {
                **_leading_columns(dataset, model, config, varying),
                "analysed": _analysed(config, group),
                "health_mean": group.health.mean(),
                "health_notebook_mean": group.health_notebook.mean(),
                "vanishing_mean": group.vanishing.mean(),
                "exploding_mean": group.exploding.mean(),
                "n": len(group),
            }
        )
    return _ordered(pd.DataFrame(rows))


def _analysed(config: dict, group) -> str:
    """Which batches the analysis read: count x batch size, split and forward mode."""
    batches, size = group.gradflow_batches.max(), group.gradflow_batch_size.max()
    count = f"{batches:.0f} x {size:.0f}" if not (math.isnan(batches) or math.isnan(size)) else "?"
    return f"{count} {config.get('gradflow.split', '?')} ({config.get('gradflow.mode', 'train')} mode)"


# -- output ----------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{round(value, digits) + 0.0:{'+' if sign else ''}.{digits}f}"  # + 0.0: never -0.00
    return text


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return ""
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _mean_cell(row: dict, bold: str) -> str:
    text = _fmt(row["top1_mean"]) + (f" ± {_fmt(row['top1_ci'])}" if not math.isnan(row["top1_ci"]) else "")
    return f"{bold}{text}{bold}" if row["best"] else text


def _delta_cell(row: dict) -> str:
    if math.isnan(row["delta_vs_resnet18"]):
        return ""
    low, high = row["delta_low"], row["delta_high"]
    interval = f" [{_fmt(low, sign=True)}, {_fmt(high, sign=True)}]" if not math.isnan(low) else ""
    return _fmt(row["delta_vs_resnet18"], sign=True) + interval


def _published_cell(row: dict) -> str:
    if math.isnan(row["published_top1"]):
        return ""
    if row["reproduces"]:
        return f"{_fmt(row['published_top1'])} (row {row['published_row']}){' *' if row['deviations'] else ''}"
    return f"({_fmt(row['published_top1'])}) †"


def _extra_columns(table: pd.DataFrame, last: str) -> list[str]:
    """The differing settings: the columns between `splits` and `last`."""
    columns = list(table.columns)
    return columns[columns.index("splits") + 1 : columns.index(last)]


def _markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def to_markdown(table: pd.DataFrame, health: pd.DataFrame) -> str:
    extra = _extra_columns(table, "n")
    head = ["dataset", "model", "mode", "splits", *extra, "n", "test top-1 % (mean ± 95% CI)", "best-val / last-epoch weights",
            "Δ vs ResNet-18 [95% CI]", "p (Holm)", "test", "published", "warnings"]
    others = table.other_settings.astype(bool).any()
    head += ["other settings (vs the mode's defaults)"] if others else []
    rows = [
        [r["dataset"], r["model"], r["mode"], r["splits"], *(str(r[c]) for c in extra), str(r["n"]), _mean_cell(r, "**"),
         f"{_fmt(r['top1_best_mean'])} / {_fmt(r['top1_last_mean'])}", _delta_cell(r), _p(r["p_holm"]), r["test"],
         _published_cell(r), ("⚠ " + r["warnings"]) if r["warnings"] else "", *([r["other_settings"]] if others else [])]
        for r in table.to_dict("records")
    ]
    lines = [*_markdown_table(head, rows), ""]
    lines += [line for note in _notes(table) for line in (note, "")]
    extra = _extra_columns(health, "analysed")
    head = ["dataset", "model", "mode", "splits", *extra, "analysed batches", "gradient health %",
            "health % (notebook formula)", "vanishing", "exploding", "n"]
    rows = [
        [r["dataset"], r["model"], r["mode"], r["splits"], *(str(r[c]) for c in extra), r["analysed"], _fmt(r["health_mean"]),
         _fmt(r["health_notebook_mean"]), _fmt(r["vanishing_mean"], 1), _fmt(r["exploding_mean"], 1), str(r["n"])]
        for r in health.to_dict("records")
    ]
    return "\n".join([*lines, *_markdown_table(head, rows)]) + "\n"


def _notes(table: pd.DataFrame) -> list[str]:
    notes = [
        "Test top-1: mean over seeds ± half-width of its 95 % t interval (n - 1 degrees of freedom); "
        "the headline weights follow the mode (protocol: best validation, notebook: last epoch), "
        "both sets are shown. Δ: this row minus the ResNet-18 row of the same settings, paired by seed, "
        f"with its 95 % t interval. p: {significance.T_TEST} where n >= {significance.MIN_PAIRS_FOR_P}, none at n = 2; "
        f"with a single seed pair an {significance.MCNEMAR} and a paired bootstrap interval "
        f"({significance.BOOTSTRAP_SAMPLES} resamples); Holm-adjusted within each dataset.",
    ]
    if (~table.reproduces & table.published_top1.notna()).any():
        notes.append("† the notebooks' published figure for this dataset and model; this row is not a notebook-mode "
                     "reproduction of it (protocol mode fixes the defects behind it).")
    for row in table[table.deviations != ""].to_dict("records"):
        notes.append(f"* {row['dataset']} {row['model']}: reproduces notebook_results.csv row {row['published_row']} "
                     f"with settings that differ from it: {row['deviations']}.")
    flagged = {d for d, w in zip(table.dataset, table.warnings) if "literature" in w}
    for dataset in sorted(flagged):
        reference = references.table()[dataset]
        notes.append(f"Literature ResNet-18 on {dataset}: {reference.shown} ({reference.source}).")
    return notes


def to_latex(table: pd.DataFrame) -> str:
    lines = [
        r"\begin{tabular}{llllrrll}",
        r"\hline",
        r"Dataset & Model & Mode & Splits & $n$ & Top-1 (\%) & $\Delta$ ResNet-18 & Published \\",
        r"\hline",
    ]
    for row in table.to_dict("records"):
        cell = _fmt(row["top1_mean"]) + (rf" $\pm$ {_fmt(row['top1_ci'])}" if not math.isnan(row["top1_ci"]) else "")
        if row["best"]:
            cell = rf"\textbf{{{cell}}}"
        shown = _published_cell(row).replace("†", r"$^\dagger$")
        lines.append(
            f"{row['dataset']} & {row['model']} & {row['mode']} & {row['splits']} & {row['n']} & {cell} & "
            f"{_delta_cell(row)} & {shown} \\\\"
        )
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    """What `bench report` wrote, and its tables as data (what ``bench.report()`` returns)."""

    markdown: str
    paths: list[Path]
    results: pd.DataFrame  # one row per configuration (results.csv)
    health: pd.DataFrame  # gradient health per configuration (gradient_health.csv)
    runs: pd.DataFrame  # every finished run read (runs.csv)

    def _repr_markdown_(self) -> str:  # a notebook shows the report's tables
        return self.markdown


def write_report(uri: str, experiment: str, out: Path) -> Report:
    from bench.core.plots import plot_comparison

    runs = collect_runs(uri, experiment)
    with tempfile.TemporaryDirectory() as folder:
        table = comparison_table(runs, Predictions(uri, Path(folder)))
    health = health_table(runs)
    markdown = to_markdown(table, health)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "results.md": markdown,
        "results.csv": table.to_csv(index=False),
        "gradient_health.csv": health.to_csv(index=False),
        "results.tex": to_latex(table),
        "runs.csv": runs.to_csv(index=False),
    }
    paths = []
    for name, text in outputs.items():
        atomic_write_bytes(out / name, lambda handle, text=text: handle.write(text.encode()))
        paths.append(out / name)
    figure = out / "results.png"
    plot_comparison(table, runs, figure)
    paths.append(figure)
    return Report(markdown, paths, table, health, runs)

