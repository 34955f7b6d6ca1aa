"""SQLiteStore's schema side: the SQL it runs, row <-> WorkRecord conversion, migration
files and the classification of SQLite errors. The transactions live in ``sqlite.py``."""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
import sqlite3
import sys
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .._core.data import (
    EMPTY_DATA,
    FrozenData,
    dump_data,
)
from .._core.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
)
from .._core.mergers import MERGERS
from .._core.model import (
    DEFAULT_BACKOFF,
    FINISHED_STATES,
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
    WorkRecord,
    record_new,
)

if TYPE_CHECKING:
    from .._core.data import Data

#: ``PRAGMA application_id`` of wm_async databases ('wmas').
APPLICATION_ID: Final = 0x776D6173
#: The first 16 bytes of every SQLite database file.
HEADER: Final = b"SQLite format 3\x00"
#: UPDATE … FROM (3.33) and RETURNING (3.35).
MIN_SQLITE: Final = (3, 35, 0)
#: Changes per apply statement: 16 parameters each, far below SQLite's 32766.
APPLY_MAX_ROWS: Final = 1024
_CACHE_MAX: Final = 4096
_EMPTY: Final[Data] = EMPTY_DATA  # type: ignore[assignment]  # read-only, shared

COLUMNS: Final = (
    "id", "worker", "input", "tags", "constraints", "initial_delay", "backoff_policy",
    "backoff_delay", "backoff_max_delay", "timeout", "max_attempts", "expedited",
    "input_merger", "unique_name", "generation", "enqueued_at", "periodic",
    # the runtime part (RUNTIME_FIELDS, error split in two), in runtime_params order
    "state", "run_attempt_count", "next_run_at", "last_enqueue_time", "started_at",
    "finished_at", "output", "progress", "stop_reason", "error_type", "error_message",
    "period_count", "owner",
)  # fmt: skip
RUNTIME_COLUMNS: Final = COLUMNS[17:]
#: The select list every read uses; record_from_row takes its rows.
SELECT: Final = "rowid, " + ", ".join(COLUMNS)
_STATES: Final = {s.value: s for s in WorkState}
_STOP_REASONS: Final = {s.value: s for s in StopReason}
_POLICIES: Final = {p.value: p for p in BackoffPolicy}
# Enum values are our constants, not user data: literals let the partial indexes apply.
_FINISHED: Final = ", ".join(sorted(f"'{s.value}'" for s in FINISHED_STATES))

