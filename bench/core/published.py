"""The notebooks' printed results (protocol section 6, `resources/notebook_results.csv`) and parameter
counts (protocol 1.10, `resources/parameter_counts.csv`), by our names.

A "published cell" is one row of that file: the final metrics of one (dataset, model) notebook cell.
Notebook-mode runs record the row they reproduce; `bench report` puts its figure beside them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

RESOURCE = "resources/notebook_results.csv"
PARAMETER_COUNTS = "resources/parameter_counts.csv"
# The notebooks' names for our datasets and models.
NOTEBOOK_DATASETS = {
    "CIFAR-10": "cifar10", "FashionMNIST": "fashionmnist", "SVHN": "svhn", "BloodMNIST": "bloodmnist",
    "TissueMNIST": "tissuemnist", "PCam": "pcam", "PAD-UFES-20": "pad-ufes-20", "Tiny-ImageNet": "tiny-imagenet",
}
NOTEBOOK_MODELS = {
    "ResNet-18": "resnet18", "SE-ResNet-18": "senet18", "CBAM-ResNet-18": "cbam18",
    "GradAttn-NoPE": "gradattn-nope", "GradAttn-LPE": "gradattn-lpe", "GradAttn-RoPE": "gradattn-rope",
}


@dataclass(frozen=True)
class Cell:
    row: int  # 1-based data row of notebook_results.csv (the header is row 0)
    dataset: str
    model: str
    version: str
    transformer: str  # "d/h/ff" for GradAttn, "" for the ResNets
    top1: float  # test top-1, %

    @property
    def label(self) -> str:
        return f"notebook_results.csv row {self.row}"


@lru_cache(maxsize=1)
def cells() -> tuple[Cell, ...]:
    """Every published cell of the current notebooks, plus Tiny ImageNet's only (2025) version;
    the superseded 2025 No-PE runs are left out (protocol 0.2)."""
    return tuple(
        Cell(
            row=number,
            dataset=NOTEBOOK_DATASETS[row["dataset"]],
            model=NOTEBOOK_MODELS[row["model"]],
            version=row["notebook_version"],
            transformer=row["transformer_d_h_ff"],
            top1=float(row["test_top1_pct"]),
        )
        for number, row in enumerate(_rows(RESOURCE), start=1)
        if "superseded" not in row["notebook_version"]
    )


def cell(dataset: str, model: str) -> Cell | None:
    """The published cell of (dataset, model), or None where the notebooks did not run it."""
    return next((c for c in cells() if c.dataset == dataset and c.model == model), None)


def parameter_counts(model: str) -> dict[tuple[int, int], int]:
    """(in_channels, num_classes) -> the total parameters the notebooks printed for ``model`` with its
    published defaults; empty for a model they never built (a plugin's, timm's)."""
    return {(channels, classes): count for name, channels, classes, count in _parameter_table() if name == model}


@lru_cache(maxsize=1)
def _parameter_table() -> tuple[tuple[str, int, int, int], ...]:
    return tuple(
        (row["model"], int(row["in_channels"]), int(row["num_classes"]), int(row["parameters"])) for row in _rows(PARAMETER_COUNTS)
    )


def _rows(resource: str) -> list[dict[str, str]]:
    with resources.files("bench").joinpath(resource).open() as handle:
        return list(csv.DictReader(handle))
