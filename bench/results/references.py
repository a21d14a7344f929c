"""Sanity checks of a result against what is known: literature accuracies of ResNet-18 per dataset
(`resources/reference_accuracies.csv`, each with its source), and training that never generalised.

These are warnings beside a row, never a refusal: they would have flagged the notebooks' CIFAR-10
(14 %) and FashionMNIST (64 %) baselines, which the doubly transformed training images broke
(protocol 7.1).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

RESOURCE = "resources/reference_accuracies.csv"
FAR_BELOW = 0.75  # a baseline under 3/4 of its literature accuracy is flagged
CHANCE_BAND = 0.10  # "at chance": best val accuracy within 10 % of the way from chance to perfect
TRAIN_RISE = 0.10  # ... while training accuracy rose by at least 10 points
LEAKY_SPLITS = {("pad-ufes-20", "protocol"): "leaky: image-level split, lesions in train and test (protocol 7.8)"}


@dataclass(frozen=True)
class Reference:
    dataset: str
    top1: float | None  # %; None where no published ResNet-18 figure exists (the source says so)
    approximate: bool
    source: str

    @property
    def shown(self) -> str:
        if self.top1 is None:
            return "no published figure"
        return f"{'~' if self.approximate else ''}{self.top1:g} %"


@lru_cache(maxsize=1)
def table() -> dict[str, Reference]:
    with resources.files("bench").joinpath(RESOURCE).open() as handle:
        return {
            row["dataset"]: Reference(
                row["dataset"],
                float(row["resnet18_top1_pct"]) if row["resnet18_top1_pct"].strip() else None,
                row["approximate"] == "yes",
                row["source"],
            )
            for row in csv.DictReader(handle)
        }


def baseline_warning(dataset: str, top1_mean: float) -> str | None:
    """A warning when a ResNet-18 row lies far below the literature figure for its dataset."""
    reference = table().get(dataset)
    if reference is None or reference.top1 is None or not top1_mean < FAR_BELOW * reference.top1:
        return None
    return f"baseline far below the literature ResNet-18 ({reference.shown}): check the pipeline"


def at_chance_while_training(best_val_acc: float, train_acc: list[float], num_classes: int) -> bool:
    """Validation accuracy never left chance while training accuracy rose (fractions 0..1)."""
    if num_classes < 2 or len(train_acc) < 2:
        return False
    chance = 1 / num_classes
    return best_val_acc <= chance + CHANCE_BAND * (1 - chance) and max(train_acc) - train_acc[0] >= TRAIN_RISE


def split_warning(dataset: str, splits: str) -> str | None:
    return LEAKY_SPLITS.get((dataset, splits))
