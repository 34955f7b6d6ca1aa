"""The row codec of the SQL stores: which columns hold each :class:`WorkRecord` field,
how a value is encoded in them, and record <-> row.

The columns come from one declaration (:data:`FIELD_COLUMNS`), checked against
WorkRecord's fields when this module is imported: a field without columns, or columns
for no field, fail the import. Rows are read with the select list ``rowid`` (SQLite) or
``seq`` (PostgreSQL) followed by :data:`COLUMNS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from .._core.data import (
    EMPTY_DATA,
    FrozenData,
    dump_data,
)
from .._core.errors import StoreCorruptError
from .._core.mergers import MERGERS
from .._core.model import (
    DEFAULT_BACKOFF,
    NO_CONSTRAINTS,
    Backoff,
    BackoffPolicy,
    Constraints,
    Periodicity,
    StopReason,
    WorkError,
    WorkState,
)
from .._core.record import (
    RUNTIME_FIELDS,
    WorkRecord,
    record_new,
)

if TYPE_CHECKING:
    from .._core.data import Data

_CACHE_MAX: Final = 4096
_EMPTY: Final[Data] = EMPTY_DATA  # type: ignore[assignment]  # read-only, shared

#: The columns of each WorkRecord field, in order, as ``(name, PostgreSQL type)`` (the
#: SQLite migrations declare the same columns). The encodings are below: data, tags,
#: constraints and periodicity as JSON text (``''`` for none), enums by value, the
#: backoff in three columns and the error in two.
FIELD_COLUMNS: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "id": (("id", "text"),),
    "worker": (("worker", "text"),),
    "input": (("input", "text"),),
    "tags": (("tags", "text"),),
    "constraints": (("constraints", "text"),),
    "initial_delay": (("initial_delay", "float8"),),
    "backoff": (
        ("backoff_policy", "text"),
        ("backoff_delay", "float8"),
        ("backoff_max_delay", "float8"),
    ),
    "timeout": (("timeout", "float8"),),
    "max_attempts": (("max_attempts", "int8"),),
    "expedited": (("expedited", "int2"),),
    "input_merger": (("input_merger", "text"),),
    "unique_name": (("unique_name", "text"),),
    "generation": (("generation", "int8"),),
    "enqueued_at": (("enqueued_at", "float8"),),
    "periodic": (("periodic", "text"),),
    "priority": (("priority", "int2"),),
    "headers": (("headers", "text"),),
    "state": (("state", "text"),),
    "run_attempt_count": (("run_attempt_count", "int8"),),
    "next_run_at": (("next_run_at", "float8"),),
    "last_enqueue_time": (("last_enqueue_time", "float8"),),
    "started_at": (("started_at", "float8"),),
    "finished_at": (("finished_at", "float8"),),
    "output": (("output", "text"),),
    "progress": (("progress", "text"),),
    "stop_reason": (("stop_reason", "text"),),
    "error": (("error_type", "text"), ("error_message", "text")),
    "period_count": (("period_count", "int8"),),
    "owner": (("owner", "text"),),
}


def columns_of(fields: Sequence[str], runtime: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The columns of a record with ``fields`` in row order: the spec fields' (in field
    order), then the ``runtime`` fields' (in that order, which :func:`runtime_params`
    and the apply statements follow).

    :raises TypeError: if a field has no columns in :data:`FIELD_COLUMNS`, or columns
        are declared for no field
    """
    missing = [f for f in fields if f not in FIELD_COLUMNS]
    unknown = [f for f in FIELD_COLUMNS if f not in fields]
    if missing or unknown:
        raise TypeError(
            f"the SQL stores' row codec is out of step with WorkRecord: fields without "
            f"columns {missing}, columns for no field {unknown}; declare them in "
            "wm_async/stores/_codec.py (with encoders) and add a migration"
        )
    spec = [f for f in fields if f not in runtime]
    return tuple(c for f in (*spec, *runtime) for c in FIELD_COLUMNS[f])


