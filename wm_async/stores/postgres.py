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
  bounded time; every driver error reaches callers as :class:`StoreError`. A retry may
  follow a COMMIT whose answer was lost, so every write stamps the rows it writes with
  a token of its own (the same on each retry), and a retry recognises its own committed
  write by it and returns what the first attempt would have. A claim is one statement;
  one whose answer was lost is looked for (RUNNING, our owner, its token) by the next
  attempt, and by the next claims for a lease, so its works still run.
- Expired leases are rescued by a task of their own (``rescue_interval``), whatever the
  notification traffic.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from itertools import count
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import anyio
import asyncpg
import attrs
from anyio.abc import TaskStatus

from .._core import validators as v
from .._core.errors import (
    InvalidRequestError,
    StoreCorruptError,
    StoreError,
)
from .._core.lifecycle import (
    recover,
    resolve_new,
)
from .._core.model import Constraints
from .._core.redact import (
    mask_text,
    mask_url,
)
from . import _postgres_errors as errors
from . import _postgres_sql as pg
from ._base import (
    Claimed,
    ClaimParams,
    Store,
    StoreListener,
)
from ._codec import (
    COLUMNS,
    N_SPEC,
    data_text,
    insert_params,
    outputs_in_order,
    record_from_row,
    runtime_params,
    signal_key,
)
from ._group_commit import (
    GroupCommit,
    Op,
)
from ._postgres_listen import (
    ChangeFeed,
    rescue_expired,
)
from ._propagation import propagate

if TYPE_CHECKING:
    from .._core.data import Data
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


