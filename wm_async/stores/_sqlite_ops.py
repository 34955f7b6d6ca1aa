"""SQLiteStore's transactions: the write operations of a group commit batch (see
``_group_commit``), run together in one transaction of the writer connection, and the
setup of a new connection's file. The statements are in ``_sqlite_sql``."""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiosqlite
import attrs

from .._core.errors import (
    InvalidRequestError,
)
from .._core.lifecycle import resolve_new
from . import _codec as codec
from . import _sqlite_errors as errors
from . import _sqlite_sql as sqlite_sql
from ._group_commit import Op
from ._propagation import propagate
from ._sqlite_claim import claim as _claim

if TYPE_CHECKING:
    from .._core.data import Data
    from .._core.lifecycle import (
        Change,
        UniquePlan,
    )
    from .._core.record import WorkRecord
    from ._base import (
        UniquePlanner,
    )

#: The direct prerequisites of new works, by work id, in order.
_Links = Mapping[str, Sequence[str]]


class Kind(enum.Enum):
    """What a queued write does."""

    INSERT = 1
    APPLY = 2
    CLAIM = 3
    PRUNE = 4
    UPDATE_SPEC = 5
    UNIQUE = 6
    QUARANTINE = 7
    PEERS = 8  # statements on wm_peers (see _sqlite_peers)
    PAUSE = 9  # statements on wm_paused: other processes re-read it


@attrs.define(eq=False)
class WriteOp(Op):
    """One caller's write, queued for the next batch (see _group_commit)."""

    kind: Kind = attrs.field(kw_only=True)
    prepared: Any = None


def rows_written(op: WriteOp) -> int:
    """About how many rows a committed op wrote (it paces the WAL checkpoints)."""
    if op.kind is Kind.INSERT:
        return len(op.arg[0])
    if op.kind is Kind.APPLY:
        return len(op.arg)
    if op.kind is Kind.CLAIM:
        return len(op.result[0]) if op.result is not None else 0
    if op.kind is Kind.PRUNE:
        return int(op.result or 0)
    return 1


class _Closable(Protocol):
    async def close(self) -> None: ...


class _DB(Protocol):
    """What a transaction uses of a connection: aiosqlite's connection, or _InThread."""

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Iterable[Any]: ...

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Closable: ...


class _Cursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def close(self) -> None:
        self._cursor.close()


