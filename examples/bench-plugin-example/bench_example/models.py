"""tinycnn: a three-block CNN, registered like gradattn-bench's own models."""

from __future__ import annotations

import torch.nn as nn

from bench.models import ModelInfo, register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register_model(
    ModelInfo(
        name="tinycnn",
        family="example",
        description="three conv blocks and a linear head (bench-plugin-example)",
        protocol_section="-",
        options=(),
    )
)
def tinycnn(num_classes: int, in_channels: int, width: int = 32) -> nn.Module:
    return nn.Sequential(
        _block(in_channels, width),
        nn.MaxPool2d(2),
        _block(width, 2 * width),
        nn.MaxPool2d(2),
        _block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )
