"""Converters and validators used by the model.

Converters normalise what callers pass (``float | timedelta`` → ``timedelta``,
``Iterable[str]`` → ``frozenset[str]``, ``str`` → enum); validators check the final form
and raise :class:`InvalidRequestError` naming the field and the value.
"""

from __future__ import annotations

import enum
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ._errors import DataTooLargeError, InvalidRequestError

if TYPE_CHECKING:
    from ._model import Data

E = TypeVar("E", bound=enum.Enum)

#: WorkManager's limit on the serialised size of input, output and progress data.
DEFAULT_MAX_DATA_BYTES = 10_240
#: Bounds nesting depth of data, so hostile payloads cannot exhaust the stack.
MAX_DATA_DEPTH = 64
#: Longest worker name, tag, unique name or signal name accepted.
MAX_NAME_LENGTH = 255


class FrozenData(dict[str, Any]):  # values are JSON (see _model.JSONValue)
    """A read-only JSON object: a dict (so ``json.dumps`` and ``isinstance(x, dict)`` work)
    whose top level cannot be changed in place. Requests, records and WorkInfos share it."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("wm_async data is read-only; copy it first: dict(data)")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(dump_data(self))


#: The one empty data object, shared by every empty input, output and progress.
EMPTY_DATA: Mapping[str, object] = FrozenData()


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


def _check_json(field: str, value: object, depth: int) -> None:
    if depth > MAX_DATA_DEPTH:
        raise InvalidRequestError(
            field, "<deeply nested data>", f"nests deeper than {MAX_DATA_DEPTH}"
        )
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(field, value, "NaN and infinity are not JSON")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError(field, value, "is not valid Unicode text") from None
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(field, item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRequestError(field, key, "object keys must be strings")
            _check_json(field, key, depth + 1)
            _check_json(field, item, depth + 1)
        return
    raise InvalidRequestError(
        field,
        value,
        f"{type(value).__name__} is not a JSON type (str, int, float, bool, None, list, dict)",
    )


def to_data(field: str, value: object) -> Data:
    """Validate a JSON object and return a private copy (so callers cannot mutate it later)."""
    if value is None:
        return EMPTY_DATA  # type: ignore[return-value]  # read-only, shared
    if not isinstance(value, Mapping):
        raise InvalidRequestError(field, value, "expected a mapping of str to JSON values")
    if not value:
        return EMPTY_DATA  # type: ignore[return-value]  # read-only, shared
    _check_json(field, value, 0)
    try:
        text = dump_data(value)
    except ValueError as exc:  # e.g. an int longer than Python will format
        raise InvalidRequestError(field, "<unserialisable data>", str(exc)) from None
    # A read-only private copy: the caller's dict can change later, and this one is
    # shared by the request, the stored record and every WorkInfo.
    copied: Data = FrozenData(json.loads(text))
    return copied


def dump_data(value: Mapping[str, object]) -> str:
    """Compact, deterministic JSON text of already-validated data."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_data_size(field: str, value: Mapping[str, object], limit: int) -> None:
    """Raise :class:`DataTooLargeError` if ``value`` serialises to more than ``limit`` bytes."""
    if not value:
        return
    size = len(dump_data(value).encode("utf-8"))
    if size > limit:
        raise DataTooLargeError(field, size, limit)
