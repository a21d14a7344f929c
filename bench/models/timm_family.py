"""timm models by prefixed name: ``timm/resnet10t`` is any architecture timm can build.

Always from random initialisation (``pretrained=False``): a benchmark trains from scratch, and the
weights would have to be downloaded. Needs the ``timm`` extra (``pip install 'gradattn-bench[timm]'``);
timm is imported only when such a name is used.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from bench.core.errors import BenchError
from bench.models._registry import _MODELS, Builder, ModelInfo, _Entry

PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError:
        raise BenchError("timm models need the timm extra: pip install 'gradattn-bench[timm]'.") from None
    return timm


def names(pattern: str = "*") -> list[str]:
    """The prefixed names of the architectures timm can build that match a shell wildcard."""
    return [PREFIX + name for name in _timm().list_models(pattern)]


def entry(architecture: str) -> tuple[ModelInfo, Builder]:
    """The catalogue entry of ``timm/<architecture>``; a BenchError for one timm does not have."""
    timm = _timm()
    if not timm.is_model(architecture):
        raise BenchError(
            f"timm {timm.__version__} has no model {architecture!r}; list them with `bench models --timm 'PATTERN'`."
        )
    info = ModelInfo(
        name=PREFIX + architecture,
        family="timm",
        description=f"timm {timm.__version__} {architecture}, random initialisation",
        protocol_section="-",
        options=(),
    )

    def build(num_classes: int, in_channels: int, **options: Any) -> nn.Module:
        return timm.create_model(architecture, pretrained=False, num_classes=num_classes, in_chans=in_channels)

    return info, build


def register_prefix() -> None:
    """Make every ``timm/<architecture>`` name resolve in the model registry, built on demand."""
    _MODELS.add_prefix(PREFIX, lambda architecture: _Entry(*entry(architecture)))
