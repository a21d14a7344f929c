"""Rotary position embedding and the encoder layer GradAttn RoPE was published with (protocol 1.8).

``SelfAttention`` (separate q/k/v/o projections, rotary embedding on q and k) and
``RoPEEncoderLayer`` (post-norm, like PyTorch's default layer) reproduce the published RoPE encoder,
including what protocol 7.4 calls unintended confounds: no q/k/v bias, default Linear init,
independently constructed layers and an in-place ReLU after ``linear1`` (which orphans a backward
hook on ``linear1``, protocol 5.2; the gradient-flow analyzer copes with it). The ``encoder="shared"``
layer in ``encoder.py`` is this layer with those confounds removed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Split-halves (GPT-NeoX) pairing: dimension j rotates with dimension j + d/2."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotates [B, L, heads, head_dim] queries and keys by angle t * 10000^(-2j/head_dim).

    Position t is the token index (the shallow-to-deep order of the GradAttn tokens). The cos/sin
    tables are cached per (length, device, dtype) and hold no parameters.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self._cache: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(
        self, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the angle table, shaped [L, 1, head_dim] to broadcast over batch and heads."""
        key = (length, device, dtype)
        if key not in self._cache:
            exponents = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim
            inv_freq = 1.0 / self.base**exponents
            positions = torch.arange(length, device=device, dtype=torch.float32)
            angles = torch.outer(positions, inv_freq)
            angles = torch.cat((angles, angles), dim=-1)[:, None, :]
            self._cache[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return self._cache[key]

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.tables(q.shape[1], q.device, q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate ``w_q``/``w_k``/``w_v``/``w_o`` projections.

    Scaled dot-product attention with dropout on the attention weights; ``w_o`` always has a bias,
    ``qkv_bias`` switches the q/k/v biases; ``rotary`` rotates q and k (not v) before the scores.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float, *, qkv_bias: bool, rotary: bool) -> None:
        super().__init__()
        self.nhead = nhead
        self.head_dim = d_model // nhead
        self.w_q = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.w_k = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.w_v = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.rotary = RotaryEmbedding(self.head_dim) if rotary else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        shape = (batch, length, self.nhead, self.head_dim)
        q, k, v = self.w_q(x).view(shape), self.w_k(x).view(shape), self.w_v(x).view(shape)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, L, head_dim]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        weights = self.dropout(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, length, d_model)
        return self.w_o(out)


class RoPEEncoderLayer(nn.Module):
    """Post-norm encoder layer: x = LN1(x + Drop(Attn(x))); x = LN2(x + Drop(FFN(x))).

    The defaults are the published RoPE layer (protocol 1.8); the keyword switches exist for the
    shared layer of ``encoder.py``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float,
        *,
        qkv_bias: bool = False,
        rotary: bool = True,
        inplace_relu: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = SelfAttention(d_model, nhead, dropout, qkv_bias=qkv_bias, rotary=rotary)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = nn.ReLU(inplace=inplace_relu)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x)))
        feedforward = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.norm2(x + self.dropout2(feedforward))


class LayerStack(nn.ModuleList):
    """Layers applied one after another (the published RoPE encoder is a plain list of layers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        return x
