"""Study files: a grid and its settings as TOML (`studies/paper.toml`), expanded into run specs.

    seeds = [42]
    plugins = ["mypkg.models"]   # optional: modules that register models and datasets (bench.core.plugins)
    split_seeds = [42]  # optional: vary the split too (every seed x every split seed)
    preprocessing = "protocol"
    [train]            # any train.* setting (`bench run --help` lists them)
    max_epochs = 100
    [model]            # any model.* setting
    [gradflow]         # any gradflow.* setting
    [datasets.pets]    # optional: a folder of class folders (bench.data.imagefolder)
    root = "data/pets" # relative to this file; image_size, channels, mean, std, batch_size optional
    [[grid]]           # one or more blocks: every dataset x every model of the block
    datasets = ["fashionmnist", "svhn"]
    models = ["all"]

Settings are checked against the schema of `bench/config/spec.py` (``read``): an unknown key or a wrong
value is one sentence naming the file and its table. The studies (bench.studies) read their files
through ``read`` too, with their own keys beside the runs' settings. ``--set`` on the command line
overrides what the file says.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import tomllib

from bench.config.schema import Schema
from bench.config.spec import RunSpec, Seeds, schema, seeds_schema
from bench.core import plugins
from bench.core.errors import BenchError

EVERY_FILE = ("description", "plugins", "datasets")  # keys any study file may hold
GRID_FILE = ("name", "grid", "primary")


def read(path: Path, settings: Schema, structure: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """A study file's settings, checked against ``settings``, and its ``structure`` keys as written;
    its plugins are loaded (before any name in it is looked up). Every mistake is a BenchError
    naming the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"Study file {path} does not exist; see studies/ for examples.") from None
    except tomllib.TOMLDecodeError as error:
        raise BenchError(f"Study file {path} is not valid TOML ({error}).") from None
    values, rest = settings.read_table(raw, f"study file {path}", (*EVERY_FILE, *structure))
    plugins.from_study_file(raw, path)
    return values, rest


@dataclass
class Grid:
    """Which (dataset, model) pairs, which seeds, and the settings shared by every run."""

    pairs: list[tuple[str, str]]
    seeds: Seeds = field(default_factory=Seeds)
    settings: dict[str, Any] = field(default_factory=dict)  # checked values by key (`train.lr`)
    # The model whose comparison with the baseline the grid was run for, declared before the runs
    # (recorded on each run; `bench report` labels every other comparison exploratory).
    primary: str | None = None

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(d for d, _ in self.pairs))

    def overridden(self, seeds: Iterable[int] | None = None, split_seeds: Iterable[int] | None = None, settings: dict[str, Any] | None = None) -> Grid:
        """This grid with what the command line or the caller gave (None: not given) on top: checked
        seeds and checked settings by key."""
        given = {name: tuple(value) for name, value in (("seeds", seeds), ("split_seeds", split_seeds)) if value is not None}
        return replace(self, seeds=replace(self.seeds, **given), settings=self.settings | (settings or {}))

    def specs(self) -> list[RunSpec]:
        return [
            RunSpec.from_settings(self.settings, d, m, seed=seed, split_seed=split_seed).validate()
            for d, m in self.pairs
            for split_seed in self.seeds.or_defaults().split_seeds
            for seed in self.seeds.or_defaults().seeds
        ]


def pairs_from(datasets: str, models: str) -> list[tuple[str, str]]:
    """Every dataset x model pair of two user lists (`all`, names, wildcards)."""
    from bench import data
    from bench import models as model_registry

    return [(d, m) for d in data.expand(datasets) for m in model_registry.expand(models)]


def load(path: Path) -> Grid:
    """Read a grid's study file; every mistake is a BenchError naming the file."""
    values, raw = read(path, schema() | seeds_schema(), GRID_FILE)
    seeds = {name: values.pop(name) for name in ("seeds", "split_seeds") if name in values}
    blocks = raw.get("grid")
    if not blocks:
        raise BenchError(f"Study file {path} has no [[grid]] block naming datasets and models.")
    pairs: list[tuple[str, str]] = []
    for block in blocks:
        if not isinstance(block, dict) or "datasets" not in block or "models" not in block:
            raise BenchError(f"Each [[grid]] block in {path} needs both `datasets` and `models`.")
        for pair in pairs_from(",".join(block["datasets"]), ",".join(block["models"])):
            if pair not in pairs:
                pairs.append(pair)
    primary = raw.get("primary")
    if primary is not None and primary not in {m for _, m in pairs}:
        raise BenchError(f"Study file {path}: primary = {primary!r} is not a model of its grid; name one of {', '.join(dict.fromkeys(m for _, m in pairs))}.")
    return Grid(pairs=pairs, seeds=Seeds(**seeds), settings=values, primary=primary)
