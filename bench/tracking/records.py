"""The project's own records of what the store holds."""

from __future__ import annotations

FINISHED, RUNNING, FAILED, KILLED = "FINISHED", "RUNNING", "FAILED", "KILLED"
