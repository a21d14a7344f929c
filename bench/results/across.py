"""The verdict across datasets, from the per-dataset table: each model against each baseline within
one family of settings (bench.results.verdict computes the statistics), and how many seeds each
dataset would need."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from bench.core.errors import BenchError
from bench.results import verdict
from bench.results.cost import cost_ratio
from bench.results.rows import Options
from bench.results.runs import BASELINE


@dataclass
class Across:
    """The verdict: each model against each baseline over the datasets of one settings family."""

    comparisons: list[verdict.Comparison] = field(default_factory=list)
    seeds: pd.DataFrame = field(default_factory=pd.DataFrame)  # per dataset: how many seeds resolve what
    primary: str | None = None
    primary_source: str = ""
    note: str = ""  # why there is no comparison, when there is none


def across_datasets(runs: pd.DataFrame, table: pd.DataFrame, options: Options) -> Across:
    """Every model against every baseline, within each family of settings (mode, splits, split seed,
    and the overrides of the baseline row), over the datasets where both have finished seeds."""
    known = set(runs.model)
    for name in options.baselines:
        if name not in known:
            raise BenchError(f"--baseline {name} has no finished runs in this experiment; choose from: {', '.join(sorted(known))}.")
    baselines = options.baselines or ((BASELINE,) if BASELINE in known else ())
    if not baselines:
        return Across(note=f"No comparison across datasets: {BASELINE} has no runs here; name a baseline with --baseline MODEL.")
    primary, source = options.primary, "--primary"
    if primary is None and "primary" in runs and runs.primary.notna().any():
        primary, source = runs.primary.dropna().iloc[-1], "declared in the study file before the runs"
    if primary is not None and primary not in known:
        raise BenchError(f"--primary {primary} has no finished runs in this experiment; choose from: {', '.join(sorted(known))}.")
    classes = runs.groupby("dataset").num_classes.max().to_dict()
    comparisons = []
    family_of = {row["settings"]: _family(row) for row in table.to_dict("records")}
    for baseline in baselines:
        base_rows = table[table.model == baseline]
        for family in dict.fromkeys(family_of[s] for s in base_rows.settings):
            keys = {(r["dataset"], r["baseline_key"]) for r in base_rows.to_dict("records") if family_of[r["settings"]] == family}
            members = table[[(d, k) in keys for d, k in zip(table.dataset, table.baseline_key)]]
            scores: verdict.Scores = {}
            rows: dict[str, dict[str, dict]] = {}  # variant -> dataset -> its row of the table (its cost)
            for row in members.to_dict("records"):
                seeds = runs[(runs.dataset == row["dataset"]) & (runs.model == row["model"]) & (runs.settings == row["settings"])].score
                scores.setdefault(_variant(row, members), {})[row["dataset"]] = seeds.to_numpy()
                rows.setdefault(_variant(row, members), {})[row["dataset"]] = row
            for model in scores:
                if model == baseline or not any(d in scores[baseline] for d in scores[model]):
                    continue
                role = "primary" if model.split(" (")[0] == primary else "exploratory" if primary is not None else ""
                found = verdict.compare(model, baseline, scores, classes, family, role)
                found.cost = cost_ratio(rows[model], rows[baseline], found.datasets)
                comparisons.append(found)
    order = {m: i for i, m in enumerate([primary or ""])}
    comparisons.sort(key=lambda c: (order.get(c.model, 1), c.baseline != options.baseline))
    note = "" if comparisons else f"No model shares a dataset and its settings with {', '.join(baselines)}."
    return Across(comparisons, _seeds_table(runs, table, comparisons), primary, source if primary else "", note)


def _variant(row: dict, members: pd.DataFrame) -> str:
    """The model's name, with the settings that tell its configurations apart where the family holds
    several of it (say two widths): each is compared on its own."""
    mine = [json.loads(s) for s in members[members.model == row["model"]].settings.unique()]
    if len(mine) == 1:
        return row["model"]
    config = json.loads(row["settings"])
    differing = sorted(k for k in set().union(*mine) if len({str(c.get(k)) for c in mine}) > 1 and k.startswith("model_config."))
    shown = ", ".join(f"{key.rsplit('.', 1)[-1]}={config.get(key)}" for key in differing)
    return f"{row['model']} ({shown})" if differing else row["model"]


def _family(row: dict) -> str:
    """What the datasets of one comparison share: mode, splits and split seed, and any training
    setting that departs from its default."""
    from dataclasses import asdict

    from bench.config.spec import TrainConfig

    config = json.loads(row["settings"])
    changed = [f"{key}={config[f'train.{key}']}" for key, default in asdict(TrainConfig()).items()
               if default is not None and f"train.{key}" in config and str(config[f"train.{key}"]) != str(default)]
    return ", ".join([f"{row['mode']} mode", f"{config['splits']} splits (split seed {config['split_seed']})", *sorted(changed)])


def _seeds_table(runs: pd.DataFrame, table: pd.DataFrame, comparisons) -> pd.DataFrame:
    """Per dataset, from the pooled seed spread of its configurations: the smallest difference the
    current seeds resolve, and the seeds each shown comparison's observed Δ needs (the primary's
    where one is declared, else every comparison with the first baseline)."""
    shown = [c for c in comparisons if c.role == "primary"] or [c for c in comparisons if comparisons and c.baseline == comparisons[0].baseline]
    rows = []
    for dataset, part in table.groupby("dataset", sort=False):
        spread = [(row["n"] - 1, row["score_std"] ** 2) for row in part.to_dict("records") if row["n"] > 1]
        dof = sum(d for d, _ in spread)
        pooled = math.sqrt(sum(d * v for d, v in spread) / dof) if dof else math.nan
        seeds = int(part.n.min())
        common = {"dataset": dataset, "seeds": seeds, "pooled_seed_sd": pooled, "resolvable_difference": verdict.resolvable_difference(pooled, seeds)}
        for comparison in (c for c in shown if dataset in c.differences):
            observed = comparison.differences[dataset]
            rows.append(common | {"comparison": f"{comparison.model} vs {comparison.baseline}", "observed_delta": observed,
                                  "seeds_needed": verdict.seeds_needed(pooled, observed)})
    return pd.DataFrame(rows)
