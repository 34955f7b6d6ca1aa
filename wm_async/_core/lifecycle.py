"""The work state machine as pure functions.

Every function takes a record, an event and ``now`` (UTC epoch seconds) and returns the
new record, or a :class:`Change` pairing the record it expects with the one to write.
Nothing here does I/O, reads a clock or imports anyio: stores apply the changes
atomically, guarded by the expected prior state (compare-and-set), and the scheduler
decides when to call what. See docs/semantics.md for the rules cited below ("semantics 18" is its rule 18).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Final, TypeVar

import attrs

from .data import (
    EMPTY_DATA,
    Data,
    FrozenData,
)
from .errors import InvalidRequestError
from .mergers import MERGERS
from .model import (
    StopReason,
    UpdateResult,
    WorkError,
    WorkState,
)
from .policy import NO_POLICY, WorkerPolicy
from .record import (
    RUNTIME_FIELDS,
    WorkRecord,
    evolve,
    first_period_due,
    next_period_due,
    transition,
)

_EMPTY: Final[Data] = EMPTY_DATA  # type: ignore[assignment]  # read-only, shared
#: What a store tags each finished work with in a propagation (see split_level).
_O = TypeVar("_O")

#: Error type recorded when ``max_attempts`` ends a work.
MAX_ATTEMPTS_ERROR: Final = "wm_async.MaxAttemptsReached"
#: Error type of a chained work failed because a prerequisite failed (semantics 19).
PREREQUISITE_FAILED: Final = "wm_async.PrerequisiteFailed"
#: Error type of a chained work whose prerequisites' outputs could not be merged (20).
MERGE_FAILED: Final = "wm_async.InputMergeFailed"


class Change:
    """Write ``after`` if the stored record still has ``before``'s state and attempt count.

    The guard makes every transition a compare-and-set: a late result of a cancelled run,
    or a second process racing on the same work, changes nothing.

    (A plain class, one built per run: a frozen attrs class sets each field through
    ``object.__setattr__``, which cost more than the rest of building it. Nothing
    changes one once built.)
    """

    __slots__ = ("after", "before")

    def __init__(self, before: WorkRecord, after: WorkRecord) -> None:
        self.before = before
        self.after = after

    def __repr__(self) -> str:
        return f"Change(before={self.before!r}, after={self.after!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Change):
            return NotImplemented
        return self.before == other.before and self.after == other.after

    __hash__ = None  # type: ignore[assignment]  # records are not hashable either


@attrs.frozen
class Succeeded:
    """The worker returned ``None`` or ``Result.success(output)``."""

    output: Data = _EMPTY


@attrs.frozen
class Failed:
    """The worker returned ``Result.failure``, raised, or could not be run."""

    output: Data = _EMPTY
    error: WorkError | None = None


@attrs.frozen
class Retry:
    """The worker returned ``Result.retry()``, or raised an exception its worker's
    ``retry_on`` lists.

    :ivar delay: seconds to wait instead of the backoff's delay (``Result.retry(delay=)``)
    :ivar error: the exception raised, recorded while the work waits to run again
    """

    delay: float | None = None
    error: WorkError | None = None


@attrs.frozen
class Interrupted:
    """The run was stopped from outside (timeout, lost constraint, shutdown, crash)."""

    reason: StopReason


@attrs.frozen
class Unstarted:
    """The run was stopped before its worker was called (shutdown, a lost constraint, a
    timeout while it waited for a runner): the claim is undone, and the attempt that
    never ran is not counted."""

    reason: StopReason


@attrs.frozen
class Exhausted:
    """The work was claimed with its attempts used up: its worker's ``max_attempts``
    (which crash recovery, done by the store, does not know) was reached by a run that
    was interrupted. It fails without running; the claim's attempt is not counted."""

    max_attempts: int


Outcome = Succeeded | Failed | Retry | Interrupted | Unstarted | Exhausted


_claimed: Final = transition(
    "state", "run_attempt_count", "next_run_at", "started_at", "progress", "stop_reason", "owner"
)
_succeeded: Final = transition(
    "state", "next_run_at", "finished_at", "output", "progress", "error", "owner"
)


def claim(record: WorkRecord, *, now: float, owner: str | None) -> WorkRecord:
    """ENQUEUED → RUNNING; the attempt is counted in the same write (semantics 7). The
    due time stays: how late the run started is ``started_at - next_run_at``."""
    assert record.state is WorkState.ENQUEUED, record.state
    # The stop reason describes this run from now on (as WorkManager's does).
    return _claimed(
        record,
        WorkState.RUNNING,
        record.run_attempt_count + 1,
        record.next_run_at,
        now,
        _EMPTY,
        StopReason.NOT_STOPPED,
        owner,
    )


