"""PostgresStore's claim (``PostgresStore.claim_due``): one statement when no worker is
limited; with limited workers (semantics 50), first one statement per limited worker that
takes its works within its allowance, counted across every process (see
``Schema._limited``: it checks the version of the worker's row of ``wm_limits``, and is
tried again with the row as it is when another process's claim of that worker came
first), then one for the other workers' works, unless the first ones filled the claim.

A rate-limited worker's bucket is refilled on the claiming process's clock (the ``now``
the claim is given): processes sharing a bucket should keep their clocks in sync (NTP).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._core.errors import StoreError
from .._core.limits import Allowance, Bucket, HeldBy, WorkerLimits
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
    # Kept across retries of ``go``: a statement that committed gave us its works.
    taken: list[Any] = []
    done: set[str] = set()
    first: list[float] = []

    async def go(conn: _Conn) -> list[Any]:
        if ops.lost_claims and len(adopted) < limit:
            adopted.extend(await ops.adopt(conn, params, limit - len(adopted), base=base))
        if limited:
            await _claim_limited(
                ops, conn, params, limited, values, limit - len(adopted), db_clock,
                taken=taken, done=done, first=first, held=held,
            )  # fmt: skip
        room = limit - len(adopted) - sum(1 for row in taken if row[4] is not None)
        if limited and room <= 0:
            return []  # full: the dispatcher claims again at once
        values["limit"] = room
        values["paused"] = excluded
        rows: list[Any] = await ops.claim_statement(conn, statement, params.owner, values)
        return rows

    try:
        rows = await run("claiming", go, transaction=False)
    except StoreError:
        if not adopted and not taken:
            raise
        # Works already taken must reach the scheduler; the next claim meets the error
        # again, if it persists.
        rows = []
    due = _due(rows, params.now, db_clock) if rows else params.now
    if first and (due is None or min(first) < due):
        due = min(first)
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
    db_clock: bool,
    *,
    taken: list[Any],
    done: set[str],
    first: list[float],
    held: dict[str, HeldBy],
) -> None:
    """Claim each limited worker's due works within its allowance, one statement each
    (tried again while another process's claim of the worker came first); add their
    rows to ``taken`` (without the trailing columns), each worker to ``done``, the
    earliest time (the caller's clock) one of its works left may start to ``first``;
    fill ``held``."""
    ensure, read = ops.sql.limits
    statement = ops.sql.claim(bool(values["blocked"]), bool(params.paused_workers), True)
    values["paused"] = sorted(params.paused_workers)
    rows_seen = ops.limit_rows
    for worker in limited:
        if worker in done:
            continue
        limits = params.limits[worker]
        if sum(1 for r in taken if r[4] is not None) >= room:
            first.append(params.now)  # the claim is full: the dispatcher claims again
            done.add(worker)
            continue
        for _ in range(_TRIES):
            seen = rows_seen.get(worker)
            if seen is None:
                await conn.execute(ensure.text, *ensure.args(workers=[worker]))
                row = await conn.fetchrow(read.text, *read.args(only=worker))
                seen = rows_seen[worker] = (row[0], row[1], row[2])
            tokens, at, version = seen
            bucket = None if tokens is None else Bucket(tokens, at)
            # The tokens part of the allowance (the cap's part is counted in SQL).
            by_tokens = Allowance.of(
                WorkerLimits(rate=limits.rate), running=0, bucket=bucket, now=params.now
            )
            left_room = max(0, room - sum(1 for r in taken if r[4] is not None))
            values.update(
                only=worker,
                expect=version,
                limit=left_room,
                take=min(by_tokens.take, left_room),
                cap=limits.max_running,
                # Our runs that returned, outcome not yet written: RUNNING, not running.
                returned=sorted(params.returned.get(worker, ())),
                tokens=by_tokens.tokens,
                at=params.now,
            )
            got = await ops.claim_statement(conn, statement, params.owner, values)
            fresh, running, *now_seen = got[0][-5:]
            if not fresh:  # another process claimed the worker's works first
                if now_seen[2] is None:  # the row is gone: make it again
                    rows_seen.pop(worker, None)
                else:
                    rows_seen[worker] = (now_seen[0], now_seen[1], now_seen[2])
                continue
            claimed = [row[:-5] for row in got]
            n = sum(1 for row in claimed if row[4] is not None)
            taken += [row for row in claimed if row[4] is not None]
            allowance = Allowance.of(limits, running=running, bucket=bucket, now=params.now)
            after = allowance.bucket_after(n)
            rows_seen[worker] = (
                None if after is None else after.tokens,
                None if after is None else after.at,
                version + 1,
            )
            left = _due(claimed, params.now, db_clock)
            start = allowance.next_start(n, left)
            if start is not None:
                first.append(start)
            why = allowance.held_by(n)
            if why is not None and left is not None and left <= params.now:
                held[worker] = why
            break
        else:  # contended throughout: claim it next time, at once
            first.append(params.now)
        done.add(worker)


#: How many times a limited worker's claim is tried while other processes' claims of
#: the worker keep coming first.
_TRIES = 8
