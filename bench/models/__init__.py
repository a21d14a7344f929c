"""The model registry: the six models of the GradAttn study, by the names users type.

``build("gradattn-rope", num_classes=10, in_channels=3, d_model=128)`` is the only way to make a
model; ``names("gradattn-*")`` and ``expand("resnet18,gradattn-*")`` list them. Each model is one
decorated builder in its family's module (``resnet.py``, ``gradattn.py``), registered together with
its metadata (``ModelInfo``): family, protocol section, options, and the parameter counts the original
notebooks printed (protocol 1.10, kept with their other printed figures in ``bench/resources``).
Plugins register theirs with the same decorator (bench.core.plugins);
``timm/<architecture>`` names any model timm can build (bench.models.timm_family).
"""

from __future__ import annotations

from bench.models._registry import (
    Builder,
    ModelInfo,
    build,
    check_buildable,
    count_parameters,
    expand,
    info,
    isolated,
    names,
    register_model,
    resolve_options,
)

# The family modules register their builders on import; resnet first keeps the catalogue order
# resnet18, senet18, cbam18, gradattn-nope, gradattn-lpe, gradattn-rope.
# isort: off
from bench.models import resnet as _resnet  # noqa: F401
from bench.models import gradattn as _gradattn  # noqa: F401
from bench.models import timm_family as _timm_family
# isort: on

__all__ = [
    "Builder",
    "ModelInfo",
    "build",
    "check_buildable",
    "count_parameters",
    "expand",
    "info",
    "isolated",
    "names",
    "register_model",
    "resolve_options",
]

_timm_family.register_prefix()
