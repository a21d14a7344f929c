"""Study files: a grid and its settings as TOML (`studies/paper.toml`), expanded into run specs.

    seeds = [42]
    plugins = ["mypkg.models"]   # optional: modules that register models and datasets (bench.plugins)
    split_seeds = [42]  # optional: vary the split too (every seed x every split seed)
    preprocessing = "protocol"
    [train]            # any TrainConfig field
    max_epochs = 100
    [model]            # any ModelConfig field
    [gradflow]         # any GradFlowConfig field
    [datasets.pets]    # optional: a folder of class folders (bench.data.imagefolder)
    root = "data/pets" # relative to this file; image_size, channels, mean, std, batch_size optional
    [[grid]]           # one or more blocks: every dataset x every model of the block
    datasets = ["fashionmnist", "svhn"]
    models = ["all"]

Command-line options override what the file says.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from bench import plugins
from bench.errors import BenchError
from bench.spec import PROTOCOL_SPLIT_SEED, GradFlowConfig, ModelConfig, RunSpec, TrainConfig

SECTIONS = {"train": TrainConfig, "model": ModelConfig, "gradflow": GradFlowConfig}
TOP_LEVEL = {"seeds", "split_seeds", "preprocessing", "splits", "grid", "description", "name", "plugins", "datasets"}


@dataclass
class Grid:
    """Which (dataset, model) pairs, which seeds, and the settings shared by every run."""

    pairs: list[tuple[str, str]]
    seeds: list[int] = field(default_factory=lambda: [42])
    split_seeds: list[int] = field(default_factory=lambda: [PROTOCOL_SPLIT_SEED])
    preprocessing: str = "protocol"
    splits: str = "protocol"
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    gradflow: dict[str, Any] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(d for d, _ in self.pairs))

    def specs(self) -> list[RunSpec]:
        try:
            train = TrainConfig(**self.train)
            model = ModelConfig(**self.model)
            gradflow = GradFlowConfig(**self.gradflow)
        except TypeError as error:
            raise BenchError(f"Unknown setting in the study: {error}.") from None
        return [
            RunSpec(
                d, m, seed, self.preprocessing, self.splits, train, model, gradflow, split_seed=split_seed
            ).validate()
            for d, m in self.pairs
            for split_seed in self.split_seeds
            for seed in self.seeds
        ]


def pairs_from(datasets: str, models: str) -> list[tuple[str, str]]:
    """Every dataset x model pair of two user lists (`all`, names, wildcards)."""
    from bench import data
    from bench import models as model_registry

    return [(d, m) for d in data.expand(datasets) for m in model_registry.expand(models)]


def load(path: Path) -> Grid:
    """Read a study file; every mistake is a BenchError naming the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"Study file {path} does not exist; see studies/ for examples.") from None
    except tomllib.TOMLDecodeError as error:
        raise BenchError(f"Study file {path} is not valid TOML ({error}).") from None
    unknown = set(raw) - TOP_LEVEL - set(SECTIONS)
    if unknown:
        raise BenchError(f"Study file {path} has unknown keys {sorted(unknown)}; allowed: {sorted(TOP_LEVEL | set(SECTIONS))}.")
    plugins.from_study_file(raw, path)  # before the grid's names are looked up
    blocks = raw.get("grid")
    if not blocks:
        raise BenchError(f"Study file {path} has no [[grid]] block naming datasets and models.")
    pairs: list[tuple[str, str]] = []
    for block in blocks:
        if "datasets" not in block or "models" not in block:
            raise BenchError(f"Each [[grid]] block in {path} needs both `datasets` and `models`.")
        for pair in pairs_from(",".join(block["datasets"]), ",".join(block["models"])):
            if pair not in pairs:
                pairs.append(pair)
    for section, cls in SECTIONS.items():
        allowed = {f.name for f in fields(cls)}
        bad = set(raw.get(section, {})) - allowed
        if bad:
            raise BenchError(f"Study file {path}: [{section}] has unknown keys {sorted(bad)}; allowed: {sorted(allowed)}.")
    return Grid(
        pairs=pairs,
        seeds=[int(s) for s in raw.get("seeds", [42])],
        split_seeds=[int(s) for s in raw.get("split_seeds", [PROTOCOL_SPLIT_SEED])],
        preprocessing=raw.get("preprocessing", "protocol"),
        splits=raw.get("splits", "protocol"),
        train=dict(raw.get("train", {})),
        model=dict(raw.get("model", {})),
        gradflow=dict(raw.get("gradflow", {})),
    )


def override(grid: Grid, **options: Any) -> Grid:
    """Apply command-line options that were given (None means not given)."""
    updates: dict[str, Any] = {}
    for key in ("seeds", "split_seeds", "preprocessing", "splits"):
        if options.get(key) is not None:
            updates[key] = options[key]
    for section, cls in SECTIONS.items():
        given = {f.name: options[f"{section}.{f.name}"] for f in fields(cls) if options.get(f"{section}.{f.name}") is not None}
        if given:
            updates[section] = getattr(grid, section) | given
    return replace(grid, **updates)
