"""The per-dataset table: one row per configuration with its score and interval, the difference to
the baseline row of the same settings with its test (Holm within each family), the published
figure, the seed accounting and warnings; and the gradient-health table, grouped alike."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.core import published
from bench.core.errors import BenchError
from bench.core.modes import PREPROCESSING_MODES
from bench.results import cost, references, significance
from bench.results.runs import ALWAYS_SHOWN, BASELINE, Predictions

IMBALANCED = 3.0  # a majority to minority class ratio above this: balanced accuracy beside top-1


def published_results() -> pd.DataFrame:
    """The notebooks' test top-1 (%) per (dataset, model) with the row of notebook_results.csv."""
    return pd.DataFrame(
        [{"dataset": c.dataset, "model": c.model, "published_top1": c.top1, "published_row": c.row} for c in published.cells()]
    )


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
    """The settings a baseline row shares with any model's: all but the model's own options
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


@dataclass
class Options:
    """What a report compares: the metric, the baselines (the first is the rows' Δ; none given: ResNet-18
    where it has runs), the primary model."""

    metric: str = "top1"
    baselines: tuple[str, ...] = ()
    primary: str | None = None

    @property
    def baseline(self) -> str:
        return self.baselines[0] if self.baselines else BASELINE


def comparison_table(runs: pd.DataFrame, predictions: Predictions | None = None, unfinished: pd.DataFrame | None = None,
                     options: Options | None = None) -> pd.DataFrame:
    """One row per configuration: statistics, the difference to the baseline, published figure, warnings."""
    options = options or Options()
    baseline = options.baseline
    varying = varying_settings(runs)
    groups = list(runs.groupby(["dataset", "model", "settings"], sort=False))
    baselines = {(dataset, _baseline_key(settings)): group for (dataset, model, settings), group in groups if model == baseline}
    cells = {(c.dataset, c.model): c for c in published.cells()}
    imbalanced = _imbalanced(runs)
    rows = []
    for (dataset, model, settings), group in groups:
        config = json.loads(settings)
        mean, low, high, interval = _score_interval(group, options.metric, predictions)
        row = {
            **_leading_columns(dataset, model, config, varying),
            "n": len(group),
            "seeds": ",".join(str(s) for s in sorted(group.seed)),
            "score_mean": mean,
            "score_low": low,
            "score_high": high,
            "interval": interval,
            "score_std": group.score.std(ddof=1) if len(group) > 1 else math.nan,
            "balanced_mean": group.balanced.mean() if dataset in imbalanced and options.metric != "balanced_accuracy" else math.nan,
            "top1_best_mean": group.top1_best.mean(),
            "top1_last_mean": group.top1_last.mean(),
            "headline_weights": "/".join(sorted(set(group.final_weights) - {""})),
            **cost.row_costs(group),
        }
        row |= _seed_accounting(group, unfinished, dataset, model, settings)
        row |= _versus_baseline(model, group, baselines.get((dataset, _baseline_key(settings))), predictions, baseline)
        row |= _published(config["preprocessing"], group, cells.get((dataset, model)), options.metric)
        row["other_settings"] = _overrides(dataset, model, config, varying)
        row["warnings"] = "; ".join(_warnings(dataset, model, config["splits"], row, group, baseline))
        row["baseline_key"] = _baseline_key(settings)
        row["settings"] = settings
        rows.append(row)
    table = pd.DataFrame(rows)
    table["holm_family"] = [f"{d} | {t.split(':')[0]} | {k}" if t else "" for d, t, k in zip(table.dataset, table.test, table.baseline_key)]
    table["p_holm"] = np.nan
    for family, index in table.groupby("holm_family").groups.items():
        if family:
            table.loc[index, "p_holm"] = significance.holm(table.loc[index, "p"])
    table["best"] = _separated_best(table)
    return _ordered(table)


def _score_interval(group, metric: str, predictions: Predictions | None) -> tuple[float, float, float, str]:
    """(mean, low, high, what the interval is): over seeds a 95 % t interval; at one seed of top-1 the
    Wilson interval of the test-set accuracy, which needs the number of test examples."""
    mean, half = significance.t_interval(group.score)
    if len(group) > 1:
        return mean, mean - half, mean + half, "95% t over seeds"
    run = next(group.itertuples())
    if metric != "top1":
        return mean, math.nan, math.nan, "one seed: no interval for this metric"
    examples = run.test_examples
    if not examples and predictions is not None and predictions.correct(run) is not None:
        examples = len(predictions.correct(run)[0])
    if not examples:
        return mean, math.nan, math.nan, "one seed: test-set size unknown"
    low, high = significance.wilson(round(mean / 100 * examples), examples)
    return mean, low, high, f"one seed: Wilson over {examples} test examples"


def _separated_best(table: pd.DataFrame) -> pd.Series:
    """Bold only where the best mean's interval lies above every other row's in its dataset, mode and
    splits; where intervals overlap (or a row has none), no row is marked."""
    best = pd.Series(False, index=table.index)
    for _, part in table.groupby(["dataset", "mode", "splits"]):
        if len(part) < 2 or part.score_low.isna().any():
            continue
        top = part.score_mean.idxmax()
        others = part.drop(index=top)
        best[top] = bool(part.score_low[top] > others.score_high.max())
    return best


def _seed_accounting(group, unfinished: pd.DataFrame | None, dataset: str, model: str, settings: str) -> dict:
    counts = {"finished": len(group), "failed": 0, "diverged": 0, "interrupted": 0}
    if unfinished is not None and len(unfinished):
        mine = unfinished[(unfinished.dataset == dataset) & (unfinished.model == model) & (unfinished.settings == settings)]
        for outcome, count in mine.outcome.value_counts().items():
            counts[outcome] = int(count)
    return {f"seeds_{k}": v for k, v in counts.items()}


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Paper order, protocol-mode rows before notebook-mode ones within a dataset."""
    ranked = table.assign(_mode=table["mode"].map({m: i for i, m in enumerate(PREPROCESSING_MODES)}))
    return in_paper_order(ranked, between=("_mode", "splits")).drop(columns="_mode")