INSERT_WORK: Final = (
    f"INSERT INTO wm_work ({', '.join(COLUMNS)}, signals) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)
INSERT_TAG: Final = "INSERT INTO wm_work_tag (tag, work_id) VALUES (?, ?)"
DELETE_TAGS: Final = "DELETE FROM wm_work_tag WHERE work_id = ?"
DELETE_TAGS_OF: Final = "DELETE FROM wm_work_tag WHERE work_id IN (SELECT value FROM json_each(?))"
DELETE_WORKS: Final = "DELETE FROM wm_work WHERE id IN (SELECT value FROM json_each(?))"
BY_UNIQUE_NAME: Final = f"SELECT {SELECT} FROM wm_work WHERE unique_name = ?"
RESPEC: Final = (
    f"UPDATE wm_work SET {', '.join(f'{c} = ?' for c in COLUMNS[1:17])}, next_run_at = ?, "
    "signals = ? WHERE id = ? AND state = ? AND run_attempt_count = ? AND generation = ? "
    "RETURNING id"
)
EXISTING_IDS: Final = "SELECT id FROM wm_work WHERE id IN (SELECT value FROM json_each(?))"
GET: Final = f"SELECT {SELECT} FROM wm_work WHERE id IN (SELECT value FROM json_each(?))"
#: Sets exactly what lifecycle.claim sets.
CLAIM_UPDATE: Final = (
    "UPDATE wm_work SET state = 'RUNNING', run_attempt_count = run_attempt_count + 1, "
    "next_run_at = NULL, started_at = ?, progress = '', stop_reason = 'NOT_STOPPED', owner = ? "
    f"WHERE rowid IN (SELECT value FROM json_each(?)) AND state = 'ENQUEUED' RETURNING {SELECT}"
)


def _prunable(w: str) -> str:
    # Finished before the cut-off, and no unfinished work depends on it (semantics 34).
    return (
        f"{w}.finished_at < ? AND {w}.state IN ({_FINISHED}) AND NOT EXISTS ("
        "SELECT 1 FROM wm_dependency AS d JOIN wm_work AS c ON c.id = d.work_id "
        f"WHERE d.prerequisite_id = {w}.id AND c.state NOT IN ({_FINISHED}))"
    )


PRUNE_TAGS: Final = (
    "DELETE FROM wm_work_tag WHERE (tag, work_id) IN (SELECT j.value, w.id "
    f"FROM wm_work AS w, json_each(w.tags) AS j WHERE {_prunable('w')})"
)
#: The edges to a pruned work's prerequisites. Edges from its dependents (finished, or it
#: would not be pruned) go when they are pruned.
PRUNE_EDGES: Final = (
    "DELETE FROM wm_dependency WHERE work_id IN "
    f"(SELECT w.id FROM wm_work AS w WHERE {_prunable('w')})"
)
PRUNE_WORKS: Final = f"DELETE FROM wm_work WHERE {_prunable('wm_work')} RETURNING 1"

# -- chains
SELECT_W: Final = "w.rowid, " + ", ".join(f"w.{c}" for c in COLUMNS)
#: The BLOCKED dependents of some works: (prerequisite id, waiting, *SELECT_W).
DEPENDENTS: Final = (
    f"SELECT d.prerequisite_id, w.waiting, {SELECT_W} FROM wm_dependency AS d "
    "JOIN wm_work AS w ON w.id = d.work_id "
    "WHERE d.prerequisite_id IN (SELECT value FROM json_each(?)) AND w.state = 'BLOCKED'"
)
#: Counts the success of some works (the JSON array ?1) in their BLOCKED dependents;
#: returns (waiting, outputs, *SELECT) for each, outputs being, once none is waiting,
#: the direct prerequisites' outputs as a JSON array of [position, output text].
UNBLOCK: Final = (
    "UPDATE wm_work SET waiting = waiting - (SELECT count(*) FROM wm_dependency AS d "
    "WHERE d.work_id = wm_work.id AND d.prerequisite_id IN (SELECT value FROM json_each(?1))) "
    "WHERE state = 'BLOCKED' AND id IN (SELECT work_id FROM wm_dependency "
    "WHERE prerequisite_id IN (SELECT value FROM json_each(?1))) "
    "RETURNING waiting, CASE WHEN waiting <= 0 THEN (SELECT json_group_array("
    "json_array(d.position, p.output)) FROM wm_dependency AS d JOIN wm_work AS p "
    f"ON p.id = d.prerequisite_id WHERE d.work_id = wm_work.id) END, {SELECT}"
)
#: Which of some works have dependents.
HAVE_DEPENDENTS: Final = (
    "SELECT DISTINCT prerequisite_id FROM wm_dependency "
    "WHERE prerequisite_id IN (SELECT value FROM json_each(?))"
)
INSERT_DEPENDENCY: Final = (
    "INSERT INTO wm_dependency (prerequisite_id, work_id, position) VALUES (?, ?, ?)"
)
DELETE_EDGES_OF: Final = (
    "DELETE FROM wm_dependency WHERE work_id IN (SELECT value FROM json_each(?1)) "
    "OR prerequisite_id IN (SELECT value FROM json_each(?1))"
)
#: INSERT_WORK with the number of prerequisites a chained work waits for.
INSERT_CHAINED: Final = (
    f"INSERT INTO wm_work ({', '.join(COLUMNS)}, signals, waiting) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 2))})"
)
#: A dependent resolved by propagation: its (merged) input, waiting, runtime columns.
WRITE_RESOLVED: Final = (
    "UPDATE wm_work SET input = ?, waiting = ?, "
    + ", ".join(f"{c} = ?" for c in RUNTIME_COLUMNS)
    + " WHERE id = ?"
)

#: A claimed row that cannot be read fails, so it is not claimed again and again (its
#: columns are left as found, for inspection).
QUARANTINE: Final = (
    "UPDATE wm_work SET state = 'FAILED', next_run_at = NULL, finished_at = ?, "
    "progress = '', error_type = 'wm_async.StoreCorruptError', error_message = ?, "
    "owner = NULL WHERE rowid = ?"
)

SIGNALS_IN_USE: Final = (
    "SELECT DISTINCT constraints FROM wm_work "
    "WHERE signals != '' AND state IN ('ENQUEUED', 'RUNNING', 'BLOCKED')"
)


@functools.lru_cache(maxsize=32)
def claim_sql(n_blocked: int) -> str:
    """Everything a claim reads, from the due index alone, in one statement.

    Rows are ``(branch, rowid, due)``: branches 0 and 1 are the expedited and ordinary
    works due at ``:now`` (at most ``:k`` each), 2 and 3 the first not yet due of each;
    works needing a blocked signal (``:b0``, ``:b1``, … as ``',name,'``) are skipped.
    """
    unparked = ""
    if n_blocked:
        absent = " AND ".join(f"instr(signals, :b{i}) = 0" for i in range(n_blocked))
        unparked = f" AND (signals = '' OR ({absent}))"
    branches = ((0, 1, "<=", ":k"), (1, 0, "<=", ":k"), (2, 1, ">", "1"), (3, 0, ">", "1"))
    return " UNION ALL ".join(
        f"SELECT * FROM (SELECT {b} AS branch, rowid AS rid, next_run_at AS due FROM wm_work "
        f"WHERE state = 'ENQUEUED' AND expedited = {e} AND next_run_at {op} :now{unparked} "
        f"ORDER BY next_run_at LIMIT {limit})"
        for b, e, op, limit in branches
    )


@functools.lru_cache(maxsize=16)
def apply_sql(rows: int) -> str:
    """The compare-and-set of ``rows`` changes in one statement; each row of parameters
    is ``(id, expected state, expected attempts, *runtime_params(after))``. It returns
    ``(id, generation, ended with dependents)`` for each row written."""
    names = ("id", "exp_state", "exp_attempts", *RUNTIME_COLUMNS)
    row = "(" + ", ".join("?" * len(names)) + ")"
    sets = ", ".join(f"{c} = v.{c}" for c in RUNTIME_COLUMNS)
    return (
        f"WITH v({', '.join(names)}) AS (VALUES {', '.join([row] * rows)}) "
        f"UPDATE wm_work SET {sets} FROM v WHERE wm_work.id = v.id "
        "AND wm_work.state = v.exp_state AND wm_work.run_attempt_count = v.exp_attempts "
        # Whether a work that this change finished has dependents to resolve.
        "RETURNING wm_work.id, wm_work.generation, "
        f"wm_work.state IN ({_FINISHED}) AND EXISTS "
        "(SELECT 1 FROM wm_dependency WHERE prerequisite_id = wm_work.id)"
    )


# -- conversions ---------------------------------------------------------------------------

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


def _dump(data: Data) -> str:
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
        r.started_at, r.finished_at, _dump(r.output), _dump(r.progress), r.stop_reason._value_,
        None if e is None else e.type, None if e is None else e.message, r.period_count,
        r.owner,
    )  # fmt: skip