_TYPED: Final = columns_of([a.name for a in attrs.fields(WorkRecord)], RUNTIME_FIELDS)
#: Every column, in row order.
COLUMNS: Final = tuple(name for name, _ in _TYPED)
#: The PostgreSQL type of each column.
PG_TYPES: Final = tuple(pg_type for _, pg_type in _TYPED)
#: How many leading columns hold the spec (``update_work`` rewrites them).
N_SPEC: Final = len(COLUMNS) - sum(len(FIELD_COLUMNS[f]) for f in RUNTIME_FIELDS)
#: The columns lifecycle transitions write, in :func:`runtime_params` order.
RUNTIME_COLUMNS: Final = COLUMNS[N_SPEC:]
_STATES: Final = {s.value: s for s in WorkState}
_STOP_REASONS: Final = {s.value: s for s in StopReason}
_POLICIES: Final = {p.value: p for p in BackoffPolicy}

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def _interned(cache: dict[_K, _V], key: _K, make: Callable[[_K], _V]) -> _V:
    """One shared immutable value per key: most works share tags, constraints, backoff."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        value = cache[key] = make(key)
    return value


def signal_key(name: str) -> str:
    """How a signal name appears in the ``signals`` column (``,`` and ``%`` escaped)."""
    return name.replace("%", "%25").replace(",", "%2C")


def _constraints_out(c: Constraints) -> tuple[str, str]:
    if c == NO_CONSTRAINTS:
        return "", ""
    names = sorted(signal_key(n) for n in c.signal_names())
    text = json.dumps(c.to_json(), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text, (f",{','.join(names)}," if names else "")


def _constraints_in(text: str) -> Constraints:
    c = Constraints.from_json(json.loads(text)) if text else NO_CONSTRAINTS
    return NO_CONSTRAINTS if c == NO_CONSTRAINTS else c


def _backoff_out(b: Backoff) -> tuple[str, float, float]:
    return b.policy.value, b.delay.total_seconds(), b.max_delay.total_seconds()


def _backoff_in(key: tuple[str, float, float]) -> Backoff:
    policy, delay, max_delay = key
    b = Backoff(
        _POLICIES[policy], timedelta(seconds=delay), max_delay=timedelta(seconds=max_delay)
    )
    return DEFAULT_BACKOFF if b == DEFAULT_BACKOFF else b


def _tags_out(tags: frozenset[str]) -> str:
    return json.dumps(sorted(tags), separators=(",", ":"), ensure_ascii=False)


def _tags_in(text: str) -> frozenset[str]:
    tags = json.loads(text)
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise TypeError(f"tags must be a JSON array of strings, not {text!r}")
    return frozenset(tags)


_CONSTRAINTS_OUT: dict[Constraints, tuple[str, str]] = {}
_CONSTRAINTS_IN: dict[str, Constraints] = {}
_BACKOFF_OUT: dict[Backoff, tuple[str, float, float]] = {}
_BACKOFF_IN: dict[tuple[str, float, float], Backoff] = {}
_TAGS_OUT: dict[frozenset[str], str] = {}
_TAGS_IN: dict[str, frozenset[str]] = {}
_NO_CONSTRAINTS_OUT: Final = _constraints_out(NO_CONSTRAINTS)
_DEFAULT_BACKOFF_OUT: Final = _backoff_out(DEFAULT_BACKOFF)


def data_text(data: Data) -> str:
    """How data is stored: JSON text, ``''`` when empty."""
    return dump_data(data) if data else ""


def _load(text: str) -> Data:
    if not text:
        return _EMPTY
    data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError(f"data must be a JSON object, not {text[:80]!r}")
    return FrozenData(data)


def runtime_params(r: WorkRecord) -> tuple[object, ...]:
    """The values of RUNTIME_COLUMNS for ``r``."""
    e = r.error
    # Enum ``_value_`` is a plain attribute; ``value`` is a property (a call per read).
    return (
        r.state._value_, r.run_attempt_count, r.next_run_at, r.last_enqueue_time,
        r.started_at, r.finished_at, data_text(r.output), data_text(r.progress), r.stop_reason._value_,
        None if e is None else e.type, None if e is None else e.message, r.period_count,
        r.owner,
    )  # fmt: skip


def outputs_in_order(pairs: Iterable[Sequence[Any]]) -> list[Data]:
    """Prerequisites' ``(position, stored output)`` pairs as Data, in position order."""
    return [_load(output) for _, output in sorted(pairs, key=itemgetter(0))]


