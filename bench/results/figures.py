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


FRONT_AXES = (("gflops_mean", "forward GFLOPs per image"), ("train_time_s_mean", "training time (s)"))


def cost_axes(table) -> list[tuple[str, str]]:
    """The costs the front can be drawn against: those some row recorded."""
    return [(column, label) for column, label in FRONT_AXES if table[column].notna().any()]


def plot_cost_front(table, path: Path, metric_label: str = "test top-1 (%)") -> None:
    """Per dataset (a row of panels), each configuration's score with its interval against its forward
    GFLOPs and against its training time (log scale where they span decades): the accuracy/cost front, the configurations no
    other beats at lower cost joined by a line. Draw it where `cost_axes(table)` has any."""
    from matplotlib import ticker

    axes_shown = cost_axes(table)
    plt = pyplot()
    columns = list(table.columns)
    extra = columns[columns.index("splits") + 1 : columns.index("n")]
    datasets = list(dict.fromkeys(table.dataset))
    fig, axes = plt.subplots(len(datasets), len(axes_shown), figsize=(5.5 * len(axes_shown) + 2.5, 3.4 * len(datasets)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row_axes, dataset in zip(axes, datasets):
        rows = table[table.dataset == dataset].to_dict("records")
        for ax, (column, label) in zip(row_axes, axes_shown):
            placed = [r for r in rows if not math.isnan(r[column])]
            for i, row in enumerate(placed):
                low, high = row["score_low"], row["score_high"]
                errors = [[row["score_mean"] - low], [high - row["score_mean"]]] if not math.isnan(low) else None
                ax.errorbar(row[column], row["score_mean"], yerr=errors, fmt="o", capsize=3, color=colors[i % len(colors)],
                            mfc="white" if row["n"] == 1 else colors[i % len(colors)], label=_row_label(row, extra))
            front = _front([(r[column], r["score_mean"]) for r in placed])
            if len(front) > 1:
                ax.plot(*zip(*front), color="0.6", lw=0.8, ls="--", zorder=1)
            costs = [r[column] for r in placed]
            if costs and min(costs) > 0 and max(costs) / min(costs) > 10:  # a log axis where costs span decades
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            ax.margins(x=0.15)
            scores = [v for r in placed for v in (r["score_low"], r["score_high"], r["score_mean"]) if not math.isnan(v)]
            if scores:  # an interval past 0 or 100 (few seeds) is cut at the possible range
                ax.set_ylim(max(min(scores), 0.0) - 2, min(max(scores), 100.0) + 2)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel(metric_label, fontsize=8)
            ax.grid(alpha=0.3, which="both")
            ax.set_title(dataset, fontsize=10, loc="left")
        row_axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the panel: no point hidden
    fig.suptitle(f"{metric_label.capitalize()} against cost (mean and 95% interval; hollow: one seed; dashed: the front)",
                 fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats at equal or lower cost, by increasing cost."""
    front, best = [], -math.inf
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((cost, score))
            best = score
    return front
