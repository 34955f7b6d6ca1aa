"""The JSON form of WorkInfo and what it holds (``WorkInfo.to_dict()``, and what
``wm-async show --json`` prints): times as ISO 8601 text, durations in seconds, enums as
their values, UUIDs as text, sets as sorted lists."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast
from uuid import UUID

import attrs


def to_json(value: object) -> Any:
    """A JSON-ready form of ``value`` (an attrs instance such as WorkInfo, or what one
    holds): only dicts, lists, strings, numbers, booleans and None."""
    if attrs.has(type(value)):
        fields = attrs.fields(cast("type[attrs.AttrsInstance]", type(value)))
        return {f.name: to_json(getattr(value, f.name)) for f in fields}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(to_json(v) for v in value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
