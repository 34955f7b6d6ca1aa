"""Data: the JSON objects works carry (input, output, progress), their checks, their
size limit and their one serialised form."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TypeAlias

from .errors import DataTooLargeError, InvalidRequestError

#: A JSON value as wm_async stores it.
JSONValue: TypeAlias = (
    "str | int | float | bool | Sequence[JSONValue] | Mapping[str, JSONValue] | None"
)
#: Input, output and progress data: a JSON object.
Data: TypeAlias = Mapping[str, JSONValue]

#: WorkManager's limit on the serialised size of input, output and progress data.
DEFAULT_MAX_DATA_BYTES = 10_240
#: Bounds nesting depth of data, so hostile payloads cannot exhaust the stack.
MAX_DATA_DEPTH = 64


class FrozenData(dict[str, Any]):  # values are JSON (see JSONValue)
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