def _versus_baseline(model, group, baseline, predictions, baseline_name: str) -> dict:
    empty = {"delta": math.nan, "delta_low": math.nan, "delta_high": math.nan, "pairs": 0, "p": math.nan, "test": ""}
    if model == baseline_name or baseline is None:
        return empty
    comparison = significance.paired_over_seeds(dict(zip(group.seed, group.score)), dict(zip(baseline.seed, baseline.score)))
    if comparison is None:
        return empty | {"test": f"no seed in common with the {baseline_name} row"}
    if comparison.pairs == 1:
        seed = next(iter(set(group.seed) & set(baseline.seed)))
        ours = next(group[group.seed == seed].itertuples())
        base = next(baseline[baseline.seed == seed].itertuples())
        single = _single_pair(predictions, ours, base) if group.score.equals(group.top1) else None
        comparison = single or significance.Comparison(1, comparison.delta, math.nan, math.nan, math.nan, "one seed pair and no per-example predictions")
    return {"delta": comparison.delta, "delta_low": comparison.low, "delta_high": comparison.high, "pairs": comparison.pairs,
            "p": comparison.p, "test": comparison.test}


def _published(mode: str, group, cell, metric: str) -> dict:
    """The published figure (top-1 only), and whether this row reproduces it (notebook-mode runs name the cell)."""
    if cell is None or metric != "top1":
        return {"published": math.nan, "published_row": None, "reproduces": False, "deviations": ""}
    reproduces = mode == "notebook" and bool(group.published_cell.notna().all())
    deviations = sorted(set(group.published_deviations) - {"", "none"}) if reproduces else []
    return {"published": cell.top1, "published_row": cell.row, "reproduces": reproduces, "deviations": "; ".join(deviations)}


def _warnings(dataset: str, model: str, splits: str, row: dict, group, baseline: str) -> list[str]:
    found = []
    if model == BASELINE:
        found.append(references.baseline_warning(dataset, group.top1.mean()))
    chance = sorted(group.seed[group.at_chance])
    if chance:
        found.append(f"val accuracy at chance while train accuracy rose (seed {', '.join(map(str, chance))})")
    bad = [f"{row[f'seeds_{k}']} {k}" for k in ("failed", "diverged", "interrupted") if row[f"seeds_{k}"]]
    if row["seeds_failed"] or row["seeds_diverged"]:
        found.append(f"seeds not finished: {', '.join(bad)} (the statistics use the {row['n']} finished)")
    elif bad:
        found.append(f"{', '.join(bad)} seed(s): run the same command again to finish them")
    if group.environment.nunique() > 1:
        found.append("seeds ran on different hardware or software (env.* tags differ)")
    found.append(references.split_warning(dataset, splits))
    return [w for w in found if w]


def _imbalanced(runs: pd.DataFrame) -> set[str]:
    """Datasets whose majority to minority class ratio (recorded by each run) is above IMBALANCED."""
    ratios = runs.groupby("dataset").class_ratio.max()
    return {d for d, ratio in ratios.items() if ratio > IMBALANCED}


def health_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Gradient health per configuration, grouped exactly as the comparison table, with the number
    of layers each model's score is a share of."""
    varying = varying_settings(runs)
    rows = []
    for (dataset, model, settings), group in runs.groupby(["dataset", "model", "settings"], sort=False):
        config = json.loads(settings)
        rows.append(
            {
                **_leading_columns(dataset, model, config, varying),
                "analysed": _analysed(group),
                "layers": group.layers.max(),
                "health_mean": group.health.mean(),
                "health_notebook_mean": group.health_notebook.mean(),
                "vanishing_mean": group.vanishing.mean(),
                "exploding_mean": group.exploding.mean(),
                "n": len(group),
            }
        )
    return _ordered(pd.DataFrame(rows))


def _analysed(group) -> str:
    """Which batches the analysis read: count x batch size, split and forward mode."""
    analysis = json.loads(group.analysis.iloc[-1])
    batches, size = group.gradflow_batches.max(), group.gradflow_batch_size.max()
    count = f"{batches:.0f} x {size:.0f}" if not (math.isnan(batches) or math.isnan(size)) else "?"
    return f"{count} {analysis.get('gradflow.split', '?')} ({analysis.get('gradflow.mode', 'train')} mode)"
