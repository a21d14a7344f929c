"""What a model costs to run, counted: FLOPs and multiply-adds per image, forward and training step.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add; convolutions,
matrix products and attention) on a copy of the model on the meta device: nothing is allocated or
computed, the real model's weights and BatchNorm statistics are untouched, and attention is counted
whatever kernel the real device would pick (on the CPU, PyTorch's fused attention kernel is invisible to
the counter; on the meta device attention runs as the matrix products it is). Element-wise work
(activations, normalisation, the optimiser) is not counted, as in the MAC figures papers quote.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

COUNT_BATCH = 2  # BatchNorm in training mode needs more than one value per channel


@dataclass(frozen=True)
class Flops:
    """Counted FLOPs per image at one input size."""

    forward: int  # inference: one forward pass in eval mode
    train_step: int  # training: forward and backward in train mode, as counted (no optimiser step)

    @property
    def forward_macs(self) -> float:
        return self.forward / 2


def count(model: nn.Module, in_channels: int, image_size: int) -> Flops:
    """FLOPs per image of ``model`` on ``in_channels`` x ``image_size`` x ``image_size`` inputs.

    Give a model built on the meta device (``with torch.device("meta")``) where copying it would cost
    memory (a model on a GPU); any other is copied to the meta device first.
    """
    meta = model if _on_meta(model) else copy.deepcopy(model).to("meta")
    inputs = torch.zeros(COUNT_BATCH, in_channels, image_size, image_size, device="meta")
    meta.eval()
    with torch.no_grad():
        forward = _counted(lambda: meta(inputs))
    meta.train()
    train_step = _counted(lambda: meta(inputs).float().logsumexp(1).sum().backward())
    return Flops(forward=forward // COUNT_BATCH, train_step=train_step // COUNT_BATCH)


def _on_meta(model: nn.Module) -> bool:
    return all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])


def _counted(work) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        work()
    return int(counter.get_total_flops())
