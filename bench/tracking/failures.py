"""Reading what MLflow raised: an HTTP status, a network cause, a race of two creators of one row."""

from __future__ import annotations

import re
import time

from bench.core.errors import BenchError, out_of_space

# What a second creator of the same store or experiment sees while the first is at work.
CREATION_RACES = (
    "duplicate column name", "already exists", "RESOURCE_ALREADY_EXISTS", "duplicate key value", "UNIQUE constraint failed",
    "database is locked",
)


def creation_race(error: BaseException | None) -> bool:
    return error is not None and any(marker in str(error) for marker in CREATION_RACES)


def retry_creation_race(action, attempts: int = 5):
    """`action()`, again after a pause while it loses a race with another creator of the same row."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:
            cause = error.__cause__ if isinstance(error, BenchError) else error
            if attempt == attempts - 1 or not creation_race(cause):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def missing_module(error: BaseException) -> str | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError):
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return None


def http_status(error: BaseException) -> int | None:
    """The HTTP status of a server's answer, None when there was no answer."""
    from mlflow.exceptions import MlflowException

    found = re.search(r"error code (\d{3}) != 200", str(error))
    if found:
        return int(found.group(1))
    response = getattr(error, "response", None)
    if isinstance(getattr(response, "status_code", None), int):
        return response.status_code
    if isinstance(error, MlflowException) and "API request to" not in str(error):
        return error.get_http_status_code()
    return None


def network_reason(error: Exception) -> str | None:
    """The socket-level cause buried in MLflow's retry message ("Connection refused"), if any."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip()
    return "no answer before the timeout" if "timeout" in text.lower() or "timed out" in text.lower() else None


def store_away(error: BaseException) -> bool:
    """The store did not answer (refused, timed out) or answered that it failed (5xx, e.g. its
    database restarting): not a request it rejected, and not a failure of our own."""
    status = http_status(error)
    if status is not None:
        return status >= 500
    return network_reason(error) is not None or "API request to" in str(error)


def one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0][:160]}" if text else error.__class__.__name__


def transient(error: BaseException) -> bool:
    """A failure worth queueing and retrying later (server down, timeout, 5xx), not a rejected request
    nor a full disk (which waiting does not empty)."""
    if out_of_space(error):
        return False
    status = http_status(error)
    return status is None or status >= 500 or status in (408, 429)
