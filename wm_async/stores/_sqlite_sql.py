"""SQLiteStore's statements and migration files (the transactions that run them are in
``_sqlite_ops``; rows are encoded by ``_codec``)."""

from __future__ import annotations

import functools
import importlib.resources
import re
import sqlite3
from typing import TYPE_CHECKING, Final

from .._core.errors import StoreError
from .._core.model import FINISHED_STATES
from ._codec import (
    COLUMNS,
    N_SPEC,
    RUNTIME_COLUMNS,
    data_text,
    runtime_params,
)

if TYPE_CHECKING:
    from .._core.record import WorkRecord

#: ``PRAGMA application_id`` of wm_async databases ('wmas').
APPLICATION_ID: Final = 0x776D6173
#: The first 16 bytes of every SQLite database file.
HEADER: Final = b"SQLite format 3\x00"
#: UPDATE … FROM (3.33) and RETURNING (3.35).
MIN_SQLITE: Final = (3, 35, 0)
#: Changes per apply statement: 16 parameters each, far below SQLite's 32766.
APPLY_MAX_ROWS: Final = 1024

#: The select list every read uses; record_from_row takes its rows.
SELECT: Final = "rowid, " + ", ".join(COLUMNS)
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
UPDATE_SPEC: Final = (
    f"UPDATE wm_work SET {', '.join(f'{c} = ?' for c in COLUMNS[1:N_SPEC])}, next_run_at = ?, "
    "signals = ? WHERE id = ? AND state = ? AND run_attempt_count = ? AND generation = ? "
    "RETURNING id"
)
EXISTING_IDS: Final = "SELECT id FROM wm_work WHERE id IN (SELECT value FROM json_each(?))"
GET: Final = f"SELECT {SELECT} FROM wm_work WHERE id IN (SELECT value FROM json_each(?))"
#: Sets exactly what lifecycle.claim sets.
CLAIM_UPDATE: Final = (
    "UPDATE wm_work SET state = 'RUNNING', run_attempt_count = run_attempt_count + 1, "
    "started_at = ?1, progress = '', stop_reason = 'NOT_STOPPED', "
    # How late the run starts (the dashboard's charts): the old next_run_at is read here.
    "owner = ?2, late = ?1 - next_run_at "
    # "+state": by rowid, never by the dashboard's state index (migration 008).
    f"WHERE rowid IN (SELECT value FROM json_each(?3)) AND +state = 'ENQUEUED' RETURNING {SELECT}"
)