def _to_rescue_interval(value: object) -> float | None:
    return None if value is None else _seconds("rescue_interval", value)


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
class _Write:
    """One logical write (a store call): the token its statements stamp on the rows
    they write, the same on every retry, and whether an earlier attempt may have
    committed (its connection was lost before the answer came)."""

    token: str
    uncertain: bool = False


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
    :param rescue_interval: how often (jittered ±25 %) each process re-enqueues works
        whose lease expired (their process died), whatever the traffic; only while the
        manager runs on the system clock. A dead process's works run again within
        about ``lease`` plus this. Default: half the lease (a rescue that finds nothing
        is one index probe)
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
    _rescue_interval: float | None = attrs.field(
        default=None, kw_only=True, converter=_to_rescue_interval
    )
    _sql: pg.Schema = attrs.field(init=False)
    _pool: Any = attrs.field(init=False, default=None)  # asyncpg.Pool
    _lock: anyio.Lock | None = attrs.field(init=False, default=None)
    _db_clock: bool = attrs.field(init=False, default=False)
    _sender: str = attrs.field(init=False, factory=lambda: uuid.uuid4().hex[:12])
    _group: GroupCommit[Op] = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: GroupCommit(self._apply_batch), takes_self=True),
    )
    _tokens: Iterator[int] = attrs.field(init=False, factory=count)
    # Claims whose answer was lost: token -> (owner, until when to look for its works).
    _lost_claims: dict[str, tuple[str, float]] = attrs.field(init=False, factory=dict)

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
        return errors.store_error(exc, dsn=self._dsn, schema=self.schema, doing=doing)

    def _not_open(self) -> StoreError:
        return StoreError(f"store is not open: {self!r} (use 'async with store:')")

    def _base(self, now: float) -> float | None:
        """The time SQL compares with: ``None`` makes it use the database's clock."""
        return None if self._db_clock else now

    def _new_write(self) -> _Write:
        return _Write(f"{self._sender}.{next(self._tokens):x}")

    async def _run(
        self,
        doing: str,
        fn: Callable[[_Conn], Awaitable[_T]],
        *,
        transaction: bool = True,
        pool: Any = None,
        write: _Write | None = None,
    ) -> _T:
        """Run ``fn`` on a pooled connection (in a transaction), retrying transient
        errors for up to ``retry_timeout``; driver errors become StoreError.

        A transient error may have struck after the COMMIT (or an autocommitted
        statement) took effect, its answer lost: ``write.uncertain`` then tells ``fn``'s
        next attempts to recognise what an earlier one may have written (by
        ``write.token``) before they write again."""
        slept = 0.0
        for attempt in count():
            use = pool or self._pool
            if use is None:
                raise self._not_open()
            done = False
            try:
                async with use.acquire() as conn:
                    if transaction:
                        async with conn.transaction():
                            result = await fn(conn)
                    else:
                        result = await fn(conn)
                    done = True
            except (StoreError, InvalidRequestError):
                raise
            except Exception as exc:
                if done:
                    # The pool resets a connection it gets back, and that failed (its
                    # backend was just terminated, say): the operation itself has
                    # completed, so its result stands. Running it again would repeat it
                    # (a second claim, leaving the first one's works unstarted).
                    logger.debug("%s: releasing the connection failed: %r", doing, exc)
                    return result
                if not errors.is_transient(exc) or slept >= self._retry_timeout:
                    raise self._error(exc, doing) from exc
                if write is not None:
                    write.uncertain = True
                if attempt == 0:
                    logger.warning(
                        "%s: %s; retrying", doing, mask_text(repr(exc), secrets_of=self._dsn)
                    )
            else:
                return result
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
        write = self._new_write()
        if prerequisites:
            return await self._insert_chained(records, prerequisites, write)
        rows = [insert_params(r) for r in records]
        columns = {f"c{i}": list(col) for i, col in enumerate(zip(*rows, strict=True))}
        statement = self._sql.insert
        args = statement.args(**columns, token=write.token, **self._notify_args())

        async def run(conn: _Conn) -> None:
            await conn.fetch(statement.text, *args)

        try:
            await self._run("inserting", run, transaction=False, write=write)
        except StoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
            await self._duplicates(records, retried=write.uncertain)
        return list(records)

    async def _insert_chained(
        self, records: Sequence[WorkRecord], links: Mapping[str, Sequence[str]], write: _Write
    ) -> list[WorkRecord]:
        ids = [r.id for r in records]

        async def run(conn: _Conn) -> list[WorkRecord]:
            taken = await conn.fetch(self._sql.existing_rows.text, ids)
            if taken:
                if write.uncertain and _all_ours(taken, records):
                    # An earlier attempt committed (its answer was lost): report its works.
                    return await self._as_stored(conn, ids)
                raise InvalidRequestError("id", taken[0][0], "a work with this id already exists")
            return await self._insert_new(conn, records, links, token=write.token)

        try:
            return await self._run("inserting", run, write=write)
        except StoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
            # The insert met a concurrent one's rows: an earlier attempt of ours whose
            # commit landed late, or another caller's.
            await self._duplicates(records, retried=write.uncertain)
            return await self._run("reading", lambda conn: self._as_stored(conn, ids))

    async def _as_stored(self, conn: _Conn, ids: Sequence[str]) -> list[WorkRecord]:
        """The records of ``ids`` as stored now, in that order (missing ones skipped)."""
        rows = await conn.fetch(self._sql.get.text, ids)
        found = {row[1]: record_from_row(tuple(row)) for row in rows}  # row[1]: id
        return [found[i] for i in ids if i in found]

    async def _insert_new(
        self,
        conn: _Conn,
        records: Sequence[WorkRecord],
        links: Mapping[str, Sequence[str]],
        *,
        token: str,
        skip: Collection[str] = (),
    ) -> list[WorkRecord]:
        """Insert works (their ids are free), chained ones in the state their
        prerequisites give them; prerequisites in ``skip`` are being deleted. The rows
        are stamped with ``token``."""
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
            statement.text,
            *statement.args(**columns, waiting=waiting, token=token, **self._notify_args()),
        )
        if edges:
            p, w, n = (list(col) for col in zip(*edges, strict=True))
            await conn.execute(sql.insert_edges.text, *sql.insert_edges.args(p=p, w=w, n=n))
        return stored

    async def _duplicates(self, records: Sequence[WorkRecord], *, retried: bool) -> None:
        """An insert met existing ids: raise for the first, unless a retry met the rows
        its own earlier attempt committed (the commit's answer was lost)."""
        ids = [r.id for r in records]
        rows = await self._fetch("reading", self._sql.existing_rows, ids=ids)
        if retried and _all_ours(rows, records):
            return
        found = {row[0] for row in rows}
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
        owner, lease, attempt count and write token, and finds the next due time.

        A claim whose answer was lost (the connection dropped: it may have taken works)
        is never simply repeated: its token is kept, and this attempt and the claims of
        the next lease first take over the works it gave us (:meth:`_adopt`), so they
        run instead of waiting, RUNNING, for their lease to expire and being counted as
        interrupted.

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
            **self._notify_args(),
        }
        claim = self._sql.claim(bool(blocked))
        adopted: list[WorkRecord] = []

        async def run(conn: _Conn) -> list[Any]:
            if self._lost_claims and len(adopted) < limit:
                adopted.extend(await self._adopt(conn, params, limit - len(adopted)))
            values["limit"] = limit - len(adopted)
            return await self._claim_statement(conn, claim, params.owner, values)

        try:
            rows = await self._run("claiming", run, transaction=False)
        except StoreError:
            if not adopted:
                raise
            # Works already taken over must reach the scheduler; the next claim meets
            # the error again, if it persists.
            return Claimed(records=adopted, next_due=params.now)
        due, compared_with = rows[0][0], rows[0][1]
        if due is not None and self._db_clock:
            due = due - compared_with + params.now  # the database's clock → the caller's
        claimed = [row[2:] for row in rows if row[4] is not None]  # row[4]: seq
        claimed.sort(key=lambda row: (-row[0], row[1], row[2]))
        records = [*adopted, *(record_from_row(tuple(row)[2:]) for row in claimed)]
        return Claimed(records=records, next_due=due)

    async def _claim_statement(
        self, conn: _Conn, statement: pg.Statement, owner: str, values: dict[str, object]
    ) -> list[Any]:
        """Run a statement that gives ``owner`` works, with a token of its own; if its
        answer does not come, keep the token: the statement may have taken effect."""
        token = values["token"] = self._new_write().token
        try:
            rows: list[Any] = await conn.fetch(statement.text, *statement.args(**values))
        except BaseException:
            # Found by the next claims for a lease; after that, a work it took has been
            # (or can be) rescued like any other whose lease expired.
            self._lost_claims[token] = (owner, time.monotonic() + self._lease)
            raise
        return rows

    async def _adopt(self, conn: _Conn, params: ClaimParams, limit: int) -> list[WorkRecord]:
        """Take over (renewing their lease) up to ``limit`` works that claims of
        ``params.owner`` whose answer was lost gave it."""
        now = time.monotonic()
        for token, (_, until) in list(self._lost_claims.items()):
            if until <= now:
                del self._lost_claims[token]
        tokens = [t for t, (owner, _) in self._lost_claims.items() if owner == params.owner]
        if not tokens:
            return []
        values: dict[str, object] = {
            "base": self._base(params.now),
            "lease": self._lease,
            "lease_until": params.lease_until,
            "owner": params.owner,
            "tokens": tokens,
            "limit": limit,
        }
        # Stamped with a new token, so that no later claim takes them over again.
        rows = await self._claim_statement(conn, self._sql.adopt, params.owner, values)
        if rows:
            logger.warning(
                "took over %d work(s) claimed by a claim whose answer was lost", len(rows)
            )
        return [record_from_row(tuple(row)) for row in rows]

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

    async def _apply_batch(self, batch: list[Op], write: _Write | None = None) -> None:
        changes = [c for op in batch for c in op.arg]
        write = write or self._new_write()

        async def run(conn: _Conn) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
            return await self._write_and_propagate(conn, changes, write)

        try:
            written, resolved = await self._run("writing", run, write=write)
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

    async def _write(
        self, conn: _Conn, changes: Sequence[Change], token: str
    ) -> list[WorkRecord | None]:
        """Apply ``changes`` on ``conn`` (compare-and-set), stamping ``token``; the
        record written for each, or ``None`` where its guard failed."""
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
                statement.text, *statement.args(**arrays, token=token, **self._notify_args())
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
        self, conn: _Conn, changes: Sequence[Change], write: _Write
    ) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
        """:meth:`_write`, then resolve the dependents of the works it finished, in the
        same transaction; the second list pairs each dependent written with the index of
        the change that resolved it.

        After an attempt whose answer was lost, the changes it committed fail their
        guards now: they are recognised by the write's token (:meth:`_recognise`).
        Writing first and recognising after (rather than before) also catches an
        earlier attempt whose COMMIT landed while this one ran: this one's writes
        waited for its row locks, then failed their guards."""
        written = await self._write(conn, changes, write.token)
        ended = {
            r.id: (r, i) for i, r in enumerate(written) if r is not None and r.state.is_finished
        }
        resolved = await self._propagate(conn, ended, write.token) if ended else []
        if write.uncertain:
            return await self._recognise(conn, changes, write.token, written, resolved)
        return written, resolved

    async def _recognise(
        self,
        conn: _Conn,
        changes: Sequence[Change],
        token: str,
        written: list[WorkRecord | None],
        resolved: list[tuple[int, WorkRecord]],
    ) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
        """``written`` and ``resolved`` (what this attempt wrote), completed with what
        an earlier attempt of the same write committed: the works of ``changes`` this
        attempt did not write whose rows carry ``token`` (nothing else wrote them
        since: reported as written, as stored), and the dependents that attempt
        resolved from them.

        A work changed again by another process since (a re-enqueued work claimed
        again) carries that write's token and is reported as not written; a finished
        work keeps ours until it is pruned."""
        mine = {r.id for r in written if r is not None} | {r.id for _, r in resolved}
        last: dict[str, int] = {}  # each work's last change (a batch may change one twice)
        for i, change in enumerate(changes):
            if written[i] is None and change.before.id not in mine:
                last[change.before.id] = i
        if not last:
            return written, resolved
        rows = await conn.fetch(self._sql.written.text, list(last), token)
        found = {row[1]: record_from_row(tuple(row)) for row in rows}  # row[1]: id
        if not found:
            return written, resolved
        written = list(written)
        for i, change in enumerate(changes):
            work_id = change.before.id
            if written[i] is None and work_id in found and work_id in last:
                # The last change of a work wrote what is stored; an earlier one of the
                # same batch was written before it.
                written[i] = found[work_id] if last[work_id] == i else change.after
        ended = [r.id for r in found.values() if r.state.is_finished]
        if not ended:
            return written, resolved
        seen = mine | set(found)
        more: dict[str, tuple[int, WorkRecord]] = {}
        for row in await conn.fetch(self._sql.resolved_by.text, ended, token):
            record = record_from_row(tuple(row[1:]))
            origin = last[row[0]]
            if record.id not in seen and (record.id not in more or origin < more[record.id][0]):
                more[record.id] = (origin, record)
        return written, [*resolved, *more.values()]

    async def _propagate(
        self, conn: _Conn, ended: dict[str, tuple[WorkRecord, int]], token: str
    ) -> list[tuple[int, WorkRecord]]:
        """Resolve the BLOCKED dependents of the ``ended`` works, level by level (semantics
        19 and 29). Each step is a statement of its own, so under READ COMMITTED it sees
        the edges and outputs that concurrent transactions committed before it."""
        return await propagate(_Dependents(self, conn, token), ended)

    async def _write_resolved(
        self, conn: _Conn, records: Sequence[WorkRecord], token: str
    ) -> None:
        if not records:
            return
        rows = [(r.id, data_text(r.input), *runtime_params(r)) for r in records]
        arrays = {f"r{k}": list(col) for k, col in enumerate(zip(*rows, strict=True))}
        statement = self._sql.write_resolved
        await conn.fetch(
            statement.text, *statement.args(**arrays, token=token, **self._notify_args())
        )

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
        sql = self._sql
        write = self._new_write()
        planned: list[UniquePlan] = []  # the plans of the attempts so far

        async def run(conn: _Conn) -> tuple[UniquePlan, list[WorkRecord]]:
            key = f"{sql.name}:{name}"
            await conn.execute(sql.unique_lock.text, pg.LOCK_CLASS + 1, key)
            if write.uncertain and planned:
                found = await self._recognise_unique(conn, planned[-1], write.token)
                if found is not None:
                    return planned[-1], found
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
            planned.append(decided)
            gone = set(decided.deletes)
            fresh = [r.id for r in decided.inserts if r.id not in gone]
            if fresh:
                taken = [row[0] for row in await conn.fetch(sql.existing.text, fresh)]
                if taken:
                    raise InvalidRequestError("id", taken, "a work with this id already exists")
            written: list[WorkRecord] = []
            if decided.cancels:
                # Certain: an earlier attempt was recognised or found not committed above.
                cancelled, resolved = await self._write_and_propagate(
                    conn, decided.cancels, _Write(write.token)
                )
                written += [r for r in cancelled if r is not None]
                written += [r for _, r in resolved]
            if decided.deletes:
                await conn.execute(sql.delete_edges.text, list(decided.deletes))
                await conn.execute(sql.delete.text, list(decided.deletes))
                # The deleted works' ids are announced by the cancels (if unfinished);
                # finished ones changed nothing a process could be waiting on.
            if decided.inserts:
                written += await self._insert_new(
                    conn, decided.inserts, decided.prerequisites, token=write.token, skip=gone
                )
            return decided, written

        return await self._run("enqueueing unique work", run, write=write)

    async def _recognise_unique(
        self, conn: _Conn, decided: UniquePlan, token: str
    ) -> list[WorkRecord] | None:
        """What an attempt that carried out ``decided`` wrote, if it committed (its
        inserted works are there, with its token, or with their worker and enqueue time
        where a claim has stamped another token since); ``None`` if it did not."""
        if not decided.inserts:
            return None  # it wrote nothing, or only deleted finished works: plan again
        ids = [r.id for r in decided.inserts]
        planned = {r.id: (r.worker, r.enqueued_at) for r in decided.inserts}
        rows = await conn.fetch(self._sql.existing_rows.text, ids)
        if not any(row[3] == token or (row[1], row[2]) == planned[row[0]] for row in rows):
            return None
        # The cancelled works were deleted by the same transaction (REPLACE deletes every
        # work under the name): what it wrote for them was the cancellation. (One whose
        # guard had failed, its run finishing meanwhile, was deleted all the same.)
        gone = set(decided.deletes)
        written = [c.after for c in decided.cancels if c.before.id in gone]
        seen = {r.id for r in written} | set(ids)
        times = sorted({t for c in decided.cancels if (t := c.after.finished_at) is not None})
        if times:
            # The rest it finished (cancelled works it kept, and the dependents it
            # cancelled, all at the cancellations' time), through the finished_at index.
            for row in await conn.fetch(self._sql.finished_by.text, times, token):
                record = record_from_row(tuple(row))
                if record.id not in seen:
                    seen.add(record.id)
                    written.append(record)
        return written + await self._as_stored(conn, ids)

    async def respec(self, change: Change) -> WorkRecord | None:
        """Replace a work's spec and due time (compare-and-set on state, attempts and
        generation). A retry after an attempt whose answer was lost recognises that
        attempt's write by its token (its guard fails now: the generation moved on).

        :raises StoreError: if the database fails
        """
        before, after = change.before, change.after
        write = self._new_write()
        params = insert_params(after)
        values = dict(zip(COLUMNS[1:N_SPEC], params[1:N_SPEC], strict=True))
        statement = self._sql.respec
        args = statement.args(
            **values,
            next_run_at=after.next_run_at,
            signals=params[-1],
            id=before.id,
            exp_state=before.state.value,
            exp_attempts=before.run_attempt_count,
            exp_generation=before.generation,
            token=write.token,
            **self._notify_args(),
        )

        async def run(conn: _Conn) -> bool:
            if await conn.fetch(statement.text, *args):
                return True
            return write.uncertain and bool(
                await conn.fetch(self._sql.written.text, [before.id], write.token)
            )

        updated = await self._run("updating", run, transaction=False, write=write)
        return after if updated else None

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

        async def batch() -> int:
            write = self._new_write()
            tried: dict[str, Change] = {}  # what earlier attempts re-enqueued, by id

            async def rescue(conn: _Conn) -> tuple[int, list[WorkRecord]]:
                rows = await conn.fetch(
                    statement.text,
                    *statement.args(base=self._base(now), limit=_RESCUE_BATCH),
                )
                changes = [recover(record_from_row(tuple(row)), now=now) for row in rows]
                done, resolved = await self._write_and_propagate(conn, changes, write)
                out = [*(r for r in done if r is not None), *(r for _, r in resolved)]
                # Works an earlier attempt (its answer lost) re-enqueued have no expired
                # lease any more: recognise them, never re-apply them (a lease renewed
                # meanwhile would pass the guard).
                earlier = [c for i, c in tried.items() if i not in {c.before.id for c in changes}]
                if write.uncertain and earlier:
                    done, resolved = await self._recognise(
                        conn, earlier, write.token, [None] * len(earlier), []
                    )
                    seen = {r.id for r in out}
                    out += [r for r in done if r is not None and r.id not in seen]
                    out += [r for _, r in resolved if r.id not in seen]
                tried.update((c.before.id, c) for c in changes)
                return len(rows), out

            found, out = await self._run("re-enqueueing expired leases", rescue, write=write)
            written.extend(out)  # once committed
            return found

        while await batch() == _RESCUE_BATCH:
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


