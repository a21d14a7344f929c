"""Weight-initialisation policies, chosen per model with the ``init`` option.

The original study initialised its baselines differently (protocol 1.9, 7.12): ResNet-18 and the
three GradAttn variants keep PyTorch's defaults, while SE-ResNet-18 and CBAM-ResNet-18 re-initialise
every conv kaiming-normal (fan_out), every BatchNorm to 1/0 and every Linear, the classifier
included, to N(0, 0.01). Two policies are offered:

- ``"per-model"``: each model's own policy from protocol 1.9, as the notebooks did (notebook mode's
  default, and the builders' when called directly, so the published models come out as published).
- ``"uniform"`` (protocol mode's default): every module keeps PyTorch's own default initialisation. That is the policy
  ResNet-18 and GradAttn already use, so under it SE/CBAM-ResNet-18 differ from ResNet-18 by
  architecture only. "PyTorch's own default" includes what a module does in its own constructor
  (``nn.MultiheadAttention``'s xavier-uniform projections, the N(0, 1) learnable position table), so
  ``uniform`` changes nothing for ResNet-18 and GradAttn.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from bench.core.errors import BenchError

InitPolicy = Callable[[nn.Module], None]

INIT_CHOICES = ("per-model", "uniform")


def keep_pytorch_defaults(model: nn.Module) -> None:
    """Protocol 1.2 / 1.5: no explicit initialisation at all."""


def kaiming_fan_out(model: nn.Module) -> None:
    """Protocol 1.3 / 1.4 (SE- and CBAM-ResNet-18): the explicit re-initialisation of every module."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def check_init(init: object) -> str:
    """Builders call this before constructing anything, so a typo fails fast."""
    if init not in INIT_CHOICES:
        raise BenchError(f"Unknown init {init!r}; choose one of: {', '.join(INIT_CHOICES)}.")
    return init  # type: ignore[return-value]


def initialise(model: nn.Module, init: str, own_policy: InitPolicy) -> nn.Module:
    """Apply ``own_policy`` (the model's own, protocol 1.9) or keep the defaults (``uniform``).

    A model built on the meta device (to count its parameters) has no values to set: initialising
    it would only cost ``bench models`` an import of torch's compiler, which meta-tensor
    ``normal_`` goes through (about a second).
    """
    if check_init(init) == "per-model" and not any(p.is_meta for p in model.parameters()):
        own_policy(model)
    return model
