"""SQLiteStore's arguments, checked."""

from __future__ import annotations

import os

from .._core.errors import InvalidRequestError

__all__ = ["check_busy_timeout", "check_poll_interval", "check_synchronous", "to_path"]


def to_path(value: str | os.PathLike[str]) -> str:
    try:
        path: object = os.fspath(value)
    except TypeError:
        path = None
    if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("file:"):
        raise InvalidRequestError(
            "path", value, "expected a file path (use MemoryStore for works in memory)"
        )
    return path


def check_synchronous(instance: object, attribute: object, value: object) -> None:
    if value not in ("NORMAL", "FULL"):
        raise InvalidRequestError("synchronous", value, "expected 'NORMAL' or 'FULL'")


def check_busy_timeout(instance: object, attribute: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
        raise InvalidRequestError("busy_timeout", value, "expected seconds, 0 to 1e6")


def check_poll_interval(instance: object, attribute: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise InvalidRequestError("poll_interval", value, "expected seconds, more than 0 to 1e6")