@attrs.define(eq=False)
class _Dependents:
    """The propagation walk's reads and writes in a PostgreSQL transaction (see
    _propagation), each a statement of its own."""

    store: PostgresStore
    conn: _Conn
    token: str

    async def stopped(self, ids: list[str]) -> list[tuple[str, WorkRecord]]:
        rows = await self.conn.fetch(self.store._sql.dependents.text, ids)
        return [(row[0], record_from_row(tuple(row[1:]))) for row in rows]

    async def count(self, ids: list[str]) -> list[tuple[int, WorkRecord]]:
        rows = await self.conn.fetch(self.store._sql.unblock.text, ids)
        return [(row[0], record_from_row(tuple(row[1:]))) for row in rows]

    async def outputs(self, ready: list[WorkRecord]) -> list[list[Data]]:
        found: dict[str, list[tuple[int, str]]] = {}
        statement = self.store._sql.prerequisite_outputs
        for work_id, position, output in await self.conn.fetch(
            statement.text, [r.id for r in ready]
        ):
            found.setdefault(work_id, []).append((position, output))
        return [outputs_in_order(found.get(r.id, [])) for r in ready]

    async def write(self, records: list[WorkRecord]) -> None:
        await self.store._write_resolved(self.conn, records, self.token)


def _all_ours(rows: Sequence[Any], records: Sequence[WorkRecord]) -> bool:
    """Whether the stored ``(id, worker, enqueued_at, …)`` rows are exactly ``records``
    (distinct ids): what an earlier attempt of their insert committed."""
    ours = {r.id: (r.worker, r.enqueued_at) for r in records}
    return len(ours) == len(records) and {row[0]: (row[1], row[2]) for row in rows} == ours
