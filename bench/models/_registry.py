"""The model catalogue: one registry, the decorator that fills it, and the functions that read it
(timm's ``_registry``). The family modules import this module, never the package."""


from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from bench.core import plugins, published
from bench.core.errors import BenchError
from bench.core.registry import Registry

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the catalogue knows about one model besides how to build it."""

    name: str
    family: str  # resnet, gradattn, timm, or a plugin's own
    description: str
    protocol_section: str
    options: tuple[str, ...]

    @property
    def reference_params(self) -> dict[tuple[int, int], int]:
        """(in_channels, num_classes) -> total parameters printed by the notebooks for the published
        defaults (protocol 1.10, ``resources/parameter_counts.csv``); checked by the tests."""
        return published.parameter_counts(self.name)


Resolver = Callable[..., dict[str, Any]]


def _keep_given(**options: Any) -> dict[str, Any]:
    return options


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    builder: Builder
    resolver: Resolver = _keep_given


_MODELS: Registry[_Entry] = Registry("model", loader=plugins.load)


def register_model(info: ModelInfo, resolver: Resolver = _keep_given) -> Callable[[Builder], Builder]:
    """Decorator for a family module's public builder ``f(num_classes, in_channels, **options)``.

    ``resolver(**options)`` returns every option with the value the builder will use (sizes after a
    preset, defaults filled in), so a run's identity and its recorded settings are the built model's.
    """

    def decorator(builder: Builder) -> Builder:
        _check_signature(info, builder)
        _MODELS.add(info.name, _Entry(info, builder, resolver))
        return builder

    return decorator


def _check_signature(info: ModelInfo, builder: Builder) -> None:
    """A builder must take (num_classes, in_channels) and every option its info declares."""
    try:
        inspect.signature(builder).bind(10, 3, **{option: None for option in info.options})
    except TypeError as error:
        options = "".join(f", {option}=..." for option in info.options)
        raise BenchError(
            f"model {info.name!r} has a builder {builder.__name__}{inspect.signature(builder)} that cannot be "
            f"called as {builder.__name__}(num_classes, in_channels{options}) ({error})"
        ) from None


def names(pattern: str | None = None) -> list[str]:
    """Registered model names in registration order, optionally filtered by a shell wildcard."""
    return _MODELS.names(pattern)


def expand(spec: str) -> list[str]:
    """A user's comma list (``all``, exact names, wildcards such as ``gradattn-*``) as model names."""
    return _MODELS.expand(spec)


def info(name: str) -> ModelInfo:
    return _MODELS.get(name).info


def build(name: str, num_classes: int, in_channels: int, **config: Any) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes and ``in_channels``-channel images.

    ``config`` holds the model's options (``info(name).options``); a value of None means "use the
    default". Anything a user can get wrong raises a BenchError that says what to change.
    """
    entry = _MODELS.get(name)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    accepted = entry.info.options
    for key in config:
        if key in accepted:
            continue
        if key not in _all_options():
            raise BenchError(
                f"Unknown model option {key!r} for {name}; it accepts: {', '.join(accepted)}."
            )
        raise BenchError(
            f"Option {key!r} does not apply to {name} (a {entry.info.family} model); "
            f"it accepts: {', '.join(accepted)}."
        )
    given = {key: value for key, value in config.items() if value is not None}
    return entry.builder(num_classes, in_channels, **given)


def resolve_options(name: str, **config: Any) -> dict[str, Any]:
    """The options ``build(name, ..., **config)`` will use, every default and preset resolved."""
    entry = _MODELS.get(name)
    return entry.resolver(**{key: value for key, value in config.items() if value is not None})


def check_buildable(name: str, **config: Any) -> None:
    """Build ``name`` with ``config`` on the meta device (no memory, no time): options it cannot be
    built with fail here, before any training starts."""
    _check_buildable(name, tuple(sorted(config.items())))


@functools.lru_cache(maxsize=256)
def _check_buildable(name: str, config: tuple[tuple[str, Any], ...]) -> None:
    import torch

    try:
        with torch.device("meta"):
            build(name, 10, 3, **dict(config))
    except (ValueError, TypeError) as error:  # e.g. torch's own check of a dropout probability
        raise BenchError(f"{name} cannot be built with these options ({error}).") from None


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (all are trainable in every model here), shared ones once."""
    return sum(parameter.numel() for parameter in model.parameters())


def _all_options() -> set[str]:
    return {key for _, entry in _MODELS for key in entry.info.options}


def _check_positive_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{what} must be a positive integer, got {value!r}.")


def isolated():
    """A context manager: models registered inside it are gone after it (tests, notebooks trying a builder)."""
    return _MODELS.isolated()
