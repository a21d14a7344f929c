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