def _max_attempts_reached(record: WorkRecord, max_attempts: int | None) -> bool:
    return max_attempts is not None and record.run_attempt_count >= max_attempts


def _failed(record: WorkRecord, now: float, output: Data, error: WorkError | None) -> WorkRecord:
    return evolve(
        record,
        state=WorkState.FAILED,
        next_run_at=None,
        finished_at=now,
        output=output,
        progress=_EMPTY,
        error=error,
        owner=None,
    )


def _reenqueue(record: WorkRecord, now: float, due: float, reason: StopReason) -> WorkRecord:
    return evolve(
        record,
        state=WorkState.ENQUEUED,
        next_run_at=due,
        last_enqueue_time=now,
        progress=_EMPTY,
        output=_EMPTY,
        stop_reason=reason,
        owner=None,
    )


def finish(
    record: WorkRecord, outcome: Outcome, *, now: float, policy: WorkerPolicy = NO_POLICY
) -> Change:
    """The transition for a run's outcome (semantics 8-13, 15), with ``policy`` the
    worker's defaults for what the request leaves open (semantics 46).

    ``record`` is the RUNNING record the run was started with.
    """
    if isinstance(outcome, Succeeded):
        after = _succeeded(
            record, WorkState.SUCCEEDED, None, now, outcome.output, _EMPTY, None, None
        )
    elif isinstance(outcome, Failed):
        after = _failed(record, now, outcome.output, outcome.error)
    elif isinstance(outcome, Unstarted):
        # Nothing ran: back to ENQUEUED, due now, as if the claim had not happened (so a
        # max_attempts=1 work stopped by a shutdown before it started still runs later).
        return Change(
            record,
            evolve(
                record,
                state=WorkState.ENQUEUED,
                run_attempt_count=record.run_attempt_count - 1,
                next_run_at=now,
                progress=_EMPTY,
                stop_reason=outcome.reason,
                owner=None,
            ),
        )
    elif isinstance(outcome, Exhausted):
        ran = evolve(record, run_attempt_count=record.run_attempt_count - 1)
        what = "an interruption"
        after = _failed(ran, now, _EMPTY, _max_attempts_error(ran, what, outcome.max_attempts))
    elif isinstance(outcome, Retry):
        limit = policy.max_attempts_for(record)
        if _max_attempts_reached(record, limit):
            what = "a retry"
            if outcome.error is not None:
                what += f" ({outcome.error.type}: {outcome.error.message})"
            after = _failed(record, now, _EMPTY, _max_attempts_error(record, what, limit))
        else:
            delay = outcome.delay
            if delay is None:
                delay = policy.backoff_for(record).delay_for(record.run_attempt_count)
            after = _reenqueue(record, now, now + delay, StopReason.NOT_STOPPED)
            if outcome.error is not None:
                after = evolve(after, error=outcome.error)
    else:
        limit = policy.max_attempts_for(record)
        if _max_attempts_reached(record, limit):
            what = f"an interruption ({outcome.reason.value})"
            after = _failed(record, now, _EMPTY, _max_attempts_error(record, what, limit))
            after = evolve(after, stop_reason=outcome.reason)
        else:
            # Interrupted runs go straight back: the attempt counts, no backoff (12-15).
            after = _reenqueue(record, now, now, outcome.reason)
    if record.periodic is not None and after.state.is_finished:
        after = _next_period(record, after, now)
    return Change(record, after)


def _next_period(record: WorkRecord, ended: WorkRecord, now: float) -> WorkRecord:
    """semantics 3: whatever its result, a period's end re-enqueues periodic work for the
    next period; it stores no output, keeps the error of a failed period, and only
    cancellation finishes it."""
    assert record.periodic is not None
    return evolve(
        ended,
        state=WorkState.ENQUEUED,
        next_run_at=next_period_due(record.periodic, now),
        last_enqueue_time=now,
        finished_at=None,
        output=_EMPTY,
        run_attempt_count=0,
        period_count=record.period_count + 1,
    )


def _max_attempts_error(record: WorkRecord, what: str, limit: int | None) -> WorkError:
    return WorkError(
        type=MAX_ATTEMPTS_ERROR,
        message=f"{what} after {record.run_attempt_count} of max_attempts={limit} runs",
    )


def cancel(record: WorkRecord, *, now: float) -> Change | None:
    """Any unfinished state → CANCELLED (semantics 29); finished work is left alone."""
    if record.state.is_finished:
        return None
    reason = (
        StopReason.CANCELLED_BY_APP if record.state is WorkState.RUNNING else record.stop_reason
    )
    after = evolve(
        record,
        state=WorkState.CANCELLED,
        next_run_at=None,
        finished_at=now,
        progress=_EMPTY,
        stop_reason=reason,
        owner=None,
    )
    return Change(record, after)


