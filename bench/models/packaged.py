"""A trained network packaged for use outside the harness: the run's MLflow model.

The harness feeds networks through a device-side evaluation transform (uint8 to float, resize,
grey to RGB, normalisation: bench.data.pipeline). The logged model carries that transform in
front of the network, so loaded back with MLflow's PyTorch flavour (`pytorch.load_model(uri)`) it
takes images as the dataset stores them, uint8 (B, C, H, W), and returns logits.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class WithPreprocessing(nn.Module):
    def __init__(self, net: nn.Module, transform) -> None:
        super().__init__()
        self.net = net
        self.transform = transform  # a BatchTransform with no random step

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.transform(images))


def packaged(net: nn.Module, eval_transform) -> WithPreprocessing:
    """A CPU, eval-mode copy of `net` behind `eval_transform` (the trained module is left as it is)."""
    if eval_transform.augments:
        raise ValueError("a logged model's transform must be deterministic")
    # the copy leaves the steps' per-device constants behind (bench.data.pipeline._PerDeviceConstants)
    return WithPreprocessing(copy.deepcopy(net).cpu().float().eval(), copy.deepcopy(eval_transform))
