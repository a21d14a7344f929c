"""tiny: a small CNN for the tests where the model does not matter (tracking, scheduling, races),
registered through the plugin route a user's own model takes (``--plugin``). The kill and resume
tests keep ResNet-18: a tiny epoch ends before a kill can land.

Its layers are those the gradient-flow analysis and the checkpoints see in every model here
(convolutions, batch statistics, a linear head); it trains a digits or synthetic epoch in a
fraction of a second on one CPU thread.
"""

from __future__ import annotations

import torch.nn as nn

from bench.models import ModelInfo, register_model


def _two_blocks(num_classes: int, in_channels: int, width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


@register_model(ModelInfo("tiny", "test", "two conv blocks and a linear head (tests/plugins)", "-", ()))
def tiny(num_classes: int, in_channels: int) -> nn.Module:
    return _two_blocks(num_classes, in_channels, 8)


@register_model(ModelInfo("tiny-wide", "test", "tiny with twice the channels: a second model to compare (tests/plugins)", "-", ()))
def tiny_wide(num_classes: int, in_channels: int) -> nn.Module:
    return _two_blocks(num_classes, in_channels, 16)