def recover(record: WorkRecord, *, now: float) -> Change:
    """A RUNNING work found after a crash runs again (semantics 15)."""
    return finish(record, Interrupted(StopReason.UNKNOWN), now=now)


def delay_met(record: WorkRecord, *, now: float) -> Change | None:
    """Make an ENQUEUED work due now (``TestDriver.set_initial_delay_met``)."""
    if record.state is not WorkState.ENQUEUED or (
        record.next_run_at is not None and record.next_run_at <= now
    ):
        return None
    return Change(record, evolve(record, next_run_at=now))


def set_progress(record: WorkRecord, progress: Data) -> Change | None:
    """Record progress of a RUNNING work (semantics 16)."""
    if record.state is not WorkState.RUNNING:
        return None
    return Change(record, evolve(record, progress=progress))


def update_spec(record: WorkRecord, new: WorkRecord) -> tuple[UpdateResult, Change | None]:
    """``update_work`` (semantics 27): give ``record`` the spec of ``new`` (a record built
    from the new request), keeping its id, state, attempt count and period clock.

    RUNNING → APPLIED_FOR_NEXT_RUN (the current run keeps the old spec); ENQUEUED and
    BLOCKED → APPLIED_IMMEDIATELY; finished → NOT_APPLIED. ``generation`` goes up by one.
    """
    if record.state.is_finished:
        return UpdateResult.NOT_APPLIED, None
    next_run_at = record.next_run_at
    if record.state is WorkState.ENQUEUED and record.run_attempt_count == 0:
        # Not yet run in this period: its due time follows the new delay/period.
        start = record.last_enqueue_time + new.initial_delay
        if new.periodic is None:
            next_run_at = start
        elif record.period_count == 0:
            next_run_at = first_period_due(new.periodic, start)
        else:
            next_run_at = next_period_due(new.periodic, record.last_enqueue_time)
    after = evolve(
        new,
        id=record.id,
        unique_name=record.unique_name,
        generation=record.generation + 1,
        enqueued_at=record.enqueued_at,
        headers=record.headers,  # the trace context of its enqueue stays (semantics 52)
        **{name: getattr(record, name) for name in RUNTIME_FIELDS if name != "next_run_at"},
        next_run_at=next_run_at,
    )
    result = (
        UpdateResult.APPLIED_FOR_NEXT_RUN
        if record.state is WorkState.RUNNING
        else UpdateResult.APPLIED_IMMEDIATELY
    )
    return result, Change(record, after)


# -- chains (semantics 17-21) ----------------------------------------------------------------


def blocked(record: WorkRecord) -> WorkRecord:
    """A new record made to wait for prerequisites (before :func:`resolve` decides)."""
    return evolve(record, state=WorkState.BLOCKED, next_run_at=None)


def resolve(child: WorkRecord, prerequisites: Sequence[WorkRecord], *, now: float) -> WorkRecord:
    """The state of a new work whose direct ``prerequisites`` (in order) are as given
    (semantics 18, and 25 for APPEND): any FAILED → FAILED; else any CANCELLED →
    CANCELLED; else any unfinished → BLOCKED; else ENQUEUED with the merged input."""
    failed = next((p for p in prerequisites if p.state is WorkState.FAILED), None)
    if failed is not None:
        return prerequisite_failed(child, failed, now=now)
    if any(p.state is WorkState.CANCELLED for p in prerequisites):
        return prerequisite_cancelled(child, now=now)
    if any(not p.state.is_finished for p in prerequisites):
        return blocked(child)
    return unblock(child, [p.output for p in prerequisites], now=now)


def unblock(child: WorkRecord, outputs: Sequence[Data], *, now: float) -> WorkRecord:
    """BLOCKED → ENQUEUED once every prerequisite SUCCEEDED (semantics 19): the initial
    delay counts from now, and the input becomes ``merge([own input] + outputs)`` with the
    work's merger, ``outputs`` being its direct prerequisites' in order (semantics 20). A
    merge that fails (the array merger meeting two JSON types under one key) fails the
    work instead."""
    if outputs:
        merger = MERGERS[child.input_merger]
        try:
            merged = merger.merge([child.input, *outputs])
        except InvalidRequestError as exc:
            error = WorkError(type=MERGE_FAILED, message=str(exc))
            return _failed(child, now, _EMPTY, error)
        data: Data = FrozenData(merged) if merged else _EMPTY
    else:
        data = child.input
    # Merged before the write: the stored input is what the worker will see.
    return evolve(
        child,
        input=data,
        state=WorkState.ENQUEUED,
        next_run_at=now + child.initial_delay,
        last_enqueue_time=now,
    )


