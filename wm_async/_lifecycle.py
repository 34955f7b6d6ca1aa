"""The work state machine as pure functions.

Every function takes a record, an event and ``now`` (UTC epoch seconds) and returns the
new record, or a :class:`Change` pairing the record it expects with the one to write.
Nothing here does I/O, reads a clock or imports anyio: stores apply the changes
atomically, guarded by the expected prior state (compare-and-set), and the scheduler
decides when to call what. See SEMANTICS.md for the rules cited below.
"""

from __future__ import annotations

from typing import Final

import attrs

from ._model import Data, StopReason, UpdateResult, WorkError, WorkState
from ._record import RUNTIME_FIELDS, WorkRecord, evolve, first_period_due, next_period_due
from ._validators import EMPTY_DATA

_EMPTY: Final[Data] = EMPTY_DATA  # type: ignore[assignment]  # read-only, shared

#: Error type recorded when ``max_attempts`` ends a work.
MAX_ATTEMPTS_ERROR: Final = "wm_async.MaxAttemptsReached"


@attrs.frozen
class Change:
    """Write ``after`` if the stored record still has ``before``'s state and attempt count.

    The guard makes every transition a compare-and-set: a late result of a cancelled run,
    or a second process racing on the same work, changes nothing.
    """

    before: WorkRecord
    after: WorkRecord


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
    """The worker returned ``Result.retry()``."""


@attrs.frozen
class Interrupted:
    """The run was stopped from outside (timeout, lost constraint, shutdown, crash)."""

    reason: StopReason


Outcome = Succeeded | Failed | Retry | Interrupted


def claim(record: WorkRecord, *, now: float, owner: str | None) -> WorkRecord:
    """ENQUEUED → RUNNING; the attempt is counted in the same write (SEMANTICS 7)."""
    assert record.state is WorkState.ENQUEUED, record.state
    return evolve(
        record,
        state=WorkState.RUNNING,
        run_attempt_count=record.run_attempt_count + 1,
        next_run_at=None,
        started_at=now,
        progress=_EMPTY,
        stop_reason=StopReason.NOT_STOPPED,  # describes this run from now on (as WM does)
        owner=owner,
    )


def _max_attempts_reached(record: WorkRecord) -> bool:
    return record.max_attempts is not None and record.run_attempt_count >= record.max_attempts


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


def finish(record: WorkRecord, outcome: Outcome, *, now: float) -> Change:
    """The transition for a run's outcome (SEMANTICS 8-13, 15).

    ``record`` is the RUNNING record the run was started with.
    """
    if isinstance(outcome, Succeeded):
        after = evolve(
            record,
            state=WorkState.SUCCEEDED,
            next_run_at=None,
            finished_at=now,
            output=outcome.output,
            progress=_EMPTY,
            error=None,
            owner=None,
        )
    elif isinstance(outcome, Failed):
        after = _failed(record, now, outcome.output, outcome.error)
    elif isinstance(outcome, Retry):
        if _max_attempts_reached(record):
            after = _failed(record, now, _EMPTY, _max_attempts_error(record, "a retry"))
        else:
            delay = record.backoff.delay_for(record.run_attempt_count)
            after = _reenqueue(record, now, now + delay, StopReason.NOT_STOPPED)
    else:
        if _max_attempts_reached(record):
            what = f"an interruption ({outcome.reason.value})"
            after = _failed(record, now, _EMPTY, _max_attempts_error(record, what))
            after = evolve(after, stop_reason=outcome.reason)
        else:
            # Interrupted runs go straight back: the attempt counts, no backoff (12-15).
            after = _reenqueue(record, now, now, outcome.reason)
    if record.periodic is not None and after.state.is_finished:
        after = _next_period(record, after, now)
    return Change(record, after)


def _next_period(record: WorkRecord, ended: WorkRecord, now: float) -> WorkRecord:
    """SEMANTICS 3: whatever its result, a period's end re-enqueues periodic work for the
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


def _max_attempts_error(record: WorkRecord, what: str) -> WorkError:
    return WorkError(
        type=MAX_ATTEMPTS_ERROR,
        message=f"{what} after {record.run_attempt_count} of max_attempts="
        f"{record.max_attempts} runs",
    )


def cancel(record: WorkRecord, *, now: float) -> Change | None:
    """Any unfinished state → CANCELLED (SEMANTICS 29); finished work is left alone."""
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
    """A RUNNING work found after a crash runs again (SEMANTICS 15)."""
    return finish(record, Interrupted(StopReason.UNKNOWN), now=now)


def delay_met(record: WorkRecord, *, now: float) -> Change | None:
    """Make an ENQUEUED work due now (``TestDriver.set_initial_delay_met``)."""
    if record.state is not WorkState.ENQUEUED or (
        record.next_run_at is not None and record.next_run_at <= now
    ):
        return None
    return Change(record, evolve(record, next_run_at=now))


def set_progress(record: WorkRecord, progress: Data) -> Change | None:
    """Record progress of a RUNNING work (SEMANTICS 16)."""
    if record.state is not WorkState.RUNNING:
        return None
    return Change(record, evolve(record, progress=progress))


def respec(record: WorkRecord, new: WorkRecord) -> tuple[UpdateResult, Change | None]:
    """``update_work`` (SEMANTICS 27): give ``record`` the spec of ``new`` (a record built
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
        **{name: getattr(record, name) for name in RUNTIME_FIELDS if name != "next_run_at"},
        next_run_at=next_run_at,
    )
    result = (
        UpdateResult.APPLIED_FOR_NEXT_RUN
        if record.state is WorkState.RUNNING
        else UpdateResult.APPLIED_IMMEDIATELY
    )
    return result, Change(record, after)


@attrs.frozen
class UniquePlan:
    """What enqueueing under a unique name does to the works already under it.

    :ivar cancels: unfinished works to cancel first (their records are then deleted)
    :ivar deletes: ids of works to delete from the name
    :ivar inserts: the new works
    """

    cancels: tuple[Change, ...] = ()
    deletes: tuple[str, ...] = ()
    inserts: tuple[WorkRecord, ...] = ()


def plan_unique(
    policy: str, existing: list[WorkRecord], new: list[WorkRecord], *, now: float
) -> UniquePlan:
    """SEMANTICS 22-24 for KEEP and REPLACE (``policy`` is the policy's value; the
    periodic KEEP and CANCEL_AND_REENQUEUE map to these). With no work under the name,
    every policy inserts.

    - KEEP: nothing, if any work under the name is unfinished; otherwise the name's works
      are deleted and the new ones inserted.
    - REPLACE: unfinished works are cancelled (a running one is stopped), every work
      under the name is deleted, and the new ones are inserted.
    """
    unfinished = [r for r in existing if not r.state.is_finished]
    if policy == "KEEP" and unfinished:
        return UniquePlan()
    cancels = tuple(c for r in unfinished if (c := cancel(r, now=now)) is not None)
    return UniquePlan(cancels=cancels, deletes=tuple(r.id for r in existing), inserts=tuple(new))
