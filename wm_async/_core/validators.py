"""Converters and validators used by the model.

Converters normalise what callers pass (``float | timedelta`` → ``timedelta``,
``Iterable[str]`` → ``frozenset[str]``, ``str`` → enum); validators check the final form
and raise :class:`InvalidRequestError` naming the field and the value.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import TypeVar

# Re-exported: the data helpers were born here, and callers use them through ``v``.
from .data import (
    DEFAULT_MAX_DATA_BYTES,
    EMPTY_DATA,
    MAX_DATA_DEPTH,
    FrozenData,
    check_data_size,
    dump_data,
    to_data,
)
from .errors import InvalidRequestError

__all__ = (
    "DEFAULT_MAX_DATA_BYTES",
    "EMPTY_DATA",
    "FrozenData",
    "MAX_COUNT",
    "MAX_DATA_DEPTH",
    "MAX_DURATION",
    "MAX_NAME_LENGTH",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "check_data_size",
    "check_int",
    "check_name",
    "check_non_negative",
    "check_optional_positive_int",
    "check_positive",
    "check_priority",
    "dump_data",
    "to_data",
    "to_enum",
    "to_names",
    "to_optional_timedelta",
    "to_timedelta",
    "to_uuid",
)

E = TypeVar("E", bound=enum.Enum)

#: Longest worker name, tag, unique name or signal name accepted.
MAX_NAME_LENGTH = 255


#: Longest duration accepted: far beyond any schedule, and short enough that every
#: stored time (now + duration) stays a valid datetime.
MAX_DURATION = timedelta(days=365 * 100)


def to_timedelta(field: str, value: object) -> timedelta:
    """Convert seconds or a timedelta to a timedelta, rejecting NaN, infinity, bools and
    magnitudes over :data:`MAX_DURATION`."""
    if isinstance(value, timedelta):
        if abs(value) > MAX_DURATION:
            raise InvalidRequestError(field, value, "must be at most 100 years")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(field, value, "expected a timedelta or a number of seconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequestError(field, value, "must be a finite number of seconds")
    if abs(value) > MAX_DURATION.total_seconds():  # exact for ints too long for a float
        raise InvalidRequestError(field, value, "must be at most 100 years")
    return timedelta(seconds=value)


def to_optional_timedelta(field: str, value: object) -> timedelta | None:
    """Like :func:`to_timedelta`, passing ``None`` through."""
    return None if value is None else to_timedelta(field, value)


def check_non_negative(field: str, value: timedelta) -> None:
    """Reject a negative duration."""
    if value < timedelta(0):
        raise InvalidRequestError(field, value, "must not be negative")


def check_positive(field: str, value: timedelta) -> None:
    """Reject a zero or negative duration."""
    if value <= timedelta(0):
        raise InvalidRequestError(field, value, "must be positive")


def to_enum(field: str, enum_type: type[E], value: object) -> E:
    """Accept an enum member or its name/value (case-insensitive name) and return the member."""
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        try:
            return enum_type[value.upper()]
        except KeyError:
            pass
        for member in enum_type:
            if member.value == value:
                return member
    names = ", ".join(m.name for m in enum_type)
    raise InvalidRequestError(field, value, f"expected one of {names}")


def check_name(field: str, value: object) -> str:
    """A worker, tag, unique or signal name: a non-empty printable string."""
    if not isinstance(value, str):
        raise InvalidRequestError(field, value, "expected a string")
    if not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidRequestError(field, value, f"must be 1 to {MAX_NAME_LENGTH} characters")
    if not value.isprintable():
        raise InvalidRequestError(field, value, "must contain printable characters only")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(field, value, "is not valid Unicode text") from None
    return value


def to_names(field: str, value: object) -> frozenset[str]:
    """Convert an iterable of names (not a bare string) to a frozenset, checking each."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidRequestError(field, value, "expected a collection of strings")
    items = list(value)
    for name in items:
        check_name(field, name)  # before hashing: an unhashable item is a bad name too
    return value if isinstance(value, frozenset) else frozenset(items)


def to_uuid(field: str, value: object) -> uuid.UUID:
    """Accept a UUID or its string form."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidRequestError(field, value, "expected a UUID")


def check_int(field: str, value: object, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(field, value, f"expected an integer >= {minimum}")
    return value


#: Largest count accepted (stores keep counts as 64-bit integers).
MAX_COUNT = 2**31 - 1


def check_optional_positive_int(field: str, value: object) -> None:
    """``None`` or an int from 1 to :data:`MAX_COUNT`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise InvalidRequestError(field, value, f"expected None or an integer 1 to {MAX_COUNT}")


#: The priority range: higher runs first among due works (semantics 48); 0 is the default.
MIN_PRIORITY = -10
MAX_PRIORITY = 10


def check_priority(field: str, value: object) -> int:
    """An int (not a bool) from :data:`MIN_PRIORITY` to :data:`MAX_PRIORITY`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_PRIORITY <= value <= MAX_PRIORITY
    ):
        raise InvalidRequestError(
            field, value, f"expected an integer {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    return value
