"""PostgresStore: works in a PostgreSQL database shared by any number of processes.

- An asyncpg pool; every Store operation is one transaction (most are one statement)
  built from the pure lifecycle functions, each write guarded by the state, attempt
  count and owner it expects (compare-and-set).
- Claims lock due rows with ``FOR UPDATE SKIP LOCKED`` in batches and give the claimer
  a lease; the scheduler renews its leases every half lease; works whose lease expired
  (their process died) are re-enqueued by each process's rescuer, a task of its own
  (``rescue_interval``), whatever the notification traffic.
- Every write announces the ids it wrote with NOTIFY (in the same transaction, so only
  committed changes are announced); :meth:`PostgresStore.follow` LISTENs, wakes the
  dispatcher and tells the manager, and polls (jittered) in case a notification is
  missed, and after every reconnection.
- The schema lives in a PostgreSQL schema of its own (``wm_async`` unless told
  otherwise), versioned by ``wm_schema`` and migrated at open under an advisory lock.
- Transient driver errors (lost connections, restarts, deadlocks) are retried for a
  bounded time; every driver error reaches callers as :class:`StoreError`. A retry may
  follow a COMMIT whose answer was lost, so every write stamps the rows it writes with
  a token of its own (the same on each retry), and a retry recognises its own committed
  write by it and returns what the first attempt would have. A claim is one statement;
  one whose answer was lost is looked for (RUNNING, our owner, its token) by the next
  attempt, and by the next claims for a lease, so its works still run.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import anyio
import asyncpg
import attrs
from anyio.abc import TaskStatus

from .._core.errors import StoreError
from .._core.model import Constraints
from .._core.redact import mask_url
from . import _postgres_errors as errors
from . import _postgres_sql as pg_sql
from ._base import (
    Claimed,
    ClaimParams,
    Store,
    StoreListener,
)
from ._codec import record_from_row
from ._group_commit import GroupCommit, Op
from ._postgres_apply import apply as apply_changes
from ._postgres_browse import PostgresBrowse
from ._postgres_claim import claim
from ._postgres_counts import WorkCounts
from ._postgres_join import AppTransaction, join
from ._postgres_listen import (
    ChangeFeed,
    rescue_expired,
)
from ._postgres_ops import (
    POOL_OPTIONS,
    RESCUE_BATCH,
    Transactions,
    Write,
    duplicate_error,
)
from ._postgres_pause import PausedWorkers

if TYPE_CHECKING:
    from .._core.lifecycle import (
        Change,
        UniquePlan,
    )
    from .._core.model import WorkQuery
    from .._core.record import WorkRecord
    from ._base import UniquePlanner

__all__ = ("PostgresStore",)

logger = logging.getLogger("wm_async.stores.postgres")

_T = TypeVar("_T")
_Conn = Any  # asyncpg.Connection (asyncpg ships no type information)

#: Bound on closing connections (a dead server must not hang close()).
_CLOSE_TIMEOUT: Final = 5.0


@attrs.define(eq=False, repr=False)
class PostgresStore(PostgresBrowse, PausedWorkers, WorkCounts, Store):
    """A store in a PostgreSQL database that several processes (one manager each) share.

    ``PostgresStore("postgresql://user@host/db", schema="myapp")``;
    ``open_store("postgresql://user@host/db?schema=myapp")`` makes the same. Needs the
    ``postgres`` extra (asyncpg).

    The constructor's arguments (attrs writes ``__init__``):

    - ``dsn``: a ``postgresql://`` URL; a ``schema`` query parameter sets ``schema``
    - ``schema``: the PostgreSQL schema holding wm_async's tables (default
      ``wm_async``), so several apps can share one database; created if missing
    - ``lease``: how long a claim's lease lasts; each process renews its running works'
      leases every half of it, and another process re-runs a work whose lease expired
    - ``poll_interval``: the fallback poll (jittered ±25 %) that bounds the delay when a
      notification is missed; only while the manager runs on the system clock
    - ``clock``: which clock due times and leases are compared with: ``"database"``
      (the server's, immune to host clock skew), ``"caller"`` (the ``now`` the manager
      passes, e.g. a VirtualClock's) or ``"auto"`` (the database's when the manager
      runs on the system clock)
    - ``pool_size``: the most connections the pool opens (the listener uses one more)
    - ``retry_timeout``: how long an operation retries transient errors (lost
      connections, a restarting server) before it raises :class:`StoreError`
    - ``rescue_interval``: how often (jittered ±25 %) each process re-enqueues works
      whose lease expired (their process died), whatever the traffic; only while the
      manager runs on the system clock. A dead process's works run again within
      about ``lease`` plus this. Default: half the lease (a rescue that finds nothing
      is one index probe)

    :raises InvalidRequestError: for an invalid argument
    """

    _dsn: str = attrs.field(converter=pg_sql.to_dsn)
    _schema: str | None = attrs.field(default=None, kw_only=True)
    _lease: float = attrs.field(default=30.0, kw_only=True, converter=pg_sql.to_lease)
    _poll_interval: float = attrs.field(
        default=1.0, kw_only=True, converter=pg_sql.to_poll_interval
    )
    _clock: Literal["auto", "database", "caller"] = attrs.field(
        default="auto", kw_only=True, validator=pg_sql.check_clock
    )
    _pool_size: int = attrs.field(default=10, kw_only=True, validator=pg_sql.check_pool_size)
    _retry_timeout: float = attrs.field(
        default=30.0, kw_only=True, converter=pg_sql.to_retry_timeout
    )
    _rescue_interval: float | None = attrs.field(
        default=None, kw_only=True, converter=pg_sql.to_rescue_interval
    )
    _sql: pg_sql.Schema = attrs.field(init=False)
    _ops: Transactions = attrs.field(init=False)  # the statements each operation runs
    _pool: Any = attrs.field(init=False, default=None)  # asyncpg.Pool
    _lock: anyio.Lock | None = attrs.field(init=False, default=None)
    _db_clock: bool = attrs.field(init=False, default=False)
    _sender: str = attrs.field(init=False, factory=lambda: uuid.uuid4().hex[:12])
    _group: GroupCommit[Op] = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: GroupCommit(self._apply_batch), takes_self=True),
    )

    def __attrs_post_init__(self) -> None:
        self._dsn, from_url = pg_sql.split_dsn(self._dsn)
        if self._schema is None:
            self._schema = from_url or pg_sql.DEFAULT_SCHEMA
        self._sql = pg_sql.Schema(pg_sql.check_schema(self._schema))
        self._ops = Transactions(self._sql, self._sender, self._lease)
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

    @property
    def rescue_interval(self) -> float:
        """How often expired leases are rescued, in seconds (before jitter)."""
        return self._lease / 2 if self._rescue_interval is None else self._rescue_interval

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
            migrations = await anyio.to_thread.run_sync(pg_sql.migrations)
            try:
                pool = await asyncpg.create_pool(
                    self._dsn, max_size=self._pool_size, **POOL_OPTIONS
                )
            except Exception as exc:
                raise self._error(exc, "connecting") from exc
            try:
                await self._run(
                    "migrating", lambda conn: self._ops.migrate(conn, migrations), pool=pool
                )
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
                    await pool.close()
                raise
            self._pool = pool

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
        return errors.store_error(exc, dsn=self._dsn, schema=self.schema, doing=doing)

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
        write: Write | None = None,
    ) -> _T:
        """Run ``fn`` on a pooled connection (in a transaction), retrying transient
        errors for up to ``retry_timeout`` (see ``_postgres_errors.retrying``)."""

        def pool_now() -> Any:
            use = pool or self._pool
            if use is None:
                raise self._not_open()
            return use

        return await errors.retrying(
            pool_now,
            doing,
            fn,
            transaction=transaction,
            retry_timeout=self._retry_timeout,
            dsn=self._dsn,
            schema=self.schema,
            write=write,
        )

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
        write = self._ops.new_write()
        if prerequisites:
            return await self._insert_chained(records, prerequisites, write)

        async def run(conn: _Conn) -> None:
            await self._ops.insert(conn, records, write.token)

        try:
            await self._run("inserting", run, transaction=False, write=write)
        except StoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
            await self._duplicates(records, retried=write.uncertain)
        return list(records)

    async def _insert_chained(
        self, records: Sequence[WorkRecord], links: Mapping[str, Sequence[str]], write: Write
    ) -> list[WorkRecord]:
        ids = [r.id for r in records]

        async def run(conn: _Conn) -> list[WorkRecord]:
            return await self._ops.insert_chained(conn, records, links, write)

        try:
            return await self._run("inserting", run, write=write)
        except StoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
            # The insert met a concurrent one's rows: an earlier attempt of ours whose
            # commit landed late, or another caller's.
            await self._duplicates(records, retried=write.uncertain)
            return await self._run("reading", lambda conn: self._ops.as_stored(conn, ids))

    async def _duplicates(self, records: Sequence[WorkRecord], *, retried: bool) -> None:
        """An insert met existing ids: raise for the first, unless a retry met the rows
        its own earlier attempt committed (the commit's answer was lost)."""
        ids = [r.id for r in records]
        rows = await self._fetch("reading", self._sql.existing_rows, ids=ids)
        error = duplicate_error(rows, records, retried=retried)
        if error is not None:
            raise error

    async def _fetch(self, doing: str, statement: pg_sql.Statement, **values: object) -> list[Any]:
        args = statement.args(**values)

        async def read(conn: _Conn) -> list[Any]:
            rows: list[Any] = await conn.fetch(statement.text, *args)
            return rows

        return await self._run(doing, read, transaction=False)

    async def claim_due(self, params: ClaimParams) -> Claimed:
        """Claim due unparked works, expedited first, in one statement that also sets
        owner, lease, attempt count and write token, and finds the next due time.

        A claim whose answer was lost (the connection dropped: it may have taken works)
        is never simply repeated: its token is kept, and this attempt and the claims of
        the next lease first take over the works it gave us (``Transactions.adopt``), so they
        run instead of waiting, RUNNING, for their lease to expire and being counted as
        interrupted.

        :raises StoreError: if the database fails
        """
        return await claim(
            self._ops,
            self._run,
            params,
            base=self._base(params.now),
            lease=self._lease,
            db_clock=self._db_clock,
        )

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
        written: list[WorkRecord] = await self._group.submit(Op(list(changes)))
        return written

    async def _apply_batch(self, batch: list[Op], write: Write | None = None) -> None:
        changes = [c for op in batch for c in op.arg]
        write = write or self._ops.new_write()

        async def run(conn: _Conn) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
            return await apply_changes(self._ops, conn, changes, write)

        try:
            written, resolved = await self._run("writing", run, transaction=False, write=write)
        except Exception as exc:  # noqa: BLE001  # handed to the callers, raised there
            if len(batch) == 1 or errors.is_transient(exc.__cause__ or exc):
                for op in batch:
                    op.error = exc
                return
            # Find whose changes failed: only its caller sees the error. The same write:
            # an attempt of the batch whose answer was lost is still recognised.
            for op in batch:
                await self._apply_batch([op], write)
            return
        start = 0
        for op in batch:
            end = start + len(op.arg)
            mine = written[start:end]
            op.result = [r for r in mine if r is not None]
            op.result += [r for origin, r in resolved if start <= origin < end]
            start = end

    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """Read the works under ``name``, decide with ``plan`` and carry it out, in one
        transaction holding a per-name advisory lock, so concurrent enqueues on one name
        (from any process) run one after the other and each sees the others' result.

        A lock rather than a unique index: chains (APPEND) put several unfinished works
        under one name, which a partial unique index over unfinished states would forbid.

        A retry after an attempt whose answer was lost first looks, holding the lock
        (so that attempt has ended), for the works that attempt's plan inserted: if they
        are there, that plan and what it wrote are the answer, not a second plan made
        from the first one's result (KEEP would keep the caller's own work).

        :raises InvalidRequestError: if an inserted id exists outside the name
        :raises StoreError: if the database fails
        """
        write = self._ops.new_write()
        planned: list[UniquePlan] = []  # the plans of the attempts so far

        async def run(conn: _Conn) -> tuple[UniquePlan, list[WorkRecord]]:
            return await self._ops.unique(conn, name, plan, write, planned)

        return await self._run("enqueueing unique work", run, write=write)

    async def join_transaction(self, connection: object) -> AppTransaction:
        """``enqueue(..., connection=conn)``'s writes: see ``_postgres_join``."""
        return await join(self._ops, connection, pool=self._pool, error=self._error)

    async def update_spec(self, change: Change) -> WorkRecord | None:
        """Replace a work's spec and due time (compare-and-set on state, attempts and
        generation). A retry after an attempt whose answer was lost recognises that
        attempt's write by its token (its guard fails now: the generation moved on).

        :raises StoreError: if the database fails
        """
        write = self._ops.new_write()

        async def run(conn: _Conn) -> bool:
            return await self._ops.update_spec(conn, change, write)

        updated = await self._run("updating", run, transaction=False, write=write)
        return change.after if updated else None

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

        async def batch() -> int:
            write = self._ops.new_write()
            tried: dict[str, Change] = {}  # what earlier attempts re-enqueued, by id

            async def rescue(conn: _Conn) -> tuple[int, list[WorkRecord]]:
                return await self._ops.rescue(
                    conn, now=now, base=self._base(now), write=write, tried=tried
                )

            found, out = await self._run("re-enqueueing expired leases", rescue, write=write)
            written.extend(out)  # once committed
            return found

        while await batch() == RESCUE_BATCH:
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
        and, in a task of its own, re-enqueue expired leases every ``rescue_interval``
        (jittered): a steady stream of notifications must not hold the rescue back.

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
        )
        async with anyio.create_task_group() as tg:
            await tg.start(feed.run, listener)
            if listener.real_time:  # with a virtual clock, nothing polls
                tg.start_soon(rescue_expired, listener, self.rescue_interval, self._rescue)
            task_status.started()

    async def _rescue(self, now: float) -> list[str]:
        try:
            return [r.id for r in await self.requeue_orphans(now=now)]
        except StoreError as exc:
            logger.warning("re-enqueueing expired leases failed: %s", exc)
            return []
