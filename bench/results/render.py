"""The report as text: Markdown (with its notes), LaTeX and the verdict as a flat table."""

from __future__ import annotations

import math

import pandas as pd

from bench.results import cost, references, significance, verdict
from bench.results.across import Across
from bench.results.rows import Options
from bench.results.runs import SHOWN_METRIC


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
    text = _fmt(row["score_mean"])
    if not math.isnan(row["score_low"]):
        text += f" [{_fmt(row['score_low'])}, {_fmt(row['score_high'])}]" + (" ¹" if row["n"] == 1 else "")
    return f"{bold}{text}{bold}" if row["best"] else text


def _delta_cell(row: dict) -> str:
    if math.isnan(row["delta"]):
        return ""
    low, high = row["delta_low"], row["delta_high"]
    interval = f" [{_fmt(low, sign=True)}, {_fmt(high, sign=True)}]" if not math.isnan(low) else ""
    return _fmt(row["delta"], sign=True) + interval


def _published_cell(row: dict) -> str:
    if math.isnan(row["published"]):
        return ""
    if row["reproduces"]:
        return f"{_fmt(row['published'])} (row {row['published_row']}){' *' if row['deviations'] else ''}"
    return f"({_fmt(row['published'])}) †"


def _seeds_cell(row: dict) -> str:
    others = [f"{row[f'seeds_{k}']} {k}" for k in ("failed", "diverged", "interrupted") if row[f"seeds_{k}"]]
    return f"{row['n']}" + (f" (+{', '.join(others)})" if others else "")


def _extra_columns(table: pd.DataFrame, last: str) -> list[str]:
    """The differing settings: the columns between `splits` and `last`."""
    columns = list(table.columns)
    return columns[columns.index("splits") + 1 : columns.index(last)]


def _markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def to_markdown(table: pd.DataFrame, health: pd.DataFrame, across: Across | None = None, options: Options | None = None) -> str:
    options = options or Options()
    shown = SHOWN_METRIC.get(options.metric, f"test {options.metric}")
    extra = _extra_columns(table, "n")
    balanced = table.balanced_mean.notna().any()
    head = ["dataset", "model", "mode", "splits", *extra, "seeds", f"{shown} (mean [95% CI])",
            *(["balanced accuracy % (imbalanced)"] if balanced else []), "best-val / last-epoch top-1",
            f"Δ vs {options.baseline} [95% CI]", "p (Holm)", "test", "published", "warnings"]
    others = table.other_settings.astype(bool).any()
    head += ["other settings (vs the mode's defaults)"] if others else []
    rows = [
        [r["dataset"], r["model"], r["mode"], r["splits"], *(str(r[c]) for c in extra), _seeds_cell(r), _mean_cell(r, "**"),
         *([_fmt(r["balanced_mean"])] if balanced else []),
         f"{_fmt(r['top1_best_mean'])} / {_fmt(r['top1_last_mean'])}", _delta_cell(r), _p(r["p_holm"]), r["test"],
         _published_cell(r), ("⚠ " + r["warnings"]) if r["warnings"] else "", *([r["other_settings"]] if others else [])]
        for r in table.to_dict("records")
    ]
    lines = [*_markdown_table(head, rows), ""]
    lines += [line for note in _notes(table, options) for line in (note, "")]
    lines += cost_markdown(table, shown)
    extra = _extra_columns(health, "analysed")
    head = ["dataset", "model", "mode", "splits", *extra, "analysed batches", "analysed layers", "gradient health %",
            "health % (notebook formula)", "vanishing", "exploding", "n"]
    rows = [
        [r["dataset"], r["model"], r["mode"], r["splits"], *(str(r[c]) for c in extra), r["analysed"], _fmt(r["layers"], 0),
         _fmt(r["health_mean"]), _fmt(r["health_notebook_mean"]), _fmt(r["vanishing_mean"], 1), _fmt(r["exploding_mean"], 1), str(r["n"])]
        for r in health.to_dict("records")
    ]
    lines += [*_markdown_table(head, rows), "", HEALTH_NOTE, ""]
    if across is not None:
        lines += across_markdown(across, options)
    return "\n".join(lines).rstrip() + "\n"