def prerequisite_failed(child: WorkRecord, cause: WorkRecord, *, now: float) -> WorkRecord:
    """A failed prerequisite fails its dependent (and so, in turn, theirs: semantics 19)."""
    error = WorkError(type=PREREQUISITE_FAILED, message=f"prerequisite {cause.id} failed")
    return _failed(child, now, _EMPTY, error)


def prerequisite_cancelled(child: WorkRecord, *, now: float) -> WorkRecord:
    """A cancelled prerequisite cancels its dependent (semantics 18 and 29)."""
    return evolve(child, state=WorkState.CANCELLED, next_run_at=None, finished_at=now, owner=None)


def prerequisite_ended(done: WorkRecord, child: WorkRecord) -> WorkRecord | None:
    """What a finished prerequisite ``done`` does to its BLOCKED dependent ``child``
    (semantics 19): a failure fails it and a cancellation cancels it (the store then
    applies the same to the child's own dependents); a success returns ``None``: the
    store counts it, and calls :func:`unblock` when the last prerequisite succeeds."""
    assert done.finished_at is not None
    if done.state is WorkState.SUCCEEDED:
        return None
    if done.state is WorkState.FAILED:
        return prerequisite_failed(child, done, now=done.finished_at)
    return prerequisite_cancelled(child, now=done.finished_at)


def resolve_new(
    records: Sequence[WorkRecord],
    links: Mapping[str, Sequence[str]],
    known: dict[str, WorkRecord],
) -> tuple[list[WorkRecord], list[int], list[tuple[str, str, int]]]:
    """For stores inserting chained works: each record in the state its prerequisites
    give it (:func:`resolve`), how many prerequisites each still waits for, and the
    edges ``(prerequisite id, work id, position)`` to store.

    ``known`` holds the stored prerequisites by id (read in the same transaction); the
    new records are added to it as they are resolved, so later ones may depend on them.

    :raises InvalidRequestError: if a prerequisite is neither stored nor new
    """
    stored: list[WorkRecord] = []
    waiting: list[int] = []
    edges: list[tuple[str, str, int]] = []
    for record in records:
        pids = tuple(dict.fromkeys(links.get(record.id, ())))
        left = 0
        if pids:
            missing = [p for p in pids if p not in known]
            if missing:
                raise InvalidRequestError(
                    "prerequisite", missing[0], "no such work (pruned, or never enqueued)"
                )
            prereqs = [known[p] for p in pids]
            record = resolve(record, prereqs, now=record.last_enqueue_time)
            edges += [(p, record.id, i) for i, p in enumerate(pids)]
            if record.state is WorkState.BLOCKED:
                left = sum(p.state is not WorkState.SUCCEEDED for p in prereqs)
        known[record.id] = record
        stored.append(record)
        waiting.append(left)
    return stored, waiting, edges


# -- propagation: what finished works do to their BLOCKED dependents (semantics 19, 29)
#
# A store walks level by level: the works a write finished (with an origin each: what the
# store reports a dependent's record to), then the dependents that level finished, and so
# on. Per level it reads, and these decide: first the dependents of the failed or
# cancelled works (they are failed or cancelled, not counted), then the successes are
# counted in the dependents still BLOCKED, and those left waiting for none are unblocked.


def split_level(
    level: Mapping[str, tuple[WorkRecord, _O]],
) -> tuple[dict[str, tuple[WorkRecord, _O]], list[tuple[WorkRecord, _O]]]:
    """``(failed or cancelled works by id, succeeded works)`` of one level of finished
    works (by id, with their origins); the first are resolved first: they win."""
    stopped = {k: v for k, v in level.items() if v[0].state is not WorkState.SUCCEEDED}
    return stopped, [v for v in level.values() if v[0].state is WorkState.SUCCEEDED]


def stop_dependents(
    stopped: Mapping[str, tuple[WorkRecord, _O]], found: Iterable[tuple[str, WorkRecord]]
) -> list[tuple[_O, WorkRecord]]:
    """``(origin, record)`` for each BLOCKED dependent of the ``stopped`` works, failed
    or cancelled, from the edges ``found`` (``(prerequisite id, dependent)`` as read, in
    that order). A dependent of several: a failure outranks a cancellation (semantics
    18), then the first edge read decides."""
    decided: dict[str, tuple[_O, WorkRecord]] = {}
    for pid, child in found:
        done, origin = stopped[pid]
        after = prerequisite_ended(done, child)
        assert after is not None
        previous = decided.get(child.id)
        if previous is None or (
            after.state is WorkState.FAILED and previous[1].state is not WorkState.FAILED
        ):
            decided[child.id] = (origin, after)
    return list(decided.values())


