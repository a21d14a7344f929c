"""Small matplotlib figures shared by runs and reports (Agg backend, imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion, class_names: Sequence[str] | None, path: Path) -> None:
    plt = pyplot()
    k = len(confusion)
    size = min(4 + 0.35 * k, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    labels = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if k <= 40:  # past that, tick labels are unreadable anyway
        ax.set_xticks(range(k), labels, rotation=90)
        ax.set_yticks(range(k), labels)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, int(confusion[i][j]), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _row_label(row: dict, extra: Sequence[str]) -> str:
    settings = ", ".join(f"{key.split('.')[-1]}={row[key]}" for key in extra)
    flag = "(!) " if row["warnings"] else ""  # the table says what
    return f"{flag}{row['model']} ({row['mode']}{', ' + settings if settings else ''})"


def plot_comparison(table, runs, path: Path) -> None:
    """One panel per dataset: each configuration's seeds (dots) and mean with its 95 % interval,
    the published figure beside it; the axis spans the data, not 0-100."""
    import math

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
            seeds = runs[(runs.dataset == dataset) & (runs.model == row["model"]) & (runs.settings == row["settings"])].top1
            ax.scatter(seeds, [y] * len(seeds), s=12, color="0.55", zorder=2, label=None if "seed" in shown else "one seed")
            shown.add("seed")
            half = 0.0 if math.isnan(row["top1_ci"]) else row["top1_ci"]
            color = "tab:blue" if row["mode"] == "protocol" else "tab:orange"
            ax.errorbar(row["top1_mean"], y, xerr=half, fmt="o", color=color, capsize=4, zorder=3,
                        label=None if row["mode"] in shown else f"{row['mode']} mode: mean ± 95% CI")
            shown.add(row["mode"])
            values += [*seeds, row["top1_mean"] - half, row["top1_mean"] + half]
            if not math.isnan(row["published_top1"]):
                kind = "published (reproduced)" if row["reproduces"] else "published (other mode)"
                ax.scatter(row["published_top1"], y + 0.25, marker="D", s=30, zorder=4,
                           facecolors="tab:red" if row["reproduces"] else "none", edgecolors="tab:red",
                           label=None if kind in shown else kind)
                shown.add(kind)
                values.append(row["published_top1"])
        low, high = min(values), max(values)
        pad = max(0.5, 0.08 * (high - low))
        ax.set_xlim(max(0.0, low - pad), min(100.0, high + pad))
        ax.set_yticks(range(len(rows)), [_row_label(r, extra) for r in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(dataset, fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("test top-1 (%)")
    fig.legend(loc="upper right", fontsize=7, ncols=2)
    fig.suptitle("Test top-1 per configuration (axis fitted to the data)", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)
