"""ResNet-18 and its SE / CBAM variants, exactly as the original notebooks built them (protocol 1.1-1.4).

One architecture class, ``ResNet``, parameterised by its block (plain, SE or CBAM). ``ResNetBody``
(the ImageNet-style stem and four stages of two blocks) is shared with GradAttn, which swaps in a
non-residual block and its own head.

Module names are those of the notebooks' printed reports (``conv1``, ``layer1``..``layer4``,
``se.excitation``, ``cbam.channel_attention.shared_mlp``), and so is the registration order inside a
block (convs, then the attention module, then the ``downsample`` shortcut): the gradient-flow analyzer
names hooks by qualified name and registration index (protocol 5.2, 6.4).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from bench.models._registry import ModelInfo, register_model
from bench.models.init import InitPolicy, check_init, initialise, kaiming_fan_out, keep_pytorch_defaults

STAGE_CHANNELS = (64, 128, 256, 512)
STEM_CHANNELS = 64
RESNET_OPTIONS = ("init",)


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class TwoConvs(nn.Module):
    """The layers every block of both families has: conv3x3-BN-ReLU-conv3x3-BN; subclasses wire them."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)


class BasicBlock(TwoConvs):
    """conv3x3-BN-ReLU-conv3x3-BN (-> attention) + shortcut -> ReLU (protocol 1.2).

    Subclasses add a channel/spatial attention module between the second BN and the addition
    (protocol 1.3, 1.4) by overriding ``add_attention`` and ``attend``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, planes, stride)
        # Registered before the shortcut, as in the notebooks (protocol 5.2 hook indices).
        self.add_attention(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def add_attention(self, channels: int) -> None:
        """Plain ResNet blocks have none."""

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attend(self.bn2(self.conv2(out)))
        out += identity  # in place on the main branch, as in the original
        return self.relu(out)


def _hidden(channels: int, reduction: int) -> int:
    return max(1, channels // reduction)


class SqueezeExcitation(nn.Module):
    """Protocol 1.3: pool -> [Flatten, Linear(C, C/r), ReLU, Linear(C/r, C), Sigmoid] -> scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excitation = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.excitation(self.squeeze(x))
        return x * weights.view(x.shape[0], x.shape[1], 1, 1)


class ChannelAttention(nn.Module):
    """Protocol 1.4: avg- and max-pooled descriptors through one shared 1x1-conv MLP, summed."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.shared_mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.shared_mlp(self.avg_pool(x)) + self.shared_mlp(self.max_pool(x))
        return x * self.sigmoid(weights)


class SpatialAttention(nn.Module):
    """Protocol 1.4: [mean, max] over channels -> 7x7 conv -> sigmoid -> scale every pixel."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel attention, then spatial attention (sequential), protocol 1.4."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction)
        self.spatial_attention = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))


class SEBasicBlock(BasicBlock):
    def add_attention(self, channels: int) -> None:
        self.se = SqueezeExcitation(channels)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(x)


class CBAMBasicBlock(BasicBlock):
    def add_attention(self, channels: int) -> None:
        self.cbam = CBAM(channels)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(x)


class ResNetBody(nn.Module):
    """The ImageNet-style stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and four stages of two blocks.

    Used unchanged on 28- and 32-pixel inputs, where layer4 sees 1x1 maps (protocol 1.1, 7.11).
    """

    def __init__(self, block: type[nn.Module], in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = STEM_CHANNELS
        for index, planes in enumerate(STAGE_CHANNELS, start=1):
            stride = 1 if index == 1 else 2  # only a stage's first block strides
            stage = nn.Sequential(block(in_planes, planes, stride), block(planes, planes, 1))
            self.add_module(f"layer{index}", stage)
            in_planes = planes

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem output (after the max-pool) and the output of each of the four stages."""
        outputs = [self.maxpool(self.relu(self.bn1(self.conv1(x))))]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            outputs.append(stage(outputs[-1]))
        return outputs


class ResNet(ResNetBody):
    """ResNet-18-style classifier: body, global average pool, Linear(512 -> K) (protocol 1.2)."""

    def __init__(self, block: type[BasicBlock], num_classes: int, in_channels: int) -> None:
        super().__init__(block, in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_CHANNELS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stage_outputs(x)[-1]
        return self.fc(torch.flatten(self.avgpool(features), 1))


def _resnet(
    block: type[BasicBlock], own_policy: InitPolicy, num_classes: int, in_channels: int, init: str
) -> ResNet:
    check_init(init)
    return initialise(ResNet(block, num_classes, in_channels), init, own_policy)


def _resolved_options(init: str = "per-model") -> dict[str, str]:
    return {"init": check_init(init)}


def _register(name: str, description: str, section: str):
    return register_model(ModelInfo(name, "resnet", description, section, RESNET_OPTIONS), resolver=_resolved_options)


@_register("resnet18", "ResNet-18 (ImageNet stem, basic blocks, projection shortcuts)", "1.2")
def resnet18(num_classes: int, in_channels: int, init: str = "per-model") -> ResNet:
    return _resnet(BasicBlock, keep_pytorch_defaults, num_classes, in_channels, init)


@_register("senet18", "SE-ResNet-18 (squeeze-and-excitation in every block, r=16)", "1.3")
def senet18(num_classes: int, in_channels: int, init: str = "per-model") -> ResNet:
    return _resnet(SEBasicBlock, kaiming_fan_out, num_classes, in_channels, init)


@_register("cbam18", "CBAM-ResNet-18 (channel then spatial attention in every block)", "1.4")
def cbam18(num_classes: int, in_channels: int, init: str = "per-model") -> ResNet:
    return _resnet(CBAMBasicBlock, kaiming_fan_out, num_classes, in_channels, init)