def ready_dependents(counted: Iterable[tuple[int, WorkRecord]]) -> list[WorkRecord]:
    """The dependents whose last prerequisite just succeeded, from ``(prerequisites
    still waited for once this level's successes are counted, dependent)``."""
    return [child for left, child in counted if left <= 0]


def unblock_dependents(
    succeeded: Sequence[tuple[WorkRecord, _O]], ready: Iterable[tuple[WorkRecord, Sequence[Data]]]
) -> list[tuple[_O, WorkRecord]]:
    """``(origin, record)`` for each ready dependent (with its direct prerequisites'
    outputs, in order), :func:`unblock` applied at the level's last success; each is
    reported to the first succeeded work's origin."""
    now = max(r.finished_at or 0.0 for r, _ in succeeded)
    origin = succeeded[0][1]
    return [(origin, unblock(child, outputs, now=now)) for child, outputs in ready]


def next_level(resolved: Iterable[tuple[_O, WorkRecord]]) -> dict[str, tuple[WorkRecord, _O]]:
    """The dependents a level finished (failed, cancelled, or a merge failed), by id:
    the next level of the walk."""
    return {r.id: (r, o) for o, r in resolved if r.state.is_finished}


# -- unique work (semantics 22-25) ------------------------------------------------------------


@attrs.frozen
class UniquePlan:
    """What enqueueing under a unique name does to the works already under it.

    :ivar cancels: unfinished works to cancel first (their records are then deleted)
    :ivar deletes: ids of works to delete from the name
    :ivar inserts: the new works, prerequisites before their dependents
    :ivar prerequisites: the direct prerequisites of new works, by new work id, in order
        (the works of the previous step of a chain; for APPEND, the name's leaves too)
    """

    cancels: tuple[Change, ...] = ()
    deletes: tuple[str, ...] = ()
    inserts: tuple[WorkRecord, ...] = ()
    prerequisites: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


def plan_unique(
    policy: str,
    existing: Sequence[WorkRecord],
    leaves: Sequence[WorkRecord],
    new: Sequence[WorkRecord],
    *,
    prerequisites: Mapping[str, tuple[str, ...]] | None = None,
    roots: Collection[str] | None = None,
    now: float,
) -> UniquePlan:
    """semantics 22-25: ``policy`` is an :class:`ExistingWorkPolicy` value (the periodic
    KEEP and CANCEL_AND_REENQUEUE map to KEEP and REPLACE). ``existing`` are the works
    under the name, ``leaves`` those of them no work depends on, ``new`` the works to
    enqueue (a chain, with ``prerequisites``), and ``roots`` the ids of its first step
    under the name (default: the new works without prerequisites). With no work under
    the name, every policy inserts.

    - KEEP: nothing, if any work under the name is unfinished; otherwise the name's works
      are deleted and the new ones inserted.
    - REPLACE: unfinished works are cancelled (a running one is stopped), every work
      under the name is deleted, and the new ones are inserted.
    - APPEND: the first step of the new works depends on the leaves, so it starts when
      they all succeed (a failed or cancelled leaf fails or cancels it at once).
    - APPEND_OR_REPLACE: APPEND, but a failed or cancelled leaf makes it a REPLACE.
    """
    links = dict(prerequisites or {})
    if not existing:
        return UniquePlan(inserts=tuple(new), prerequisites=links)
    unfinished = [r for r in existing if not r.state.is_finished]
    if policy == "KEEP" and unfinished:
        return UniquePlan()
    if policy == "APPEND_OR_REPLACE":
        ended = any(r.state in (WorkState.FAILED, WorkState.CANCELLED) for r in leaves)
        policy = "REPLACE" if ended else "APPEND"
    if policy == "APPEND":
        order = tuple(r.id for r in sorted(leaves, key=lambda r: (r.enqueued_at, r.id)))
        if order:
            first = roots if roots is not None else [r.id for r in new if r.id not in links]
            for rid in first:
                links[rid] = order + tuple(p for p in links.get(rid, ()) if p not in order)
        return UniquePlan(inserts=tuple(new), prerequisites=links)
    cancels = tuple(c for r in unfinished if (c := cancel(r, now=now)) is not None)
    return UniquePlan(
        cancels=cancels,
        deletes=tuple(r.id for r in existing),
        inserts=tuple(new),
        prerequisites=links,
    )
