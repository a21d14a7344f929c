"""Comma-separated numbers from the command line (``--seeds 42,43``, ``--vanishing 1e-8,1e-7``)."""

from __future__ import annotations

from typing import Callable

from bench.core.errors import BenchError


def parse_numbers(
    text: str, option: str, kind: type[int] | type[float], *, valid: Callable[[float], bool] = lambda value: True, what: str = ""
) -> list:
    """The numbers of ``option``'s value, each of ``kind`` and passing ``valid`` (``what`` says what
    that wants, e.g. "integers from 0 to 9"); one sentence naming the option where they are not."""
    noun = "integer" if kind is int else "number"
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"{option} must be a comma-separated list of {noun}s, got {text!r}.") from None
    if not values:
        raise BenchError(f"{option} needs at least one {noun}, got {text!r}.")
    bad = [value for value in values if not valid(value)]
    if bad:
        raise BenchError(f"{option} must be {what}, got {', '.join(map(str, bad))}.")
    return values