def insert_params(r: WorkRecord) -> tuple[object, ...]:
    """The values of :data:`COLUMNS` for ``r``, then of the ``signals`` column (the
    signal names its constraints wait on, as ``,name,name,``, for claims to skip)."""
    # The defaults by identity: Constraints and Backoff hash in Python (attrs), and
    # almost every work has both defaults. A frozenset caches its hash.
    c, b = r.constraints, r.backoff
    if c is NO_CONSTRAINTS:
        constraints, signals = _NO_CONSTRAINTS_OUT
    else:
        constraints, signals = _interned(_CONSTRAINTS_OUT, c, _constraints_out)
    backoff = (
        _DEFAULT_BACKOFF_OUT if b is DEFAULT_BACKOFF else _interned(_BACKOFF_OUT, b, _backoff_out)
    )
    tags = _TAGS_OUT.get(r.tags) or _interned(_TAGS_OUT, r.tags, _tags_out)
    return (
        r.id, r.worker, data_text(r.input), tags, constraints,
        r.initial_delay, *backoff, r.timeout,
        r.max_attempts, 1 if r.expedited else 0, r.input_merger, r.unique_name, r.generation,
        r.enqueued_at, _periodic_out(r.periodic), r.priority,
        dump_data(r.headers) if r.headers else "",
        *runtime_params(r), signals,
    )  # fmt: skip


def record_from_row(row: Sequence[Any]) -> WorkRecord:
    """The WorkRecord of a row selected with SELECT.

    Nothing read is executed or imported: names stay strings (a worker name is looked up
    in the manager's registry, a merger name in ``MERGERS``), data stays JSON.

    :raises StoreCorruptError: if the row is not one wm_async wrote (naming the work id)
    """
    try:
        return _record_from_row(row)
    except Exception as exc:  # any malformed column: one clear error
        work_id = row[1] if len(row) > 1 else None
        raise StoreCorruptError(
            f"stored work {work_id!r} cannot be read ({type(exc).__name__}: {exc}); it was "
            "not written by wm_async or is damaged"
        ) from exc


def _record_from_row(row: Sequence[Any]) -> WorkRecord:
    (
        _, id_, worker, input_, tags, constraints, initial_delay, policy, delay, max_delay,
        timeout, max_attempts, expedited, merger, unique_name, generation, enqueued_at,
        periodic, priority, headers, state, attempts, next_run_at, last_enqueue_time, started_at, finished_at, output,
        progress, stop_reason, error_type, error_message, period_count, owner,
    ) = row  # fmt: skip
    # Positional, in field order (record_new): this runs for every work claimed.
    return record_new(
        id_,
        sys.intern(worker),
        _load(input_),
        _interned(_TAGS_IN, tags, _tags_in),
        _interned(_CONSTRAINTS_IN, constraints, _constraints_in),
        initial_delay,
        _interned(_BACKOFF_IN, (policy, delay, max_delay), _backoff_in),
        timeout,
        max_attempts,
        expedited == 1,
        _merger_in(merger),
        unique_name,
        generation,
        enqueued_at,
        _STATES[state],
        attempts,
        next_run_at,
        last_enqueue_time,
        started_at,
        finished_at,
        _load(output),
        _load(progress),
        _STOP_REASONS[stop_reason],
        None if error_type is None else WorkError(type=error_type, message=error_message),
        period_count,
        None if owner is None else sys.intern(owner),
        _interned(_PERIODIC_IN, periodic, _periodic_in) if periodic else None,
        priority,
        _load(headers) if headers else _EMPTY,
    )


_PERIODIC_IN: dict[str, Periodicity] = {}


def _periodic_in(text: str) -> Periodicity:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError(f"periodic must be a JSON object, not {text!r}")
    periodic = Periodicity.from_json(data)
    if periodic.cron is not None:  # parsed now, not at the end of the first run
        from .._core.cron import CronSchedule

        CronSchedule.parse(periodic.cron, periodic.timezone or "UTC")
    elif not (
        periodic.interval is not None
        and periodic.flex is not None
        and timedelta(0) < periodic.flex <= periodic.interval
    ):
        raise ValueError(f"invalid periodic interval/flex {text!r}")
    return periodic


def _merger_in(name: object) -> str:
    if name not in MERGERS:  # a name, never a path to import
        raise ValueError(f"unknown input merger {name!r}")
    assert isinstance(name, str)
    return sys.intern(name)


def _periodic_out(p: Periodicity | None) -> str:
    if p is None:
        return ""
    return json.dumps(p.to_json(), separators=(",", ":"), sort_keys=True)
