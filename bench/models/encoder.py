"""The ``encoder="shared"`` transformer: one layer implementation for every position scheme.

The published GradAttn variants differ in more than their positional encoding (protocol 7.4): No PE
and LPE use ``nn.TransformerEncoderLayer`` (q/k/v biases, xavier init, identical deep-copied
layers) while RoPE uses its own layer (no q/k/v bias, default init, independent layers, in-place
ReLU). With ``encoder="shared"`` all three use ``SharedEncoderLayer``, so only the position scheme
differs:

- ``none``: nothing;
- ``learned``: a table added to the tokens before the encoder (the model holds it, as in LPE);
- ``rotary``: rotary embedding on q and k inside every layer.

The layer matches ``nn.TransformerEncoderLayer`` in structure, parameter count (4d^2 + 2df + f + 9d)
and initialisation (q/k/v xavier-uniform as over MultiheadAttention's packed [3d, d] matrix, zero
q/k/v/o biases, default Linear init elsewhere), with a plain ReLU; the layers of a stack are
constructed independently.
"""

from __future__ import annotations

import math

import torch.nn as nn

from bench.models.rope import LayerStack, RoPEEncoderLayer

POSITION_SCHEMES = ("none", "learned", "rotary")


class SharedEncoderLayer(RoPEEncoderLayer):
    """The published RoPE layer with the confounds of protocol 7.4 removed; rotary is optional."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, *, rotary: bool
    ) -> None:
        super().__init__(
            d_model, nhead, dim_feedforward, dropout, qkv_bias=True, rotary=rotary, inplace_relu=False
        )
        attention = self.self_attn
        # nn.MultiheadAttention draws its packed [3d, d] in_proj xavier-uniform: fan_in d, fan_out 3d.
        bound = math.sqrt(6.0 / (d_model + 3 * d_model))
        for projection in (attention.w_q, attention.w_k, attention.w_v):
            nn.init.uniform_(projection.weight, -bound, bound)
            nn.init.zeros_(projection.bias)
        nn.init.zeros_(attention.w_o.bias)


def shared_encoder(
    position: str, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float
) -> LayerStack:
    """``num_layers`` independently initialised shared layers for position scheme ``position``."""
    if position not in POSITION_SCHEMES:
        raise ValueError(f"unknown position scheme {position!r}")
    rotary = position == "rotary"
    return LayerStack(
        SharedEncoderLayer(d_model, nhead, dim_feedforward, dropout, rotary=rotary) for _ in range(num_layers)
    )
