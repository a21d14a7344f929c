"""GradAttn: a non-residual ResNet-18 backbone whose five depth levels are tokens for a transformer.

Protocol 1.5-1.8. The stem output and the four stage outputs are each average-pooled and projected
to ``d_model`` (one Linear per token), stacked shallow-to-deep into a [B, 5, d] sequence, encoded,
averaged over the tokens and classified. The three variants differ in their position scheme: none
(``gradattn-nope``), a learned table added to the tokens (``gradattn-lpe``) or rotary embedding on
queries and keys (``gradattn-rope``).

``encoder="published"`` (the builders' default, and notebook mode's) builds the encoders exactly as
published, which differ in more than the position scheme (protocol 7.4); ``encoder="shared"``
(protocol mode's default) builds all three from one layer implementation (``encoder.py``) so only
the position scheme differs. ``preset="nope-small"`` is the 32/16/2 configuration most published
No-PE runs actually used (protocol 7.3); a preset applies only to the models it names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from bench.core.errors import BenchError
from bench.models._registry import ModelInfo, register_model
from bench.models.encoder import shared_encoder
from bench.models.init import check_init, initialise, keep_pytorch_defaults
from bench.models.resnet import STAGE_CHANNELS, STEM_CHANNELS, ResNetBody, TwoConvs
from bench.models.rope import LayerStack, RoPEEncoderLayer

TOKEN_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")
TOKEN_CHANNELS = (STEM_CHANNELS, *STAGE_CHANNELS)
GRADATTN_OPTIONS = (
    "num_layers", "d_model", "nhead", "dim_feedforward", "dropout", "init", "encoder", "preset"
)
ENCODER_CHOICES = ("published", "shared")


@dataclass(frozen=True)
class Preset:
    models: tuple[str, ...]  # the only models it applies to
    sizes: dict[str, int]


NO_PRESET = "none"  # spelled out: the published 256/8/512 even where a mode would pick a preset
# protocol 7.3: the No-PE configuration of the CIFAR-10, TissueMNIST, PCam, PAD-UFES-20 and
# Tiny ImageNet (2025) notebooks (head dim 2, feed-forward width 2).
PRESETS: dict[str, Preset] = {
    "nope-small": Preset(("gradattn-nope",), {"d_model": 32, "nhead": 16, "dim_feedforward": 2}),
}


def check_preset(preset: str | None) -> None:
    if preset is not None and preset != NO_PRESET and preset not in PRESETS:
        raise BenchError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)} or {NO_PRESET}.")


def preset_for(preset: str | None, model: str) -> str | None:
    """The preset as it applies to ``model``: None where it names other models (or is ``none``)."""
    check_preset(preset)
    return preset if preset in PRESETS and model in PRESETS[preset].models else None


@dataclass(frozen=True)
class TransformerConfig:
    """The encoder's size; the defaults are the published 256/8/512 configuration (protocol 1.5)."""

    num_layers: int = 3
    d_model: int = 256
    nhead: int = 8
    dim_feedforward: int = 512
    dropout: float = 0.1

    @classmethod
    def resolve(cls, preset: str | None = None, **sizes: Any) -> TransformerConfig:
        """Defaults, then the preset, then explicit sizes; raises BenchError on invalid values."""
        check_preset(preset)
        config = cls()
        if preset in PRESETS:
            config = replace(config, **PRESETS[preset].sizes)
        config = replace(config, **sizes)
        config.check()
        return config

    def check(self) -> None:
        for key in ("num_layers", "d_model", "nhead", "dim_feedforward"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BenchError(f"{key} must be a positive integer, got {value!r}.")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise BenchError(f"dropout must be a number in [0, 1), got {dropout!r}.")
        if self.d_model % self.nhead:
            raise BenchError(
                f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead}); "
                "choose sizes whose ratio is a whole number."
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.nhead


