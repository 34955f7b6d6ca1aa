"""SQLiteStore's claim: the due works it takes, in order (semantics 48), within the
limited workers' allowances (semantics 50), and the next due time."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._core.limits import Allowance, Bucket, HeldBy, WorkerLimits
from . import _codec as codec
from . import _sqlite_sql as sqlite_sql

if TYPE_CHECKING:
    from ._base import ClaimParams


class _DB(Protocol):
    """What a claim uses of a connection: aiosqlite's, or the transaction's in-thread
    one."""

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Iterable[Any]: ...


#: The (expedited, priority) levels the last claim found: the next claim expects them
#: (one statement), and claims again if the statement finds others (see claim_sql).
_expected_levels: list[tuple[int, int]] = []


async def claim(db: _DB, params: ClaimParams) -> tuple[list[Any], float | None, dict[str, HeldBy]]:
    """Claim in the database; the caller decodes the rows (``claim_due``).

    Expedited first, then higher priority, then earlier due (semantics 48). Limited
    workers' works (semantics 50) are taken first, each worker's within its allowance
    (its cap less its RUNNING works, the tokens of its bucket), then the others'."""
    limit = max(params.limit, 0)
    held: dict[str, HeldBy] = {}
    excluded = params.paused_workers
    chosen: list[int] = []
    next_due: float | None = None
    if params.limits:
        limited = sorted(w for w in params.limits if w not in excluded)
        excluded = excluded | set(limited)
        chosen, next_due = await _claim_limited(db, params, limited, held)
    if params.limits and len(chosen) >= limit:
        next_due = params.now  # full: the dispatcher claims again at once
    else:
        taken, due, _ = await _choose(db, params, limit - len(chosen), excluded, None)
        chosen += taken
        if due is not None and (next_due is None or due < next_due):
            next_due = due
    if not chosen:
        return [], next_due, held
    rows = list(
        await db.execute_fetchall(
            sqlite_sql.CLAIM_UPDATE, (params.now, params.owner, json.dumps(chosen))
        )
    )
    order = {rowid: i for i, rowid in enumerate(chosen)}
    rows.sort(key=lambda row: order[row[0]])
    return rows, next_due, held


async def _claim_limited(
    db: _DB, params: ClaimParams, limited: list[str], held: dict[str, HeldBy]
) -> tuple[list[int], float | None]:
    """The rowids a claim takes of the limited workers' due works, in their order, and
    the earliest time one of their works left may start; fills ``held``.

    Each worker's due works, RUNNING count and bucket are read by one statement; no
    other process claims on the file meanwhile (the scheduler lock), and runs that end
    meanwhile only make the count read too high."""
    chosen: list[int] = []
    next_due: float | None = None
    for worker in limited:
        limits = params.limits[worker]

        def allowance_of(extras: dict[int, Any], limits: WorkerLimits = limits) -> Allowance:
            bucket = extras.get(-3)
            return Allowance.of(
                limits,
                running=extras[-2][1] if -2 in extras else 0,
                bucket=None if bucket is None else Bucket(bucket[1], bucket[2]),
                now=params.now,
            )

        room = max(params.limit, 0) - len(chosen)
        taken, left, allowance = await _choose(
            db, params, room, params.paused_workers, worker, allowance_of
        )
        chosen += taken
        start = allowance.next_start(len(taken), left)
        if start is not None and (next_due is None or start < next_due):
            next_due = start
        why = allowance.held_by(len(taken))
        if why is not None and left is not None and left <= params.now:
            held[worker] = why
        bucket = allowance.bucket_after(len(taken))
        if bucket is not None and taken:  # untouched, the stored bucket refills alike
            await db.execute_fetchall(sqlite_sql.WRITE_BUCKET, (worker, bucket.tokens, bucket.at))
    return chosen, next_due


