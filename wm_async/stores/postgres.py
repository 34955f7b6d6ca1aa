"""PostgresStore: works in a PostgreSQL database shared by any number of processes.

- An asyncpg pool; every Store operation is one transaction (most are one statement)
  built from the pure lifecycle functions, each write guarded by the state, attempt
  count and owner it expects (compare-and-set).
- Claims lock due rows with ``FOR UPDATE SKIP LOCKED`` in batches and give the claimer
  a lease; the scheduler renews its leases every half lease; works whose lease expired
  (their process died) are re-enqueued by whichever process notices.
- Every write announces the ids it wrote with NOTIFY (in the same transaction, so only
  committed changes are announced); :meth:`PostgresStore.follow` LISTENs, wakes the
  dispatcher and tells the manager, and polls (jittered) in case a notification is
  missed, and after every reconnection.
- The schema lives in a PostgreSQL schema of its own (``wm_async`` unless told
  otherwise), versioned by ``wm_schema`` and migrated at open under an advisory lock.
- Transient driver errors (lost connections, restarts, deadlocks) are retried for a
  bounded time; every driver error reaches callers as :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from itertools import count
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import anyio
import anyio.lowlevel
import asyncpg
import attrs
from anyio.abc import TaskStatus

from .. import _lifecycle as lc
from .. import _validators as v
from .._errors import InvalidRequestError, StoreCorruptError, StoreError
from .._lifecycle import recover
from .._model import Constraints, WorkState
from .._redact import mask_text, mask_url
from . import _postgres_schema as pg
from ._base import Claimed, ClaimParams, Store, StoreListener, resolve_new
from ._postgres_listen import ChangeFeed
from ._sqlite_schema import (
    COLUMNS,
    insert_params,
    outputs_in_order,
    record_from_row,
    runtime_params,
    signal_key,
)

if TYPE_CHECKING:
    from .._lifecycle import Change, UniquePlan
    from .._model import WorkQuery
    from .._record import WorkRecord
    from ._base import UniquePlanner

__all__ = ("PostgresStore",)

logger = logging.getLogger("wm_async.stores.postgres")

_T = TypeVar("_T")
_Conn = Any  # asyncpg.Connection (asyncpg ships no type information)

#: Retries back off from this delay, doubling, up to _BACKOFF_MAX.
_BACKOFF_MIN: Final = 0.05
_BACKOFF_MAX: Final = 1.0
#: Expired leases re-enqueued per transaction.
_RESCUE_BATCH: Final = 500
#: Bound on closing connections (a dead server must not hang close()).
_CLOSE_TIMEOUT: Final = 5.0


def _seconds(field: str, value: object) -> float:
    td = v.to_timedelta(field, value)
    v.check_positive(field, td)
    return td.total_seconds()


def _to_lease(value: object) -> float:
    return _seconds("lease", value)


def _to_poll_interval(value: object) -> float:
    return _seconds("poll_interval", value)


def _to_retry_timeout(value: object) -> float:
    return _seconds("retry_timeout", value)


def _check_clock(instance: object, attribute: object, value: object) -> None:
    if value not in ("auto", "database", "caller"):
        raise InvalidRequestError("clock", value, "expected 'auto', 'database' or 'caller'")


def _check_pool_size(instance: object, attribute: object, value: object) -> None:
    v.check_int("pool_size", value, 1)


def _to_dsn(value: object) -> str:
    if not isinstance(value, str) or not value.lower().startswith(
        ("postgresql://", "postgres://")
    ):
        shown = mask_url(value) if isinstance(value, str) else value
        raise InvalidRequestError("dsn", shown, "expected a postgresql:// URL")
    try:
        pg.split_dsn(value)
    except ValueError as exc:  # urlsplit's message may quote the netloc: mask it
        reason = mask_text(str(exc), secrets_of=value)
        raise InvalidRequestError("dsn", mask_url(value), f"not a valid URL: {reason}") from None
    return value


@attrs.define(eq=False)
class _Op:
    """One caller's ``apply``, waiting for the next group commit."""

    changes: list[Change]
    # result ready, or: lead. An asyncio Event: one is made per write, and anyio's costs
    # ten times as much to create (it looks up the backend); the scheduler is asyncio's.
    wake: asyncio.Event = attrs.field(factory=asyncio.Event)
    pending: bool = True  # not yet taken into a batch
    promoted: bool = False  # handed the lead while queued
    result: list[WorkRecord] = attrs.field(factory=list)
    error: BaseException | None = None


