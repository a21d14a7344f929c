"""Where runs go and what a worker receives with each task: the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.config.options import Keeping, Places
from bench.core import plugins
from bench.core.plugins import PluginSet


@dataclass(frozen=True)
class Destination:
    """Where runs log, read data and keep checkpoints, and what they keep: the same for every backend."""

    tracking_uri: str
    data_dir: Path
    checkpoint_root: Path
    log_model: bool = True  # bench.config.options.Keeping
    system_metrics: bool = True
    plugins: PluginSet = PluginSet()  # what the command uses, for every worker to use too

    @classmethod
    def of(cls, tracking_uri: str, places: Places, keeping: Keeping) -> "Destination":
        """Where a command's runs go (``places``, checked) and what they keep, with the plugins this
        process uses (bench.core.plugins.active)."""
        return cls(tracking_uri, places.data_dir, places.checkpoint_dir, keeping.log_model, keeping.system_metrics, plugins.active())


@dataclass(frozen=True)
class Context:
    """What a worker needs besides its task: where runs go and what they keep (with the plugins to
    use), the mailbox, the claim its runs were planned under, and, for a worker on another machine,
    the environment it needs from this one (MLflow's credentials, the BENCH_ paths: Ray's)."""

    destination: Destination
    mailbox: Path
    owner: str | None = None  # None: unclaimed runs (a study's trials)
    env: dict[str, str] = field(default_factory=dict)
