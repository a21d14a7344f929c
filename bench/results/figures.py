"""The report's figures: each configuration's score with its interval per dataset, and the verdict's
intervals across datasets (rliable's interval plot)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from bench.core.plots import pyplot


def _row_label(row: dict, extra: Sequence[str]) -> str:
    settings = ", ".join(f"{key.split('.')[-1]}={row[key]}" for key in extra)
    flag = "(!) " if row["warnings"] else ""  # the table says what
    return f"{flag}{row['model']} ({row['mode']}{', ' + settings if settings else ''})"


def plot_comparison(table, runs, path: Path, metric_label: str = "test top-1 (%)") -> list[str]:
    """One panel per dataset: each configuration's seeds (dots) and mean with its 95 % interval over
    seeds, or at one seed the test-set sampling interval (hollow, labelled so), the published figure
    beside it; the axis spans the data, not 0-100."""
    plt = pyplot()
    columns = list(table.columns)
    extra = columns[columns.index("splits") + 1 : columns.index("n")]
    datasets = list(dict.fromkeys(table.dataset))
    heights = [max(2.0, 0.45 * (table.dataset == d).sum() + 1.2) for d in datasets]
    fig, axes = plt.subplots(len(datasets), 1, figsize=(9, sum(heights)), height_ratios=heights, squeeze=False)
    shown = set()
    for ax, dataset in zip(axes[:, 0], datasets):
        rows = table[table.dataset == dataset].to_dict("records")
        values = []
        for y, row in enumerate(rows):
            seeds = runs[(runs.dataset == dataset) & (runs.model == row["model"]) & (runs.settings == row["settings"])].score
            ax.scatter(seeds, [y] * len(seeds), s=12, color="0.55", zorder=2, label=None if "seed" in shown else "one seed")
            shown.add("seed")
            low, high = row["score_low"], row["score_high"]
            color = "tab:blue" if row["mode"] == "protocol" else "tab:orange"
            single = row["n"] == 1
            kind = f"{row['mode']} mode: " + ("one seed, 95% test-set interval (Wilson)" if single else "mean ± 95% CI over seeds")
            errors = [[row["score_mean"] - low], [high - row["score_mean"]]] if not math.isnan(low) else None
            ax.errorbar(row["score_mean"], y, xerr=errors, fmt="o", color=color, capsize=4, zorder=3,
                        mfc="white" if single else color, ls="--" if single else "-", label=None if kind in shown else kind)
            shown.add(kind)
            values += [*seeds, *([low, high] if not math.isnan(low) else [])]
            if not math.isnan(row["published"]):
                label = "published (reproduced)" if row["reproduces"] else "published (other mode)"
                ax.scatter(row["published"], y + 0.25, marker="D", s=30, zorder=4,
                           facecolors="tab:red" if row["reproduces"] else "none", edgecolors="tab:red",
                           label=None if label in shown else label)
                shown.add(label)
                values.append(row["published"])
        low, high = min(values), max(values)
        pad = max(0.5, 0.08 * (high - low))
        ax.set_xlim(max(-pad, low - pad), min(100.0 + pad, high + pad))  # a dot at 0 or 100 stays whole
        ax.set_yticks(range(len(rows)), [_row_label(r, extra) for r in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(dataset, fontsize=10, loc="left")
    axes[-1, 0].set_xlabel(metric_label)
    fig.legend(loc="upper right", fontsize=7, ncols=2)
    fig.suptitle(f"{metric_label.capitalize()} per configuration (axis fitted to the data)", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return sorted(label for label in shown if label != "seed")


def plot_verdict(comparisons, path: Path) -> None:
    """rliable's interval plot: per comparison, the probability of improvement, the IQM of
    chance-normalised scores (model and baseline) and the mean rank, each with its 95 % stratified
    bootstrap interval; exploratory comparisons in grey."""
    plt = pyplot()
    panels = [
        ("P(improvement over baseline)", lambda c: [(c.model, c.improvement)], 0.5),
        ("IQM of chance-normalised score", lambda c: [(c.model, c.iqm), (c.baseline, c.iqm_baseline)], None),
        ("mean rank (1 = best)", lambda c: [(c.model, c.rank), (c.baseline, c.rank_baseline)], None),
    ]
    rows = len(comparisons)
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 1.2 + 0.75 * rows), squeeze=False)
    for ax, (title, points, reference) in zip(axes[0], panels):
        labels = []
        for y, comparison in enumerate(comparisons):
            color = "0.6" if comparison.role == "exploratory" else "tab:blue"
            for offset, (name, estimate) in zip((0.0, 0.22), points(comparison)):
                shade = color if offset == 0 else "tab:gray"
                spread = None if math.isnan(estimate.low) else [[estimate.value - estimate.low], [estimate.high - estimate.value]]
                ax.errorbar(estimate.value, y + offset, xerr=spread, fmt="o" if offset == 0 else "s", color=shade, capsize=3, ms=5)
            labels.append(f"{comparison.model} vs {comparison.baseline}\n{len(comparison.datasets)} datasets ({comparison.family})")
        if reference is not None:
            ax.axvline(reference, color="tab:red", lw=0.8, ls=":")
        ax.set_yticks(range(rows), labels if ax is axes[0][0] else [""] * rows, fontsize=7)
        ax.set_ylim(rows - 0.5, -0.6)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(title, fontsize=9)
    fig.suptitle("Across datasets: 95% stratified bootstrap intervals (circles: model; squares: baseline; grey: exploratory)",
                 fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=120)
    plt.close(fig)