@attrs.define(eq=False, repr=False)
class PostgresStore(Store):
    """A store in a PostgreSQL database that several processes (one manager each) share.

    ``PostgresStore("postgresql://user@host/db", schema="myapp")``;
    ``open_store("postgresql://user@host/db?schema=myapp")`` makes the same. Needs the
    ``postgres`` extra (asyncpg).

    :param dsn: a ``postgresql://`` URL; a ``schema`` query parameter sets ``schema``
    :param schema: the PostgreSQL schema holding wm_async's tables (default
        ``wm_async``), so several apps can share one database; created if missing
    :param lease: how long a claim's lease lasts; each process renews its running works'
        leases every half of it, and another process re-runs a work whose lease expired
    :param poll_interval: the fallback poll (jittered ±25 %) that bounds the delay when a
        notification is missed; only while the manager runs on the system clock
    :param clock: which clock due times and leases are compared with: ``"database"``
        (the server's, immune to host clock skew), ``"caller"`` (the ``now`` the manager
        passes, e.g. a VirtualClock's) or ``"auto"`` (the database's when the manager
        runs on the system clock)
    :param pool_size: the most connections the pool opens (the listener uses one more)
    :param retry_timeout: how long an operation retries transient errors (lost
        connections, a restarting server) before it raises :class:`StoreError`
    :raises InvalidRequestError: for an invalid argument
    """

    _dsn: str = attrs.field(converter=_to_dsn)
    _schema: str | None = attrs.field(default=None, kw_only=True)
    _lease: float = attrs.field(default=30.0, kw_only=True, converter=_to_lease)
    _poll_interval: float = attrs.field(default=1.0, kw_only=True, converter=_to_poll_interval)
    _clock: Literal["auto", "database", "caller"] = attrs.field(
        default="auto", kw_only=True, validator=_check_clock
    )
    _pool_size: int = attrs.field(default=10, kw_only=True, validator=_check_pool_size)
    _retry_timeout: float = attrs.field(default=30.0, kw_only=True, converter=_to_retry_timeout)
    _sql: pg.Schema = attrs.field(init=False)
    _pool: Any = attrs.field(init=False, default=None)  # asyncpg.Pool
    _lock: anyio.Lock | None = attrs.field(init=False, default=None)
    _db_clock: bool = attrs.field(init=False, default=False)
    _sender: str = attrs.field(init=False, factory=lambda: uuid.uuid4().hex[:12])
    _applying: bool = attrs.field(init=False, default=False)  # a batch leader runs
    _apply_queue: list[_Op] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self._dsn, from_url = pg.split_dsn(self._dsn)
        if self._schema is None:
            self._schema = from_url or pg.DEFAULT_SCHEMA
        self._sql = pg.Schema(pg.check_schema(self._schema))
        self._db_clock = self._clock == "database"

    def __repr__(self) -> str:
        return f"PostgresStore({mask_url(self._dsn)!r}, schema={self._sql.name!r})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the tables."""
        return self._sql.name

    @property
    def lease_duration(self) -> float:
        """How long a claim's lease lasts, in seconds."""
        return self._lease

    # -- lifetime --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the schema or migrate it (under an advisory lock, so processes
        starting together do not race). Idempotent.

        :raises StoreCorruptError: if the schema was written by a newer wm_async
        :raises StoreError: if the database cannot be reached
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._pool is not None:
                return
            migrations = await anyio.to_thread.run_sync(pg.migrations)
            try:
                pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=self._pool_size, timeout=10
                )
            except Exception as exc:
                raise self._error(exc, "connecting") from exc
            try:
                await self._migrate(pool, migrations)
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
                    await pool.close()
                raise
            self._pool = pool

    async def _migrate(self, pool: Any, migrations: tuple[tuple[int, str], ...]) -> None:
        q, name = self._sql.quoted, self._sql.name
        latest = migrations[-1][0]

        async def migrate(conn: _Conn) -> None:
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", pg.LOCK_CLASS, name
            )
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q}.wm_schema (version integer NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            version = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {q}.wm_schema")
            if version > latest:
                raise StoreCorruptError(
                    f"schema {name} was written by a newer wm_async (version {version}, this "
                    f"version knows up to {latest}); upgrade wm_async. Nothing was changed"
                )
            for number, script in migrations:
                if number > version:
                    await conn.execute(f"SET LOCAL search_path TO {q}")
                    await conn.execute(script)
                    await conn.execute(f"INSERT INTO {q}.wm_schema (version) VALUES ($1)", number)

        await self._run("migrating", migrate, pool=pool)

    async def close(self) -> None:
        """Close the pool. Idempotent."""
        if self._lock is None:
            return
        with anyio.CancelScope(shield=True):
            async with self._lock:
                pool, self._pool = self._pool, None
                if pool is None:
                    return
                with anyio.move_on_after(_CLOSE_TIMEOUT) as scope:
                    await pool.close()
                if scope.cancelled_caught:
                    pool.terminate()

    def _error(self, exc: BaseException, doing: str) -> StoreError:
        # A driver's message may quote the DSN or a part of it: never show a secret.
        message = mask_text(repr(exc), secrets_of=self._dsn)
        return StoreError(f"PostgreSQL store (schema {self.schema}): {doing} failed: {message}")

    def _not_open(self) -> StoreError:
        return StoreError(f"store is not open: {self!r} (use 'async with store:')")

    def _base(self, now: float) -> float | None:
        """The time SQL compares with: ``None`` makes it use the database's clock."""
        return None if self._db_clock else now

    async def _run(
        self,
        doing: str,
        fn: Callable[[_Conn], Awaitable[_T]],
        *,
        transaction: bool = True,
        pool: Any = None,
    ) -> _T:
        """Run ``fn`` on a pooled connection (in a transaction), retrying transient
        errors for up to ``retry_timeout``; driver errors become StoreError."""
        slept = 0.0
        for attempt in count():
            use = pool or self._pool
            if use is None:
                raise self._not_open()
            try:
                async with use.acquire() as conn:
                    if not transaction:
                        return await fn(conn)
                    async with conn.transaction():
                        return await fn(conn)
            except (StoreError, InvalidRequestError):
                raise
            except Exception as exc:
                if not pg.is_transient(exc) or slept >= self._retry_timeout:
                    raise self._error(exc, doing) from exc
                if attempt == 0:
                    logger.warning(
                        "%s: %s; retrying", doing, mask_text(repr(exc), secrets_of=self._dsn)
                    )
            delay = min(_BACKOFF_MIN * 2**attempt, _BACKOFF_MAX)
            await anyio.sleep(delay)
            slept += delay
        raise AssertionError("unreachable")

    def _notify_args(self) -> dict[str, object]:
        return {"channel": self._sql.channel, "sender": self._sender}

    # -- the Store operations --------------------------------------------------------------

    async def insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None = None,
    ) -> list[WorkRecord]:
        """Insert new works, all or none, and announce them; chained ones are resolved
        against their prerequisites in the same transaction. Returns them as stored.

        :raises InvalidRequestError: if a work with one of the ids already exists, or a
            prerequisite does not
        :raises StoreError: if the database fails
        """
        if not records:
            if self._pool is None:
                raise self._not_open()
            return []
        if prerequisites:
            links = prerequisites

            async def chained(conn: _Conn) -> list[WorkRecord]:
                taken = [
                    row[0]
                    for row in await conn.fetch(self._sql.existing.text, [r.id for r in records])
                ]
                if taken:
                    raise InvalidRequestError("id", taken[0], "a work with this id already exists")
                return await self._insert_new(conn, records, links)

            return await self._run("inserting", chained)
        rows = [insert_params(r) for r in records]
        columns = {f"c{i}": list(col) for i, col in enumerate(zip(*rows, strict=True))}
        statement = self._sql.insert
        args = statement.args(**columns, **self._notify_args())
        tries = 0

        async def write(conn: _Conn) -> None:
            nonlocal tries
            tries += 1
            await conn.fetch(statement.text, *args)

        try:
            await self._run("inserting", write, transaction=False)
        except StoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
            await self._duplicates(records, retried=tries > 1)
        return list(records)

    async def _insert_new(
        self,
        conn: _Conn,
        records: Sequence[WorkRecord],
        links: Mapping[str, Sequence[str]],
        *,
        skip: Collection[str] = (),
    ) -> list[WorkRecord]:
        """Insert works (their ids are free), chained ones in the state their
        prerequisites give them; prerequisites in ``skip`` are being deleted."""
        sql = self._sql
        new = {r.id for r in records}
        wanted = sorted({p for ps in links.values() for p in ps if p not in new and p not in skip})
        known: dict[str, WorkRecord] = {}
        if wanted:
            rows = await conn.fetch(sql.get_for_share.text, wanted)
            known = {row[1]: record_from_row(tuple(row)) for row in rows}
        stored, waiting, edges = resolve_new(records, links, known)
        rows_in = [insert_params(r) for r in stored]
        columns = {f"c{i}": list(col) for i, col in enumerate(zip(*rows_in, strict=True))}
        statement = sql.insert_chained
        await conn.fetch(
            statement.text, *statement.args(**columns, waiting=waiting, **self._notify_args())
        )
        if edges:
            p, w, n = (list(col) for col in zip(*edges, strict=True))
            await conn.execute(sql.insert_edges.text, *sql.insert_edges.args(p=p, w=w, n=n))
        return stored

    async def _duplicates(self, records: Sequence[WorkRecord], *, retried: bool) -> None:
        """An insert met existing ids: raise for the first, unless a retry met the rows
        its own earlier attempt committed (the commit's answer was lost)."""
        ids = [r.id for r in records]
        found = {
            row[0]: (row[1], row[2])
            for row in await self._fetch("reading", self._sql.existing_rows, ids=ids)
        }
        ours = {r.id: (r.worker, r.enqueued_at) for r in records}
        if retried and len(set(ids)) == len(ids) and found == ours:
            return
        seen: set[str] = set()
        for rid in ids:
            if rid in found or rid in seen:
                raise InvalidRequestError("id", rid, "a work with this id already exists")
            seen.add(rid)
        raise StoreError("inserting failed on a unique index, but no id is taken now")

    async def _fetch(self, doing: str, statement: pg.Statement, **values: object) -> list[Any]:
        args = statement.args(**values)

        async def read(conn: _Conn) -> list[Any]:
            rows: list[Any] = await conn.fetch(statement.text, *args)
            return rows

        return await self._run(doing, read, transaction=False)

    async def claim_due(self, params: ClaimParams) -> Claimed:
        """Claim due unparked works, expedited first, in one statement that also sets
        owner, lease and attempt count; then read the next due time.

        :raises StoreError: if the database fails
        """
        limit = max(params.limit, 0)
        blocked = sorted(f",{signal_key(n)}," for n in params.blocked_signals)
        values: dict[str, object] = {
            "base": self._base(params.now),
            "now": params.now,
            "limit": limit,
            "owner": params.owner,
            "lease": self._lease,
            "lease_until": params.lease_until,
            "blocked": blocked,
            "met": sorted(params.constraints_met),
            **self._notify_args(),
        }
        claim, next_due = self._sql.claim(bool(blocked)), self._sql.next_due(bool(blocked))

        async def run(conn: _Conn) -> tuple[list[Any], Any]:
            rows = await conn.fetch(claim.text, *claim.args(**values)) if limit else []
            return rows, await conn.fetchrow(next_due.text, *next_due.args(**values))

        rows, due_row = await self._run("claiming", run, transaction=False)
        rows.sort(key=lambda row: (-row[0], row[1], row[2]))
        records = [record_from_row(tuple(row)[2:]) for row in rows]
        due, compared_with = due_row
        if due is not None and self._db_clock:
            due = due - compared_with + params.now  # the database's clock → the caller's
        return Claimed(records=records, next_due=due)

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        """Apply guarded changes; return the records written. Concurrent calls share one
        statement (group commit): the first caller leads a batch of everything queued,
        then hands the lead to the next queued caller, so nobody serves others for longer
        than one batch.

        :raises StoreError: if the database fails
        """
        if self._pool is None:
            raise self._not_open()
        if not changes:
            return []
        op = _Op(list(changes))
        self._apply_queue.append(op)
        if self._applying:
            try:
                await op.wake.wait()
            except BaseException:
                if op.pending:  # cancelled before any batch took it: it never runs
                    self._apply_queue.remove(op)
                    if op.promoted:
                        self._hand_off()
                raise
            if op.pending:  # promoted: lead the batch that holds this op
                await self._lead()
        else:
            self._applying = True
            await self._lead()
        if op.error is not None:
            raise op.error
        return op.result

    async def _lead(self) -> None:
        try:
            with anyio.CancelScope(shield=True):  # followers wait for this batch
                await anyio.lowlevel.checkpoint()  # let concurrent callers join
                batch, self._apply_queue = self._apply_queue, []
                for queued in batch:
                    queued.pending = False
                try:
                    await self._apply_batch(batch)
                finally:
                    for queued in batch:
                        queued.wake.set()
        finally:
            self._hand_off()

    def _hand_off(self) -> None:
        if self._apply_queue:
            first = self._apply_queue[0]
            first.promoted = True
            first.wake.set()
        else:
            self._applying = False

    async def _apply_batch(self, batch: list[_Op]) -> None:
        changes = [c for op in batch for c in op.changes]
        try:
            written, resolved = await self._run(
                "writing", lambda conn: self._write_and_propagate(conn, changes)
            )
        except Exception as exc:  # noqa: BLE001  # handed to the callers, raised there
            if len(batch) == 1 or pg.is_transient(exc.__cause__ or exc):
                for op in batch:
                    op.error = exc
                return
            for op in batch:  # find whose changes failed: only its caller sees the error
                await self._apply_batch([op])
            return
        start = 0
        for op in batch:
            end = start + len(op.changes)
            mine = written[start:end]
            op.result = [r for r in mine if r is not None]
            op.result += [r for origin, r in resolved if start <= origin < end]
            start = end

    async def _write(self, conn: _Conn, changes: Sequence[Change]) -> list[WorkRecord | None]:
        """Apply ``changes`` on ``conn`` (compare-and-set); the record written for each,
        or ``None`` where its guard failed."""
        out: list[WorkRecord | None] = [None] * len(changes)
        # A work changed twice goes into successive statements, so the second change is
        # checked against the first one's write, as if applied one by one.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, change in enumerate(changes):
            n = seen[change.before.id] = seen.get(change.before.id, -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(i)
        statement = self._sql.apply
        for indexes in rounds:
            rows = [
                (c.before.id, c.before.state.value, c.before.run_attempt_count, c.before.owner,
                 *runtime_params(c.after))
                for c in (changes[i] for i in indexes)
            ]  # fmt: skip
            arrays = {f"a{k}": list(col) for k, col in enumerate(zip(*rows, strict=True))}
            by_id = {changes[i].before.id: i for i in indexes}
            stale = []
            for work_id, generation in await conn.fetch(
                statement.text, *statement.args(**arrays, **self._notify_args())
            ):
                i = by_id[work_id]
                if generation == changes[i].after.generation:
                    out[i] = changes[i].after
                else:  # the spec was updated meanwhile: it was kept, so read it back
                    stale.append(work_id)
            if stale:
                for row in await conn.fetch(self._sql.get.text, stale):
                    out[by_id[row[1]]] = record_from_row(tuple(row))
        return out

    async def _write_and_propagate(
        self, conn: _Conn, changes: Sequence[Change]
    ) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
        """:meth:`_write`, then resolve the dependents of the works it finished, in the
        same transaction; the second list pairs each dependent written with the index of
        the change that resolved it."""
        written = await self._write(conn, changes)
        ended = {
            r.id: (r, i) for i, r in enumerate(written) if r is not None and r.state.is_finished
        }
        return written, await self._propagate(conn, ended) if ended else []

    async def _propagate(
        self, conn: _Conn, ended: dict[str, tuple[WorkRecord, int]]
    ) -> list[tuple[int, WorkRecord]]:
        """Resolve the BLOCKED dependents of the ``ended`` works, level by level (SEMANTICS
        19 and 29). Each step is a statement of its own, so under READ COMMITTED it sees
        the edges and outputs that concurrent transactions committed before it."""
        sql = self._sql
        out: list[tuple[int, WorkRecord]] = []
        frontier = ended
        while frontier:
            resolved: list[tuple[int, WorkRecord]] = []
            stopped = {k: v for k, v in frontier.items() if v[0].state is not WorkState.SUCCEEDED}
            if stopped:  # failures and cancellations first: they win over a success
                decided: dict[str, tuple[int, WorkRecord]] = {}
                for row in await conn.fetch(sql.dependents.text, list(stopped)):
                    done, origin = stopped[row[0]]
                    after = lc.prerequisite_ended(done, record_from_row(tuple(row[1:])))
                    assert after is not None
                    previous = decided.get(after.id)
                    if previous is None or (
                        after.state is WorkState.FAILED
                        and previous[1].state is not WorkState.FAILED
                    ):
                        decided[after.id] = (origin, after)
                resolved += decided.values()
                await self._write_resolved(conn, [r for _, r in decided.values()])
            succeeded = [v for v in frontier.values() if v[0].state is WorkState.SUCCEEDED]
            if succeeded:
                ids = [r.id for r, _ in succeeded]
                now = max(r.finished_at or 0.0 for r, _ in succeeded)
                origin = succeeded[0][1]
                ready = [
                    record_from_row(tuple(row[1:]))
                    for row in await conn.fetch(sql.unblock.text, ids)
                    if row[0] <= 0
                ]
                if ready:
                    outputs: dict[str, list[tuple[int, str]]] = {}
                    for work_id, position, output in await conn.fetch(
                        sql.prerequisite_outputs.text, [r.id for r in ready]
                    ):
                        outputs.setdefault(work_id, []).append((position, output))
                    unblocked = [
                        lc.unblock(child, outputs_in_order(outputs.get(child.id, [])), now=now)
                        for child in ready
                    ]
                    await self._write_resolved(conn, unblocked)
                    resolved += [(origin, r) for r in unblocked]
            out += resolved
            frontier = {r.id: (r, o) for o, r in resolved if r.state.is_finished}
        return out

    async def _write_resolved(self, conn: _Conn, records: Sequence[WorkRecord]) -> None:
        if not records:
            return
        rows = [(r.id, insert_params(r)[2], *runtime_params(r)) for r in records]
        arrays = {f"r{k}": list(col) for k, col in enumerate(zip(*rows, strict=True))}
        statement = self._sql.write_resolved
        await conn.fetch(statement.text, *statement.args(**arrays, **self._notify_args()))

    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """Read the works under ``name``, decide with ``plan`` and carry it out, in one
        transaction holding a per-name advisory lock, so concurrent enqueues on one name
        (from any process) run one after the other and each sees the others' result.

        A lock rather than a unique index: chains (APPEND) put several unfinished works
        under one name, which a partial unique index over unfinished states would forbid.

        :raises InvalidRequestError: if an inserted id exists outside the name
        :raises StoreError: if the database fails
        """
        sql = self._sql

        async def run(conn: _Conn) -> tuple[UniquePlan, list[WorkRecord]]:
            key = f"{sql.name}:{name}"
            await conn.execute(sql.unique_lock.text, pg.LOCK_CLASS + 1, key)
            rows = await conn.fetch(sql.by_unique_name.text, name)
            existing = [record_from_row(tuple(row)) for row in rows]
            leaves = existing
            if existing:
                inner = {
                    row[0]
                    for row in await conn.fetch(sql.have_dependents.text, [r.id for r in existing])
                }
                leaves = [r for r in existing if r.id not in inner]
            decided = plan(existing, leaves)
            gone = set(decided.deletes)
            fresh = [r.id for r in decided.inserts if r.id not in gone]
            if fresh:
                taken = [row[0] for row in await conn.fetch(sql.existing.text, fresh)]
                if taken:
                    raise InvalidRequestError("id", taken, "a work with this id already exists")
            written: list[WorkRecord] = []
            if decided.cancels:
                cancelled, resolved = await self._write_and_propagate(conn, decided.cancels)
                written += [r for r in cancelled if r is not None]
                written += [r for _, r in resolved]
            if decided.deletes:
                await conn.execute(sql.delete_edges.text, list(decided.deletes))
                await conn.execute(sql.delete.text, list(decided.deletes))
                # The deleted works' ids are announced by the cancels (if unfinished);
                # finished ones changed nothing a process could be waiting on.
            if decided.inserts:
                written += await self._insert_new(
                    conn, decided.inserts, decided.prerequisites, skip=gone
                )
            return decided, written

        return await self._run("enqueueing unique work", run)

    async def respec(self, change: Change) -> WorkRecord | None:
        """Replace a work's spec and due time (compare-and-set on state, attempts and
        generation).

        :raises StoreError: if the database fails
        """
        before, after = change.before, change.after
        params = insert_params(after)
        values = dict(zip(COLUMNS[1:17], params[1:17], strict=True))
        statement = self._sql.respec
        args = statement.args(
            **values,
            next_run_at=after.next_run_at,
            signals=params[-1],
            id=before.id,
            exp_state=before.state.value,
            exp_attempts=before.run_attempt_count,
            exp_generation=before.generation,
            **self._notify_args(),
        )

        async def run(conn: _Conn) -> bool:
            return bool(await conn.fetch(statement.text, *args))

        return after if await self._run("updating", run, transaction=False) else None

    async def get(self, ids: Collection[str]) -> list[WorkRecord]:
        """Records by id (unknown ids are skipped).

        :raises StoreError: if the database fails
        """
        if not ids:
            if self._pool is None:
                raise self._not_open()
            return []
        rows = await self._fetch("reading", self._sql.get, ids=list(ids))
        return [record_from_row(tuple(row)) for row in rows]

    async def query(self, query: WorkQuery) -> list[WorkRecord]:
        """Records matching the query, oldest enqueue first.

        :raises StoreError: if the database fails
        """
        statement = self._sql.query(
            ids=bool(query.ids),
            tags=bool(query.tags),
            names=bool(query.unique_names),
            states=bool(query.states),
        )
        values = {
            "ids": list(query.id_keys),
            "tags": list(query.tags),
            "names": list(query.unique_names),
            "states": [s.value for s in query.states],
        }
        rows = await self._fetch("reading", statement, **values)
        return [record_from_row(tuple(row)) for row in rows]

    async def signals_in_use(self) -> frozenset[str]:
        """The signal names unfinished works need (one DISTINCT query).

        :raises StoreError: if the database fails
        """
        names: set[str] = set()
        for (text,) in await self._fetch("reading", self._sql.signals_in_use):
            names |= Constraints.from_json(json.loads(text)).signal_names()
        return frozenset(names)

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished works older than the given time; return how many.

        :raises StoreError: if the database fails
        """
        return len(await self._fetch("pruning", self._sql.prune, before=finished_before))

    # -- leases ----------------------------------------------------------------------------

    async def renew_leases(self, *, owner: str, ids: Collection[str], now: float) -> set[str]:
        """Extend ``owner``'s leases on ``ids``; return the ids it no longer holds.

        :raises StoreError: if the database fails
        """
        if not ids:
            return set()
        rows = await self._fetch(
            "renewing leases",
            self._sql.renew,
            base=self._base(now),
            lease=self._lease,
            ids=list(ids),
            owner=owner,
        )
        return set(ids) - {row[0] for row in rows}

    async def requeue_orphans(self, *, now: float) -> list[WorkRecord]:
        """Re-enqueue RUNNING works whose lease has expired (stop reason UNKNOWN, the
        attempt counted), never works whose owner still renews its lease. Idempotent:
        concurrent callers skip each other's rows.

        :raises StoreError: if the database fails
        """
        written: list[WorkRecord] = []
        statement = self._sql.expired

        async def rescue(conn: _Conn) -> int:
            rows = await conn.fetch(
                statement.text,
                *statement.args(base=self._base(now), limit=_RESCUE_BATCH),
            )
            changes = [recover(record_from_row(tuple(row)), now=now) for row in rows]
            if changes:
                done, resolved = await self._write_and_propagate(conn, changes)
                written.extend(r for r in done if r is not None)
                written.extend(r for _, r in resolved)
            return len(rows)

        while await self._run("re-enqueueing expired leases", rescue) == _RESCUE_BATCH:
            pass
        if written:
            logger.warning("re-enqueued %d work(s) whose lease expired", len(written))
        return written

    # -- notifications ---------------------------------------------------------------------

    async def follow(
        self,
        listener: StoreListener,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """LISTEN for other processes' changes and pass them to ``listener`` until
        cancelled; reconnect (then poll) whenever the connection drops. While the
        manager runs on the system clock, also poll every ``poll_interval`` (jittered)
        and re-enqueue expired leases every half lease.

        The manager starts this before its recovery: it decides which clock (the
        database's or the manager's) leases and due times are compared with.
        """
        self._db_clock = self._clock == "database" or (
            self._clock == "auto" and listener.real_time
        )
        feed = ChangeFeed(
            dsn=self._dsn,
            channel=self._sql.channel,
            sender=self._sender,
            poll_interval=self._poll_interval,
            rescue_every=self._lease / 2,
            rescue=self._rescue,
        )
        await feed.run(listener, task_status=task_status)

    async def _rescue(self, now: float) -> list[str]:
        try:
            return [r.id for r in await self.requeue_orphans(now=now)]
        except StoreError as exc:
            logger.warning("re-enqueueing expired leases failed: %s", exc)
            return []
