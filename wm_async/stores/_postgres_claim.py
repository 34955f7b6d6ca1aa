"""PostgresStore's claim (``PostgresStore.claim_due``): one statement when no worker is
limited; with limited workers (semantics 49) a transaction that first takes their works
within their allowances, counted across every process, then the others' works.

A limited worker's row of ``wm_limits`` is locked (``FOR UPDATE``, in name order) for the
rest of the claim's transaction: claims of that worker's works serialise across
processes, so the RUNNING count they read (works whose lease is live: a crashed
process's slots come back when its leases end) and the tokens they take are exact. The
bucket is kept on the clock the claim compares with (the database's, in real time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._core.errors import StoreError
from .._core.limits import Allowance, Bucket, HeldBy
from . import _postgres_sql as pg_sql
from ._base import Claimed
from ._codec import record_from_row, signal_key

if TYPE_CHECKING:
    from .._core.record import WorkRecord
    from ._base import ClaimParams
    from ._postgres_ops import Transactions

_Conn = Any  # asyncpg.Connection (asyncpg ships no type information)
#: ``PostgresStore._run``: run a function on a pooled connection, retrying.
Runner = Callable[..., Awaitable[Any]]


async def claim(
    ops: Transactions,
    run: Runner,
    params: ClaimParams,
    *,
    base: float | None,
    lease: float,
    db_clock: bool,
) -> Claimed:
    """Claim due unparked works, expedited first, then by priority, then by due time
    (semantics 48), the limited workers' works first and within their allowances.

    A claim whose answer was lost (the connection dropped: it may have taken works) is
    never simply repeated: its token is kept, and this attempt and the claims of the
    next lease first take over the works it gave us (``Transactions.adopt``).
    """
    limit = max(params.limit, 0)
    limited = sorted(w for w in params.limits if w not in params.paused_workers)
    excluded = sorted({*params.paused_workers, *limited})
    blocked = sorted(f",{signal_key(n)}," for n in params.blocked_signals)
    values: dict[str, object] = {
        "base": base,
        "now": params.now,
        "limit": limit,
        "owner": params.owner,
        "lease": lease,
        "lease_until": params.lease_until,
        "blocked": blocked,
        "paused": excluded,
        **ops.notify_args(),
    }
    statement = ops.sql.claim(bool(blocked), bool(excluded))
    adopted: list[WorkRecord] = []
    held: dict[str, HeldBy] = {}

    async def go(conn: _Conn) -> tuple[list[Any], list[Any], float | None]:
        if ops.lost_claims and len(adopted) < limit:
            adopted.extend(await ops.adopt(conn, params, limit - len(adopted), base=base))
        room = limit - len(adopted)
        taken: list[Any] = []
        first: float | None = None
        if limited:
            held.clear()
            taken, first = await _claim_limited(ops, conn, params, limited, values, room, held)
        values["limit"] = room - len(taken)
        values["paused"] = excluded
        rows = await ops.claim_statement(conn, statement, params.owner, values)
        return rows, taken, first

    try:
        rows, taken, first = await run("claiming", go, transaction=bool(limited))
    except StoreError:
        if not adopted:
            raise
        # Works already taken over must reach the scheduler; the next claim meets the
        # error again, if it persists.
        return Claimed(records=adopted, next_due=params.now)
    due = _due(rows, params.now, db_clock)
    if first is not None and (due is None or first < due):
        due = first
    claimed = [row[2:] for row in (*taken, *rows) if row[4] is not None]  # row[4]: seq
    claimed.sort(key=lambda r: (-r[0], -r[pg_sql.CLAIMED_PRIORITY], r[1], r[2]))
    records = [*adopted, *(record_from_row(tuple(row)[2:]) for row in claimed)]
    return Claimed(records=records, next_due=due, held=held)


def _due(rows: list[Any], now: float, db_clock: bool) -> float | None:
    """A claim statement's next due time, on the caller's clock."""
    due, compared_with = rows[0][0], rows[0][1]
    if due is not None and db_clock:
        due = due - compared_with + now  # the database's clock → the caller's
    return float(due) if due is not None else None


async def _claim_limited(
    ops: Transactions,
    conn: _Conn,
    params: ClaimParams,
    limited: list[str],
    values: dict[str, object],
    room: int,
    held: dict[str, HeldBy],
) -> tuple[list[Any], float | None]:
    """In the claim's transaction: lock the limited workers' rows, claim each one's due
    works within its allowance; the claim statements' rows, and the earliest time (the
    caller's clock) one of their works left may start. Fills ``held``."""
    ensure, lock, count, write = ops.sql.limits
    args = {"workers": limited, "base": values["base"]}
    rows = await conn.fetch(lock.text, *lock.args(**args))
    if len(rows) < len(limited):  # a worker's first limited claim: make its row
        await conn.execute(ensure.text, *ensure.args(**args))
        rows = await conn.fetch(lock.text, *lock.args(**args))
    running = dict(await conn.fetch(count.text, *count.args(**args)))
    statement = ops.sql.claim(bool(values["blocked"]), bool(params.paused_workers), True)
    values["paused"] = sorted(params.paused_workers)
    taken: list[Any] = []
    first: float | None = None
    for worker, tokens, at, compared_with in rows:
        # The bucket is kept on the clock SQL compares with (``compared_with``).
        allowance = Allowance.of(
            params.limits[worker],
            running=running.get(worker, 0),
            bucket=None if tokens is None else Bucket(tokens, at),
            now=compared_with,
        )
        values["only"] = worker
        values["limit"] = max(0, min(allowance.take, room - len(taken)))
        got = await ops.claim_statement(conn, statement, params.owner, values)
        n = sum(1 for row in got if row[4] is not None)
        taken += got
        left = got[0][0]  # the worker's earliest claimable work left, SQL's clock
        start = allowance.next_start(n, left)
        if start is not None:
            start = start - compared_with + params.now
            if first is None or start < first:
                first = start
        why = allowance.held_by(n)
        if why is not None and left is not None and left <= compared_with:
            held[worker] = why
        bucket = allowance.bucket_after(n)
        if bucket is not None:
            await conn.execute(
                write.text, *write.args(worker=worker, tokens=bucket.tokens, at=bucket.at)
            )
    return taken, first