async def _choose(
    db: _DB,
    params: ClaimParams,
    limit: int,
    excluded: Collection[str],
    only: str | None,
    allowance_of: Callable[[dict[int, Any]], Allowance] | None = None,
) -> tuple[list[int], float | None, Allowance]:
    """The rowids of up to ``limit`` due works to claim, in claim order (of the worker
    ``only``, or of every worker not ``excluded``), the earliest due time of the
    claimable works left (in the past if more are due now), and with ``only``, the
    worker's allowance (``allowance_of`` the extra rows read), which bounds ``limit``."""
    global _expected_levels
    limit = max(limit, 0)
    blocked = sorted(params.blocked_signals)
    args: dict[str, object] = {"now": params.now, "k": limit + 1}
    args.update((f"b{i}", f",{codec.signal_key(name)},") for i, name in enumerate(blocked))
    paused = bool(excluded)
    workers: list[str] = []
    if paused and only is None:
        included = await _included_workers(db, excluded)
        if included == []:
            return [], None, _UNLIMITED  # no work of any other worker is ENQUEUED
        if included is not None:
            workers, paused = included, False
            args.update((f"w{j}", w) for j, w in enumerate(workers))
    if paused:
        args["paused"] = json.dumps(sorted(excluded))
    if only is not None:
        args["only"] = only
        # Its runs here that returned, outcome not yet written, no longer run.
        args["returned"] = json.dumps(sorted(params.returned.get(only, ())))
    levels = _expected_levels
    for _ in range(2):
        used = levels
        for i, (expedited, priority) in enumerate(used):
            args[f"e{i}"] = expedited
            args[f"p{i}"] = priority
        statement = sqlite_sql.claim_sql(
            len(blocked), len(used), paused, only is not None, len(workers)
        )
        read = await db.execute_fetchall(statement, args)
        found_levels = sorted(((r[1], r[2]) for r in read if r[0] == -1), reverse=True)
        if found_levels == used:
            break
        # Others than expected: read again with them. (Should another connection change
        # them again in between, the rows read are still due works, and its commit
        # wakes this store to claim the rest.)
        levels = _expected_levels = found_levels
    allowance = _UNLIMITED
    if allowance_of is not None:
        allowance = allowance_of({r[0]: r for r in read if r[0] < -1})
        limit = min(limit, allowance.take)
    found: list[tuple[list[tuple[float, int]], list[tuple[float, int]]]] = [([], []) for _ in used]
    for level, later, rowid, due in read:
        if level >= 0:
            found[level][later].append((due, rowid))
    chosen: list[int] = []
    next_due: float | None = None
    for due_now, future in found:
        if workers:  # read worker by worker: in due order, ties in insertion order
            due_now.sort()
            future.sort()
        else:
            due_now.sort(key=itemgetter(0))  # stable: ties keep the index order
        take = min(len(due_now), limit - len(chosen))
        chosen += [rowid for _, rowid in due_now[:take]]
        rest = due_now[take:] or future
        if rest and (next_due is None or rest[0][0] < next_due):
            next_due = rest[0][0]
    return chosen, next_due, allowance


async def _included_workers(db: _DB, excluded: Collection[str]) -> list[str] | None:
    """The names of the workers with ENQUEUED works but those ``excluded`` (paused or
    limited), if there are at most :data:`MAX_WORKERS`: a claim then reads their works
    worker by worker rather than scanning past the excluded ones' (semantics 47, 50).
    ``None`` if there are more."""
    most = MAX_WORKERS + len(excluded) + 1
    rows = list(await db.execute_fetchall(sqlite_sql.CLAIM_WORKERS, {"most": most}))
    names = [r[0] for r in rows if r[0] not in excluded]
    if len(names) > MAX_WORKERS or len(rows) >= most:
        return None  # more workers than that (or than read): scan past the excluded
    return names


#: The most workers a claim reads one by one (see :func:`_included_workers`); with more,
#: it scans the due works past the excluded ones.
MAX_WORKERS: Final = 16

#: The allowance of a worker without limits.
_UNLIMITED: Final = Allowance.of(WorkerLimits(), running=0, bucket=None, now=0.0)