def cost_markdown(table: pd.DataFrame, shown: str) -> list[str]:
    """The cost of each row, beside its score: the means over its seeds of what its runs recorded."""
    columns = [c for c in cost.ROW_COLUMNS if table[f"{c}_mean"].notna().any()]
    if not columns:
        return []
    extra = _extra_columns(table, "n")
    head = ["dataset", "model", "mode", "splits", *extra, f"{shown} (mean)", *(cost.ROW_COLUMNS[c][0] for c in columns)]
    rows = [[r["dataset"], r["model"], r["mode"], r["splits"], *(str(r[c]) for c in extra), _fmt(r["score_mean"]),
             *(cost.shown(c, r[f"{c}_mean"]) for c in columns)] for r in table.to_dict("records")]
    return ["### Cost", "", *_markdown_table(head, rows), "", COST_NOTE, ""]


COST_NOTE = (
    "Cost: forward FLOPs per image counted at the run's input size (2 per multiply-add; bench models), training "
    "throughput over the epochs after the first, peak memory of the training device (CUDA's allocated peak, or the "
    "worker's peak resident memory on a CPU), and the time of the training and validation passes (no queue, no "
    "analysis): each the mean over the row's seeds. Times and throughputs depend on the machine (env.* tags)."
)


HEALTH_NOTE = (
    "Gradient health: the share of analysed layers that are neither vanishing nor exploding, against absolute "
    "thresholds on gradient norms, which scale with the batch size. Models with different numbers of analysed layers "
    "(the column above) are not directly comparable: a score is a share of a different whole."
)


def across_markdown(across: Across, options: Options) -> list[str]:
    lines = ["## Across datasets", ""]
    if not across.comparisons:
        return [*lines, across.note, ""]
    if across.primary:
        lines += [f"Primary comparison: {across.primary} ({across.primary_source}); every other model is exploratory "
                  "(not corrected for multiple comparisons).", ""]
    else:
        lines += ["No primary comparison was declared (`primary = \"MODEL\"` in the study file, or `bench report --primary "
                  "MODEL`): every comparison below is one of several, and the best of k variants per dataset would look "
                  "better on more datasets by chance alone.", ""]
    for comparison in across.comparisons:
        lines += [f"- {comparison.sentence()}"]
    lines += [""]
    head = ["model", "baseline", "settings", "datasets", "P(improvement) [95% CI]", "IQM (normalised) [95% CI]",
            "baseline IQM", "mean rank", "baseline rank", "better / worse / tied", "Wilcoxon p", "role"]
    rows = [[c.model, c.baseline, c.family, str(len(c.datasets)), c.improvement.shown(), c.iqm.shown(3), c.iqm_baseline.shown(3),
             c.rank.shown(), c.rank_baseline.shown(), f"{c.test.better} / {c.test.worse} / {c.test.ties}",
             _p(c.test.p), c.role or "-"] for c in across.comparisons]
    lines += [*_markdown_table(head, rows), "", ACROSS_NOTE, ""]
    if len(across.seeds):
        head = ["dataset", "seeds", "pooled seed SD", "resolves a Δ of (95%, 80% power)", "comparison", "observed Δ", "seeds needed for it"]
        rows = [[r["dataset"], str(r["seeds"]), _fmt(r["pooled_seed_sd"]), _fmt(r["resolvable_difference"]), r["comparison"],
                 _fmt(r["observed_delta"], sign=True), _needed(r)] for r in across.seeds.to_dict("records")]
        lines += ["### How many seeds", "", *_markdown_table(head, rows), "", SEEDS_NOTE, ""]
    return lines


def _needed(row: dict) -> str:
    """Seeds a difference needs: a count, more than the most shown, or nothing (no spread, no difference)."""
    needed, observed = row["seeds_needed"], row["observed_delta"]
    if needed is not None and needed == needed:
        return str(int(needed))
    return f"> {verdict.MAX_SEEDS_SHOWN}" if math.isfinite(observed) and observed != 0 and math.isfinite(row["pooled_seed_sd"]) else ""


ACROSS_NOTE = (
    "Across datasets (rliable's statistics): P(improvement) is, per dataset, the chance that a seed of the model scores "
    "above a seed of the baseline (ties one half), averaged over the datasets; IQM is the 25 % trimmed mean of "
    "chance-normalised scores, (score - chance) / (100 - chance) with chance = 100 / classes, over every run; mean rank "
    "is among the models with runs on every dataset of the comparison. Intervals: 95 % stratified bootstrap "
    f"({verdict.BOOTSTRAP_SAMPLES} resamples of the seeds within each dataset). The test over datasets is the Wilcoxon "
    "signed-rank test on the per-dataset mean differences (exact for few datasets); \"helps\" needs both the interval "
    "of P(improvement) above 1/2 and p < 0.05."
)