def outputs_in_order(pairs: Iterable[Sequence[Any]]) -> list[Data]:
    """Prerequisites' ``(position, stored output)`` pairs as Data, in position order."""
    return [_load(output) for _, output in sorted(pairs, key=itemgetter(0))]


def resolved_params(r: WorkRecord) -> tuple[object, ...]:
    """The parameters of WRITE_RESOLVED for a dependent resolved by propagation."""
    return (_dump(r.input), 0, *runtime_params(r), r.id)


def insert_params(r: WorkRecord) -> tuple[object, ...]:
    """The parameters of INSERT_WORK for ``r``."""
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
        r.id, r.worker, _dump(r.input), tags, constraints,
        r.initial_delay, *backoff, r.timeout,
        r.max_attempts, 1 if r.expedited else 0, r.input_merger, r.unique_name, r.generation,
        r.enqueued_at, _periodic_out(r.periodic), *runtime_params(r), signals,
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
        periodic, state, attempts, next_run_at, last_enqueue_time, started_at, finished_at, output,
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


# -- errors and files ----------------------------------------------------------------------


def _code(exc: BaseException) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else -1


def is_transient(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock; worth retrying."""
    return _code(exc) in (5, 6) or "database is locked" in str(exc)


def error_class(exc: BaseException) -> type[StoreError]:
    """The StoreError subclass for a SQLite error."""
    code = _code(exc)
    text = str(exc)
    if is_corrupt(exc):
        return StoreCorruptError
    if code == 13 or "database or disk is full" in text:  # SQLITE_FULL
        return StoreFullError
    if code == 8 or "readonly database" in text:  # SQLITE_READONLY
        return StoreReadOnlyError
    if is_transient(exc):
        return StoreBusyError
    return StoreError


def is_corrupt(exc: BaseException) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB: the file is damaged or not a database."""
    text = str(exc)
    return _code(exc) in (11, 26) or "not a database" in text or "malformed" in text


def _split(script: str) -> tuple[str, ...]:
    # Statement by statement: executescript() would COMMIT the migration's transaction.
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if any(ln.strip() and not ln.strip().startswith("--") for ln in buf.splitlines()):
        raise StoreError(f"a wm_async SQLite migration ends in an incomplete statement: {buf!r}")
    return tuple(statements)


@functools.cache
def migrations() -> tuple[tuple[int, tuple[str, ...]], ...]:
    """``(version, statements)`` of every ``_sql/sqlite/NNN_name.sql``, in order.

    Reads package files: call it in a worker thread.
    """
    folder = importlib.resources.files("wm_async.stores") / "_sql" / "sqlite"
    found = sorted(
        (int(m.group(1)), _split(entry.read_text("utf-8")))
        for entry in folder.iterdir()
        if (m := re.fullmatch(r"(\d{3})_\w+\.sql", entry.name))
    )
    if [n for n, _ in found] != list(range(1, len(found) + 1)):
        raise StoreError("wm_async is installed incompletely: SQLite migrations are missing")
    return tuple(found)