def _prunable(w: str) -> str:
    # Finished before the cut-off, and no unfinished work depends on it (semantics 34).
    return (
        # "+state": by the finished_at index, never the dashboard's state index.
        f"{w}.finished_at < ? AND +{w}.state IN ({_FINISHED}) AND NOT EXISTS ("
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

#: Pausing and resuming a worker (Kind.PAUSE), and the paused names.
PAUSE: Final = "INSERT OR IGNORE INTO wm_paused (worker, since) VALUES (?, ?)"
RESUME: Final = "DELETE FROM wm_paused WHERE worker = ?"
PAUSED: Final = "SELECT worker FROM wm_paused"

#: A limited worker's token bucket written back by a claim (semantics 50).
WRITE_BUCKET: Final = "INSERT OR REPLACE INTO wm_limits (worker, tokens, at) VALUES (?, ?, ?)"

SIGNALS_IN_USE: Final = (
    "SELECT DISTINCT constraints FROM wm_work "
    "WHERE signals != '' AND state IN ('ENQUEUED', 'RUNNING', 'BLOCKED')"
)


_LEVELS_CTE: Final = (
    "WITH RECURSIVE lv(e, p) AS ("
    "SELECT 1, (SELECT priority FROM wm_work WHERE state = 'ENQUEUED' AND expedited = 1 "
    "ORDER BY priority DESC LIMIT 1) "
    "UNION ALL "
    "SELECT 0, (SELECT priority FROM wm_work WHERE state = 'ENQUEUED' AND expedited = 0 "
    "ORDER BY priority DESC LIMIT 1) "
    "UNION ALL "
    "SELECT e, (SELECT priority FROM wm_work WHERE state = 'ENQUEUED' AND expedited = lv.e "
    "AND priority < lv.p ORDER BY priority DESC LIMIT 1) FROM lv WHERE p IS NOT NULL) "
)
#: The priorities of the ENQUEUED works, as ``(expedited, priority)`` rows (in no order):
#: a loose scan of the due index, one seek per priority present.
CLAIM_LEVELS: Final = _LEVELS_CTE + "SELECT e, p FROM lv WHERE p IS NOT NULL"


#: The worker names of the ENQUEUED works, at most ``:most`` (in name order): a loose scan
#: of the index by worker, one seek per name.
CLAIM_WORKERS: Final = (
    "WITH RECURSIVE ws(w) AS ("
    "SELECT (SELECT worker FROM wm_work WHERE state = 'ENQUEUED' ORDER BY worker LIMIT 1) "
    "UNION ALL "
    "SELECT (SELECT worker FROM wm_work WHERE state = 'ENQUEUED' AND worker > ws.w "
    "ORDER BY worker LIMIT 1) FROM ws WHERE ws.w IS NOT NULL LIMIT :most) "
    "SELECT w FROM ws WHERE w IS NOT NULL"
)


@functools.lru_cache(maxsize=128)
def claim_sql(
    n_blocked: int, n_levels: int, paused: bool = False, only: bool = False, workers: int = 0
) -> str:
    """Everything a claim reads, from the due index alone (unless workers are paused),
    in one statement.

    Each level ``i`` is one (expedited, priority) pair, ``:e<i>`` and ``:p<i>``: the
    levels the caller expects. Rows are ``(level, later, rowid, due)``: with ``later`` 0,
    the level's works due at ``:now`` (at most ``:k``), with 1 the first not yet due;
    works needing a blocked signal (``:b0``, ``:b1``, … as ``',name,'``) are skipped, and
    with ``paused`` those of the workers in the JSON array ``:paused``; with ``only``,
    every work but those of the worker ``:only``, and two rows more: ``(-2, running)``,
    its RUNNING count (less the works in the JSON array ``:returned``: runs of the
    claiming process that returned, their outcome not yet written), and ``(-3, tokens, at)``, its bucket, if it has one. With
    ``workers``, the works of the workers ``:w0``, ``:w1``, … alone (instead of
    ``paused``), read worker by worker (the rows of a level are then in no order): a
    claim that leaves a large backlog of paused or limited workers' works behind does
    not scan it.
    Rows with ``level`` -1 are the levels there are (``(-1, expedited, priority,
    NULL)``, as :data:`CLAIM_LEVELS` finds them, in the same snapshot): when they differ
    from the expected ones, the caller claims again with them.
    """
    unparked = ""
    if n_blocked:
        absent = " AND ".join(f"instr(signals, :b{i}) = 0" for i in range(n_blocked))
        unparked = f" AND (signals = '' OR ({absent}))"
    if paused:
        unparked += " AND worker NOT IN (SELECT value FROM json_each(:paused))"
    if only:
        unparked += " AND worker = :only"
    each = [f" AND worker = :w{j}" for j in range(workers)] or [""]
    branches = [
        f"SELECT * FROM (SELECT {i} AS level, {later} AS later, rowid AS rid, "
        "next_run_at AS due FROM wm_work WHERE state = 'ENQUEUED' "
        f"AND expedited = :e{i} AND priority = :p{i} AND next_run_at {op} :now{unparked}"
        f"{one} ORDER BY next_run_at LIMIT {limit})"
        for i in range(n_levels)
        for later, op, limit in ((0, "<=", ":k"), (1, ">", "1"))
        for one in each
    ]
    branches.append("SELECT -1, e, p, NULL FROM lv WHERE p IS NOT NULL")
    if only:  # the worker's RUNNING count and its token bucket (semantics 50)
        branches.append(
            "SELECT -2, count(*), 0, NULL FROM wm_work WHERE state = 'RUNNING' AND worker = :only "
            "AND id NOT IN (SELECT value FROM json_each(:returned))"
        )
        branches.append("SELECT -3, tokens, at, NULL FROM wm_limits WHERE worker = :only")
    return _LEVELS_CTE + " UNION ALL ".join(branches)


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


def resolved_params(r: WorkRecord) -> tuple[object, ...]:
    """The parameters of WRITE_RESOLVED for a dependent resolved by propagation."""
    return (data_text(r.input), 0, *runtime_params(r), r.id)


# -- migration files -------------------------------------------------------------------------


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