SEEDS_NOTE = (
    "How many seeds: the smallest seed-paired difference a paired t-test at 5 % finds with 80 % power with the current "
    "seeds, from the pooled seed spread of the dataset's configurations (a difference's spread taken as sqrt(2) times "
    "it), and the seeds the observed difference would need. Add seeds with `bench run ... --seeds 42,43,44,45,46`."
)


def _notes(table: pd.DataFrame, options: Options) -> list[str]:
    notes = [
        "Score: mean over the finished seeds with its 95 % t interval (n - 1 degrees of freedom); the headline weights "
        "follow the mode (protocol: best validation, notebook: last epoch), both sets' top-1 are shown. "
        f"Δ: this row minus the {options.baseline} row of the same settings, paired by seed, with its 95 % t interval. "
        f"p: {significance.T_TEST} where n >= {significance.MIN_PAIRS_FOR_P}, none at n = 2, and none where the difference is "
        f"the same for every seed (within {significance.CONSTANT_TOLERANCE:g} points); with a single seed pair an "
        f"{significance.MCNEMAR} and a paired bootstrap interval ({significance.BOOTSTRAP_SAMPLES} resamples). Holm's "
        "correction runs over each family: the rows of one dataset compared with the same baseline row by the same test.",
    ]
    if (table.n == 1).any():
        notes.append("¹ one seed: the interval is the test set's sampling interval (Wilson), not a spread over training runs. "
                     "A single seed measures one training run, not the architecture; add seeds with "
                     "`bench run ... --seeds 42,43,44`.")
    if not table.best.any():
        notes.append("No row is in bold: no best mean's interval lies clear of the others' in its dataset.")
    if (~table.reproduces & table.published.notna()).any():
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


def to_latex(table: pd.DataFrame, options: Options | None = None) -> str:
    options = options or Options()
    metric = SHOWN_METRIC.get(options.metric, options.metric).replace("%", "(\\%)")
    lines = [
        r"\begin{tabular}{llllrrll}",
        r"\hline",
        rf"Dataset & Model & Mode & Splits & $n$ & {metric} & "
        rf"$\Delta$ {options.baseline} & Published \\",
        r"\hline",
    ]
    for row in table.to_dict("records"):
        cell = _mean_cell(row, "").replace("¹", r"$^1$")
        if row["best"]:
            cell = rf"\textbf{{{cell}}}"
        shown = _published_cell(row).replace("†", r"$^\dagger$")
        lines.append(
            f"{row['dataset']} & {row['model']} & {row['mode']} & {row['splits']} & {row['n']} & {cell} & "
            f"{_delta_cell(row)} & {shown} \\\\"
        )
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def across_latex(across: Across) -> str:
    lines = [r"\begin{tabular}{lllrlllr}", r"\hline",
             r"Model & Baseline & Settings & Datasets & P(improvement) & IQM & Mean rank & Wilcoxon $p$ \\", r"\hline"]
    for c in across.comparisons:
        lines.append(f"{c.model} & {c.baseline} & {c.family} & {len(c.datasets)} & {c.improvement.shown()} & "
                     f"{c.iqm.shown(3)} & {c.rank.shown()} & {_p(c.test.p)} \\\\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def across_frame(across: Across) -> pd.DataFrame:
    rows = []
    for c in across.comparisons:
        rows.append({
            "model": c.model, "baseline": c.baseline, "settings": c.family, "role": c.role, "datasets": len(c.datasets),
            "dataset_names": ",".join(c.datasets), "seeds": ",".join(map(str, c.seeds)),
            "p_improvement": c.improvement.value, "p_improvement_low": c.improvement.low, "p_improvement_high": c.improvement.high,
            "iqm": c.iqm.value, "iqm_low": c.iqm.low, "iqm_high": c.iqm.high,
            "iqm_baseline": c.iqm_baseline.value, "rank": c.rank.value, "rank_low": c.rank.low, "rank_high": c.rank.high,
            "rank_baseline": c.rank_baseline.value, "better": c.test.better, "worse": c.test.worse, "ties": c.test.ties,
            "wilcoxon_p": c.test.p, "conclusion": c.conclusion, "verdict": c.sentence(),
            "parameters_ratio": c.cost.parameters if c.cost else math.nan, "flops_ratio": c.cost.flops if c.cost else math.nan,
            "train_time_ratio": c.cost.train_time if c.cost else math.nan,
        })
    return pd.DataFrame(rows)