class NonResidualBlock(TwoConvs):
    """conv3x3-BN-ReLU-conv3x3-BN-ReLU with no shortcut at all (protocol 1.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class TokenProjection(nn.Module):
    """Global average pool -> Linear(C -> d) with bias; no activation, norm or dropout."""

    def __init__(self, channels: int, d_model: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(x), 1))


def _published_encoder(position: str, config: TransformerConfig) -> tuple[str, nn.Module]:
    if position == "rotary":
        # protocol 1.8: a plain list of independently constructed layers.
        layers = (
            RoPEEncoderLayer(config.d_model, config.nhead, config.dim_feedforward, config.dropout)
            for _ in range(config.num_layers)
        )
        return "transformer_layers", LayerStack(layers)
    # protocol 1.6: PyTorch's encoder deep-copies one prototype layer, so all layers start identical.
    # Nested tensors only matter with padding masks, which GradAttn never uses.
    prototype = nn.TransformerEncoderLayer(
        config.d_model, config.nhead, config.dim_feedforward, config.dropout, batch_first=True
    )
    stack = nn.TransformerEncoder(prototype, config.num_layers, enable_nested_tensor=False)
    return "transformer_encoder", stack


def _shared_encoder(position: str, config: TransformerConfig) -> tuple[str, nn.Module]:
    return "transformer_layers", shared_encoder(position, **asdict(config))


ENCODERS: dict[str, Callable[[str, TransformerConfig], tuple[str, nn.Module]]] = {
    "published": _published_encoder,
    "shared": _shared_encoder,
}


class GradAttn(ResNetBody):
    """Backbone -> five tokens -> (position) -> encoder -> mean over tokens -> classifier.

    ``tokens``, ``encode`` and ``forward`` expose the stages separately; ``token_names`` gives the
    order of the token sequence (shallow to deep, which is also the rotary position index).
    """

    token_names = TOKEN_NAMES

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        config: TransformerConfig,
        position: str = "none",
        encoder: str = "published",
    ) -> None:
        super().__init__(NonResidualBlock, in_channels)
        self.transformer_config = config
        self.position_scheme = position
        d_model = config.d_model
        self.projections = nn.ModuleList(TokenProjection(channels, d_model) for channels in TOKEN_CHANNELS)
        self.encoder_name, stack = ENCODERS[encoder](position, config)
        self.add_module(self.encoder_name, stack)
        self.classifier = nn.Linear(d_model, num_classes)
        # Drawn last, so that under one seed the No-PE and LPE models share every other initial weight.
        # protocol 1.7: standard normal, no scaling.
        table = nn.Parameter(torch.randn(1, len(TOKEN_NAMES), d_model)) if position == "learned" else None
        self.register_parameter("pos_embedding", table)

    @property
    def encoder(self) -> nn.Module:
        return self.get_submodule(self.encoder_name)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> the token sequence [B, 5, d] in ``token_names`` order."""
        maps = self.stage_outputs(x)
        return torch.stack([project(m) for project, m in zip(self.projections, maps)], dim=1)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Add the position table (LPE only) and run the encoder: [B, 5, d] -> [B, 5, d]."""
        if self.pos_embedding is not None:
            # The original adds in place; out of place is the same value and gradient.
            tokens = tokens + self.pos_embedding
        return self.encoder(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encode(self.tokens(x)).mean(dim=1))


def _check_preset_applies(model: str, preset: str | None) -> None:
    check_preset(preset)
    if preset in PRESETS and model not in PRESETS[preset].models:
        raise BenchError(
            f"Preset {preset!r} applies to {', '.join(PRESETS[preset].models)} only, not {model}; "
            "set the sizes (model.d_model, model.nhead, model.dim_feedforward) instead."
        )


def resolved_options(
    model: str,
    *,
    init: str = "per-model",
    encoder: str = "published",
    preset: str | None = None,
    **sizes: Any,
) -> dict[str, Any]:
    """Every option of a GradAttn build, concrete: sizes after the preset, which it applies to ``model`` only."""
    check_init(init)
    if encoder not in ENCODER_CHOICES:
        raise BenchError(f"Unknown encoder {encoder!r}; choose one of: {', '.join(ENCODER_CHOICES)}.")
    preset = preset_for(preset, model)
    config = TransformerConfig.resolve(preset, **sizes)
    return {**asdict(config), "init": init, "encoder": encoder, "preset": preset or NO_PRESET}


def _gradattn(model_name: str, position: str, num_classes: int, in_channels: int, **options: Any) -> GradAttn:
    _check_preset_applies(model_name, options.get("preset"))
    resolved = resolved_options(model_name, **options)
    config = TransformerConfig(**{f: resolved[f] for f in TransformerConfig.__dataclass_fields__})
    if position == "rotary" and config.head_dim % 2:
        raise BenchError(
            f"Rotary embedding needs an even head dimension, but d_model / nhead = "
            f"{config.d_model} / {config.nhead} = {config.head_dim}; change d_model or nhead."
        )
    model = GradAttn(num_classes, in_channels, config, position, resolved["encoder"])
    return initialise(model, resolved["init"], keep_pytorch_defaults)  # protocol 1.9: PyTorch defaults


def _register(name: str, description: str, section: str):
    info = ModelInfo(name, "gradattn", description, section, GRADATTN_OPTIONS)
    return register_model(info, resolver=partial(resolved_options, name))


@_register("gradattn-nope", "GradAttn, depth tokens without positional encoding", "1.6")
def gradattn_nope(num_classes: int, in_channels: int, **options: Any) -> GradAttn:
    return _gradattn("gradattn-nope", "none", num_classes, in_channels, **options)


@_register("gradattn-lpe", "GradAttn, learnable positional embedding", "1.7")
def gradattn_lpe(num_classes: int, in_channels: int, **options: Any) -> GradAttn:
    return _gradattn("gradattn-lpe", "learned", num_classes, in_channels, **options)


@_register("gradattn-rope", "GradAttn, rotary position embedding on queries and keys", "1.8")
def gradattn_rope(num_classes: int, in_channels: int, **options: Any) -> GradAttn:
    return _gradattn("gradattn-rope", "rotary", num_classes, in_channels, **options)