class _InThread:
    """The writer's sqlite3 connection, called from inside its own thread through the
    two aiosqlite methods transactions use. These coroutines never suspend, so a whole
    transaction runs there to its end in one trip, driven by ``send(None)``.

    With aiosqlite, each statement is a trip: the thread runs it, then waits for the
    event loop to pick up the result and send the next one, and a loop busy running
    works keeps it waiting. Reaching the connection's thread needs two private names of
    aiosqlite (``Connection._execute`` and ``Connection._conn``, stable since 0.17);
    without them (:data:`_IN_THREAD` is false) transactions go statement by statement.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Iterable[Any]:
        return self._conn.execute(sql, () if parameters is None else parameters).fetchall()  # type: ignore[arg-type]

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Cursor:
        return _Cursor(self._conn.executemany(sql, parameters))  # type: ignore[arg-type]


class _Dependents:
    """The propagation walk's reads and writes in a SQLite transaction (see
    _propagation); the outputs of a ready dependent come with its count."""

    __slots__ = ("_db", "_outputs")

    def __init__(self, db: _DB) -> None:
        self._db = db
        self._outputs: dict[str, list[Data]] = {}

    async def stopped(self, ids: list[str]) -> list[tuple[str, WorkRecord]]:
        rows = await self._db.execute_fetchall(sqlite_sql.DEPENDENTS, (json.dumps(ids),))
        return [(row[0], codec.record_from_row(row[2:])) for row in rows]

    async def count(self, ids: list[str]) -> list[tuple[int, WorkRecord]]:
        counted = []
        for row in await self._db.execute_fetchall(sqlite_sql.UNBLOCK, (json.dumps(ids),)):
            child = codec.record_from_row(row[2:])
            if row[0] <= 0:
                self._outputs[child.id] = codec.outputs_in_order(json.loads(row[1]))
            counted.append((row[0], child))
        return counted

    async def outputs(self, ready: list[WorkRecord]) -> list[list[Data]]:
        return [self._outputs.pop(r.id) for r in ready]

    async def write(self, records: list[WorkRecord]) -> None:
        await self._db.executemany(
            sqlite_sql.WRITE_RESOLVED, [sqlite_sql.resolved_params(r) for r in records]
        )


_IN_THREAD: Final = callable(getattr(aiosqlite.Connection, "_execute", None)) and isinstance(
    getattr(aiosqlite.Connection, "_conn", None), property
)


class BatchError(Exception):
    """A batch's transaction failed with ``error`` (``transient``: worth retrying, or
    failing every op of the batch, as no op alone caused it)."""

    def __init__(self, error: BaseException, *, transient: bool) -> None:
        self.error = error
        self.transient = transient


#: Each op's ``(result, error)``.
Outcomes = dict[WriteOp, tuple[Any, BaseException | None]]


def prepare(op: WriteOp) -> Any:
    """What can be made of ``op`` before its transaction (outside the writer's thread):
    the rows of plain inserts and of applies."""
    if op.kind is Kind.INSERT:
        records, links = op.arg
        if links:
            return None  # resolved against the stored prerequisites in the transaction
        rows = [codec.insert_params(r) for r in records]
        return rows, [
            (tag, row[0]) for r, row in zip(records, rows, strict=True) for tag in r.tags
        ]
    if op.kind is Kind.APPLY:
        return [
            (c.before.id, c.before.state._value_, c.before.run_attempt_count,
             *codec.runtime_params(c.after))
            for c in op.arg
        ]  # fmt: skip
    return None


#: Most works an insert may hold to run on the event loop's thread (see transact).
INLINE_MAX_WORKS: Final = 16


def _inline(ops: list[WriteOp]) -> bool:
    """Whether ``ops`` are a small plain insert alone (see :func:`transact`)."""
    if len(ops) != 1:
        return False
    op = ops[0]
    return (
        op.kind is Kind.INSERT and op.prepared is not None and len(op.arg[0]) <= INLINE_MAX_WORKS
    )


async def transact(
    db: aiosqlite.Connection,
    ops: list[WriteOp],
    *,
    check: Callable[[], None],
    inline: bool = False,
    busy_timeout: float = 5.0,
) -> Outcomes:
    """Run ``ops`` in one transaction on the writer ``db`` (no retry); return each op's
    ``(result, error)``. ``check`` runs first, in the transaction's thread, and may
    raise to write nothing.

    With ``inline`` (``synchronous=NORMAL``: a COMMIT appends to the WAL and does not
    wait for the disk), a small insert alone in its batch (one producer enqueueing one
    work per call, as a web request does) runs on the event loop's thread: a few tens of
    microseconds of SQLite, against two thread hand-overs that each wait for the OS to
    wake a thread (about half of such a call's time, and far more on a loaded machine).
    It never waits for a lock there: if another process holds the write lock, it goes
    to the connection's thread, which waits ``busy_timeout`` as any other transaction.
    The COMMIT is the same either way, so the call still returns after it."""
    # A claim alone needs no explicit transaction: it writes with one statement, an
    # UPDATE … RETURNING guarded by state = 'ENQUEUED', which commits atomically by
    # itself. That saves two round trips to the connection's thread on the path from a
    # timer firing to its work starting. (A claim of limited workers also writes their
    # token buckets, each by a statement of its own: only this process claims on the
    # file, the scheduler lock's holder, so the RUNNING counts it read cannot grow
    # before its update; other processes' writes can only end runs.)
    single = len(ops) == 1 and ops[0].kind is Kind.CLAIM
    if _IN_THREAD:
        if inline and _inline(ops):
            done = _transact_inline(db._conn, ops, check, round(busy_timeout * 1000))
            if done is not None:
                return done
        # The whole transaction in one trip to the connection's thread: the loop goes
        # on running works meanwhile instead of waking up between statements (see
        # _InThread).
        outcomes: Outcomes = await db._execute(  # type: ignore[no-untyped-call]
            _transact_in_thread, db._conn, ops, single, check
        )
        return outcomes
    return await _transaction(db, ops, single, check)


def _transact_inline(
    conn: sqlite3.Connection, ops: list[WriteOp], check: Callable[[], None], busy_ms: int
) -> Outcomes | None:
    """On the event loop's thread: the transaction, begun without waiting for a lock;
    ``None`` (nothing done) if another connection holds the write lock."""
    check()  # before anything is written
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if errors.is_transient(exc):
            return None
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    return _run_to_end(_transaction(_InThread(conn), ops, False, check, begun=True))


def _transact_in_thread(
    conn: sqlite3.Connection, ops: list[WriteOp], single: bool, check: Callable[[], None]
) -> Outcomes:
    """In the writer connection's thread: run the transaction to its end."""
    return _run_to_end(_transaction(_InThread(conn), ops, single, check))


def _run_to_end(transaction: Coroutine[Any, Any, Outcomes]) -> Outcomes:
    """Drive a transaction on ``_InThread`` (it never suspends) to its end."""
    try:
        transaction.send(None)
    except StopIteration as done:
        outcomes: Outcomes = done.value
        return outcomes
    transaction.close()
    raise RuntimeError("a transaction awaited something outside the database")


async def _transaction(
    db: _DB, ops: list[WriteOp], single: bool, check: Callable[[], None], *, begun: bool = False
) -> Outcomes:
    if not begun:
        check()  # before anything is written
        if single:
            return await _execute(db, ops)
        await db.execute_fetchall("BEGIN IMMEDIATE")
    try:
        outcomes = await _execute(db, ops)
        await db.execute_fetchall("COMMIT")
    except BaseException:
        await rollback(db)
        raise
    return outcomes


async def rollback(db: _DB) -> None:
    """Roll back the transaction in progress, if any."""
    try:
        await db.execute_fetchall("ROLLBACK")
    except aiosqlite.Error:
        pass  # BEGIN had failed: there is no transaction to roll back


async def _execute(db: _DB, ops: list[WriteOp]) -> Outcomes:
    # Ops of one batch are concurrent, so any order is a valid serial order: inserts
    # first (their works can be claimed at once), all applies merged, then the rest.
    out: Outcomes = {}
    inserts = [op for op in ops if op.kind is Kind.INSERT]
    if inserts:
        await _insert(db, inserts, out)
    applies = [op for op in ops if op.kind is Kind.APPLY]
    if applies:
        await _apply(db, applies, out)
    for op in ops:
        if op.kind is Kind.CLAIM:
            out[op] = (await _claim(db, op.arg), None)
        elif op.kind is Kind.UNIQUE:
            out[op] = (await _unique(db, *op.arg), None)
        elif op.kind is Kind.QUARANTINE:
            await (await db.executemany(sqlite_sql.QUARANTINE, op.arg)).close()
            out[op] = (None, None)
        elif op.kind is Kind.UPDATE_SPEC:
            out[op] = (await _update_spec(db, op.arg), None)
        elif op.kind is Kind.PEERS or op.kind is Kind.PAUSE:
            for statement, args in op.arg:
                await db.execute_fetchall(statement, args)
            out[op] = (None, None)
        elif op.kind is Kind.PRUNE:
            await db.execute_fetchall(sqlite_sql.PRUNE_TAGS, (op.arg,))
            await db.execute_fetchall(sqlite_sql.PRUNE_EDGES, (op.arg,))
            deleted = await db.execute_fetchall(sqlite_sql.PRUNE_WORKS, (op.arg,))
            out[op] = (len(list(deleted)), None)
    return out


async def _unique(db: _DB, name: str, plan: UniquePlanner) -> tuple[UniquePlan, list[WorkRecord]]:
    # Inside the writer's transaction: no other write can slip between the read and
    # the plan's writes, so concurrent enqueues on one name serialise.
    rows = await db.execute_fetchall(sqlite_sql.BY_UNIQUE_NAME, (name,))
    existing = [codec.record_from_row(row) for row in rows]
    leaves = existing
    if existing:
        ids = json.dumps([r.id for r in existing])
        inner = {row[0] for row in await db.execute_fetchall(sqlite_sql.HAVE_DEPENDENTS, (ids,))}
        leaves = [r for r in existing if r.id not in inner]
    decided = plan(existing, leaves)
    gone = set(decided.deletes)
    fresh = [r.id for r in decided.inserts if r.id not in gone]
    if fresh:
        taken = [
            row[0]
            for row in await db.execute_fetchall(sqlite_sql.EXISTING_IDS, (json.dumps(fresh),))
        ]
        if taken:
            raise InvalidRequestError("id", taken, "a work with this id already exists")
    written: list[WorkRecord] = []
    if decided.cancels:
        flat = [
            value
            for c in decided.cancels
            for value in (c.before.id, c.before.state.value, c.before.run_attempt_count,
                          *codec.runtime_params(c.after))
        ]  # fmt: skip
        done: dict[str, bool] = {
            work_id: bool(has_dependents)
            for work_id, _, has_dependents in await db.execute_fetchall(
                sqlite_sql.apply_sql(len(decided.cancels)), flat
            )
        }
        ended: dict[str, tuple[WorkRecord, Any]] = {}
        for c in decided.cancels:
            if c.after.id in done:
                written.append(c.after)
                if done[c.after.id]:
                    ended[c.after.id] = (c.after, None)
        if ended:
            written += [r for _, r in await _propagate(db, ended)]
    if decided.deletes:
        doomed = json.dumps(list(decided.deletes))
        await db.execute_fetchall(sqlite_sql.DELETE_TAGS_OF, (doomed,))
        await db.execute_fetchall(sqlite_sql.DELETE_EDGES_OF, (doomed,))
        await db.execute_fetchall(sqlite_sql.DELETE_WORKS, (doomed,))
    if decided.inserts:
        written += await _insert_new(db, decided.inserts, decided.prerequisites, skip=gone)
    return decided, written


async def _update_spec(db: _DB, change: Change) -> WorkRecord | None:
    before, after = change.before, change.after
    params = codec.insert_params(after)
    rows = await db.execute_fetchall(
        sqlite_sql.UPDATE_SPEC,
        (*params[1:codec.N_SPEC], after.next_run_at, params[-1], before.id, before.state.value,
         before.run_attempt_count, before.generation),
    )  # fmt: skip
    if not list(rows):
        return None
    await db.execute_fetchall(sqlite_sql.DELETE_TAGS, (after.id,))
    await db.executemany(sqlite_sql.INSERT_TAG, [(tag, after.id) for tag in after.tags])
    return after


async def _insert(db: _DB, ops: list[WriteOp], out: Outcomes) -> None:
    ids = [r.id for op in ops for r in op.arg[0]]
    taken = {r[0] for r in await db.execute_fetchall(sqlite_sql.EXISTING_IDS, (json.dumps(ids),))}
    works: list[tuple[object, ...]] = []
    tags: list[tuple[str, object]] = []
    for op in ops:
        records, links = op.arg
        mine: set[str] = set()
        for record in records:
            if record.id in taken or record.id in mine:
                error = InvalidRequestError("id", record.id, "a work with this id already exists")
                out[op] = (None, error)
                break
            mine.add(record.id)
        else:
            if links:
                try:  # chains: resolved now, each op on its own (rare next to plain ones)
                    out[op] = (await _insert_new(db, records, links), None)
                except InvalidRequestError as exc:
                    out[op] = (None, exc)
                    continue
            else:
                rows, op_tags = op.prepared
                works += rows
                tags += op_tags
                out[op] = (records, None)
            taken |= mine
    if works:
        await (await db.executemany(sqlite_sql.INSERT_WORK, works)).close()
    if tags:
        await (await db.executemany(sqlite_sql.INSERT_TAG, tags)).close()


async def _insert_new(
    db: _DB,
    records: Sequence[WorkRecord],
    links: _Links,
    *,
    skip: Collection[str] = (),
) -> list[WorkRecord]:
    """Insert works, chained ones in the state their prerequisites give them (their
    ids are free; prerequisites in ``skip`` are being deleted)."""
    if not links:
        await db.executemany(sqlite_sql.INSERT_WORK, [codec.insert_params(r) for r in records])
        await db.executemany(sqlite_sql.INSERT_TAG, [(t, r.id) for r in records for t in r.tags])
        return list(records)
    new = {r.id for r in records}
    wanted = {p for ps in links.values() for p in ps if p not in new and p not in skip}
    known: dict[str, WorkRecord] = {}
    if wanted:
        found = await db.execute_fetchall(sqlite_sql.GET, (json.dumps(sorted(wanted)),))
        known = {row[1]: codec.record_from_row(row) for row in found}
    stored, waiting, edges = resolve_new(records, links, known)
    rows = [(*codec.insert_params(r), n) for r, n in zip(stored, waiting, strict=True)]
    await db.executemany(sqlite_sql.INSERT_CHAINED, rows)
    await db.executemany(sqlite_sql.INSERT_TAG, [(t, r.id) for r in stored for t in r.tags])
    await db.executemany(sqlite_sql.INSERT_DEPENDENCY, edges)
    return stored


async def _propagate(
    db: _DB, ended: dict[str, tuple[WorkRecord, Any]]
) -> list[tuple[Any, WorkRecord]]:
    """Resolve the BLOCKED dependents of the ``ended`` works (id → (record, origin));
    return ``(origin, record)`` for each dependent written."""
    return await propagate(_Dependents(db), ended)


async def _apply(db: _DB, ops: list[WriteOp], out: Outcomes) -> None:
    # A work changed twice in one batch goes into successive statements, so the second
    # change is checked against the first one's write, as if applied one by one.
    slots: list[list[WorkRecord | None]] = []
    rounds: list[list[tuple[list[WorkRecord | None], int, Change, tuple[Any, ...]]]] = []
    seen: dict[str, int] = {}
    ended: dict[str, tuple[WorkRecord, Any]] = {}  # finished works with dependents
    for op in ops:
        slot: list[WorkRecord | None] = [None] * len(op.arg)
        slots.append(slot)
        for i, (change, params) in enumerate(zip(op.arg, op.prepared, strict=True)):
            n = seen[params[0]] = seen.get(params[0], -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append((slot, i, change, params))
    for entries in rounds:
        for start in range(0, len(entries), sqlite_sql.APPLY_MAX_ROWS):
            chunk = entries[start : start + sqlite_sql.APPLY_MAX_ROWS]
            # Padded to a power of two with rows that match nothing (id NULL), so a
            # few prepared statements serve every batch size.
            size = min(1 << (len(chunk) - 1).bit_length(), sqlite_sql.APPLY_MAX_ROWS)
            flat = [v for entry in chunk for v in entry[3]]
            flat += [None] * (len(chunk[0][3]) * (size - len(chunk)))
            by_id = {entry[3][0]: entry for entry in chunk}
            stale = []
            for work_id, generation, has_dependents in await db.execute_fetchall(
                sqlite_sql.apply_sql(size), flat
            ):
                slot, i, change, _ = by_id[work_id]
                if generation == change.after.generation:
                    slot[i] = change.after
                else:  # the spec was updated meanwhile: it was kept, so read it back
                    stale.append(work_id)
                if has_dependents:
                    ended[work_id] = (change.after, slot)
            if stale:
                for row in await db.execute_fetchall(sqlite_sql.GET, (json.dumps(stale),)):
                    slot, i, _, _ = by_id[row[1]]
                    current = slot[i] = codec.record_from_row(row)
                    if row[1] in ended:
                        ended[row[1]] = (current, slot)
    extra: dict[int, list[WorkRecord]] = {}
    if ended:
        for slot, record in await _propagate(db, ended):
            extra.setdefault(id(slot), []).append(record)
    for op, slot in zip(ops, slots, strict=True):
        out[op] = ([r for r in slot if r is not None] + extra.get(id(slot), []), None)
