"""Figures of the threshold-sensitivity study: a health heat map per model and the ranking across pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.plots import pyplot


def _tick(value: float) -> str:
    return f"{value:g}"


def health_heatmap(rows: pd.DataFrame, grid, title: str, protocol_pair: tuple[float, float], path: Path) -> None:
    """Health (%) of one model over the grid: rows vanishing, columns exploding thresholds.

    Each cell shows the health score and, below it, the notebook formula's; the protocol pair is framed.
    """
    plt = pyplot()
    vanishing, exploding = list(grid.vanishing), list(grid.exploding)
    health = np.full((len(vanishing), len(exploding)), np.nan)
    notebook = np.full_like(health, np.nan)
    for row in rows.itertuples():
        i, j = vanishing.index(row.vanishing), exploding.index(row.exploding)
        health[i, j], notebook[i, j] = 100 * row.health, 100 * row.health_notebook
    fig, ax = plt.subplots(figsize=(1.6 * len(exploding) + 2.5, 1.1 * len(vanishing) + 1.8))
    image = ax.imshow(health, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    fig.colorbar(image, ax=ax, label="gradient health (%)")
    for i in range(len(vanishing)):
        for j in range(len(exploding)):
            if np.isnan(health[i, j]):
                continue
            colour = "white" if health[i, j] < 60 else "black"
            ax.text(j, i, f"{health[i, j]:.1f}\n({notebook[i, j]:.1f})", ha="center", va="center", fontsize=8, color=colour)
    if protocol_pair[0] in vanishing and protocol_pair[1] in exploding:
        i, j = vanishing.index(protocol_pair[0]), exploding.index(protocol_pair[1])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(exploding)), [_tick(e) for e in exploding])
    ax.set_yticks(range(len(vanishing)), [_tick(v) for v in vanishing])
    ax.set_xlabel("exploding threshold (mean norm above)")
    ax.set_ylabel("vanishing threshold (mean norm below)")
    ax.set_title(f"{title}\nhealth % (notebook formula %); red frame: protocol pair", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ranking_across_thresholds(table: pd.DataFrame, grid, title: str, protocol_pair: tuple[float, float], path: Path) -> None:
    """Rank of every model (1 = healthiest) at each threshold pair, for both health formulas."""
    plt = pyplot()
    pairs = grid.pairs
    labels = [f"{_tick(v)} / {_tick(e)}" for v, e in pairs]
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.55 * len(pairs) + 3), 8), sharex=True)
    for ax, column, formula in zip(axes, ("rank", "rank_notebook"), ("health", "notebook formula")):
        for k, model in enumerate(models):
            ranks = table[table["model"] == model].set_index(["vanishing", "exploding"])[column]
            offset = 0.06 * (k - (len(models) - 1) / 2)  # tied models stay visible side by side
            ax.plot(range(len(pairs)), [ranks.get(pair, np.nan) + offset for pair in pairs], marker="o", label=model)
        if protocol_pair in pairs:
            ax.axvline(pairs.index(protocol_pair), color="red", linestyle="--", linewidth=1, label="protocol pair")
        ax.set_ylim(len(models) + 0.5, 0.5)
        ax.set_yticks(range(1, len(models) + 1))
        ax.set_ylabel(f"rank by {formula}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xticks(range(len(pairs)), labels, rotation=60, ha="right", fontsize=8)
    axes[-1].set_xlabel("vanishing / exploding threshold")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
