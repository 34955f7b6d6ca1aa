"""WorkEvent: one state transition of one work, as listeners receive it (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeAlias

from .model import Result, StopReason, WorkError, WorkState

if TYPE_CHECKING:
    from .record import WorkRecord


#: The state and attempt count of a work as last seen (the "before" of an event), as one
#: int: ``attempts * 4`` plus 0 for ENQUEUED, 1 RUNNING, 2 BLOCKED (see :func:`seen`).
Seen: TypeAlias = int

_tuple_new = tuple.__new__


class WorkEvent(tuple[Any, ...]):
    """One state transition of one work, as this process saw it written; immutable.

    Listeners registered with ``manager.add_listener`` receive one per transition: the
    ones this process wrote (enqueue, claim, the end of a run, a retry, cancel, crash
    recovery, a chain's propagation) and, flagged ``external``, the ones another process
    wrote that this process read back (works it waits on, watches or runs). Progress
    reports are not transitions.

    An event is built for every transition while a listener is registered, so it holds
    the work's record and computes each attribute when read: read what you need.

    :ivar work_id: the work's UUID
    :ivar worker: the worker name
    :ivar from_state: the state before, ``None`` when this process had not seen the work
        before (its enqueue was not published here, or the listener was added since)
    :ivar to_state: the state now
    :ivar attempt: ``run_attempt_count`` after the transition (the run's number while
        RUNNING)
    :ivar at: when the transition happened (UTC), as the store records it
    :ivar duration: for a transition out of RUNNING seen here: how long the run took
    :ivar lateness: for a transition into RUNNING: how long after its due time the run
        started
    :ivar error: the error a FAILED work (or one waiting for a retry) carries
    :ivar stop_reason: why the run was stopped (``NOT_STOPPED`` otherwise)
    :ivar tags: the work's tags
    :ivar period_count: periods done (periodic work)
    :ivar unique_name: its unique-work name, if any
    :ivar external: written by another process and read back here
    """

    __slots__ = ()

    # (A tuple of the record, what was seen before and the external flag: building one
    # costs what a plain object's does, and nothing can change it.)
    def __new__(cls, record: WorkRecord, before: Seen | None, external: bool = False) -> Self:
        """The event of ``record`` just written (``before``: its state and attempt
        count as last seen, ``seen(state, attempts)``)."""
        return _tuple_new(cls, (record, before, external))

    def __repr__(self) -> str:
        return (
            f"WorkEvent(work_id={self[0].id}, worker={self.worker!r}, "
            f"{self.from_state and self.from_state.value} -> {self.to_state.value}, "
            f"attempt={self.attempt}, stop_reason={self.stop_reason.value}, "
            f"external={self.external})"
        )

    @property
    def work_id(self) -> uuid.UUID:
        """The work's UUID."""
        return uuid.UUID(self[0].id)

    @property
    def worker(self) -> str:
        """The worker name."""
        return self[0].worker  # type: ignore[no-any-return]

    @property
    def from_state(self) -> WorkState | None:
        """The state before (``None``: not seen here before)."""
        before = self[1]
        return None if before is None else _SEEN_STATES[before & 3]

    @property
    def to_state(self) -> WorkState:
        """The state now."""
        return self[0].state  # type: ignore[no-any-return]

    @property
    def attempt(self) -> int:
        """``run_attempt_count`` after the transition."""
        return self[0].run_attempt_count  # type: ignore[no-any-return]

    @property
    def timestamp(self) -> float:
        """When the transition happened, in UTC epoch seconds (``at`` as a float)."""
        return _timestamp(self[0])

    @property
    def at(self) -> datetime:
        """When the transition happened (UTC)."""
        return datetime.fromtimestamp(self.timestamp, UTC)

    @property
    def duration_seconds(self) -> float | None:
        """``duration`` in seconds (``None`` likewise)."""
        r, before = self[0], self[1]
        if before is None or before & 3 != 1 or r.started_at is None:  # (1: RUNNING)
            return None
        if r.state is WorkState.RUNNING:
            return None
        return max(0.0, _timestamp(r) - r.started_at)  # type: ignore[no-any-return]

    @property
    def duration(self) -> timedelta | None:
        """For a transition out of RUNNING seen here: how long the run took."""
        seconds = self.duration_seconds
        return None if seconds is None else timedelta(seconds=seconds)

    @property
    def lateness_seconds(self) -> float | None:
        """``lateness`` in seconds (``None`` likewise)."""
        r = self[0]
        if r.state is not WorkState.RUNNING or r.next_run_at is None or r.started_at is None:
            return None
        return max(0.0, r.started_at - r.next_run_at)  # type: ignore[no-any-return]

    @property
    def lateness(self) -> timedelta | None:
        """For a transition into RUNNING: how long after its due time the run started."""
        seconds = self.lateness_seconds
        return None if seconds is None else timedelta(seconds=seconds)

    @property
    def error(self) -> WorkError | None:
        """The error the work carries (FAILED, or waiting for a retry)."""
        return self[0].error  # type: ignore[no-any-return]

    @property
    def stop_reason(self) -> StopReason:
        """Why the run was stopped (``NOT_STOPPED`` otherwise)."""
        return self[0].stop_reason  # type: ignore[no-any-return]

    @property
    def tags(self) -> frozenset[str]:
        """The work's tags."""
        return self[0].tags  # type: ignore[no-any-return]

    @property
    def period_count(self) -> int:
        """Periods done (periodic work)."""
        return self[0].period_count  # type: ignore[no-any-return]

    @property
    def unique_name(self) -> str | None:
        """The work's unique-work name, if any."""
        return self[0].unique_name  # type: ignore[no-any-return]

    @property
    def external(self) -> bool:
        """Written by another process and read back here."""
        return self[2]  # type: ignore[no-any-return]

    @property
    def is_retry(self) -> bool:
        """A run ended with a retry (``Result.retry()`` or a ``retry_on`` exception)."""
        before = self[1]
        r = self[0]
        return (
            before is not None
            and before & 3 == 1  # RUNNING
            and r.state is WorkState.ENQUEUED
            and r.stop_reason is StopReason.NOT_STOPPED
            and r.run_attempt_count > 0
        )

    @property
    def is_timeout(self) -> bool:
        """A run was stopped by its timeout."""
        return self[0].stop_reason is StopReason.TIMEOUT and self.from_state in (
            WorkState.RUNNING,
            None,
        )

    @property
    def is_rescue(self) -> bool:
        """A work left RUNNING by a dead process (or a lost lease) was put back by crash
        recovery."""
        r = self[0]
        return (
            r.state is WorkState.ENQUEUED
            and r.stop_reason is StopReason.UNKNOWN
            and self.from_state in (WorkState.RUNNING, None)
        )


_RUNNING, _ENQUEUED, _BLOCKED = WorkState.RUNNING, WorkState.ENQUEUED, WorkState.BLOCKED
_SEEN_STATES = (_ENQUEUED, _RUNNING, _BLOCKED)


def seen(state: WorkState, attempts: int) -> Seen | None:
    """What is remembered of an unfinished work in ``state`` after ``attempts`` runs
    (an int: nothing the garbage collector tracks); ``None`` for a finished one."""
    if state is _RUNNING:
        return attempts * 4 + 1
    if state is _ENQUEUED:
        return attempts * 4
    if state is _BLOCKED:
        return attempts * 4 + 2
    return None


def _timestamp(r: WorkRecord) -> float:
    """When ``r``'s state was entered, as the store records it."""
    # (Identity tests: WorkState.is_finished hashes the enum, in Python code.)
    state = r.state
    if state is _RUNNING:
        t = r.started_at
    elif state is _ENQUEUED:
        t = r.last_enqueue_time
    elif state is _BLOCKED:
        t = r.enqueued_at
    else:
        t = r.finished_at
    return r.last_enqueue_time if t is None else t


#: What ``manager.add_listener`` accepts: called with each event, in the event loop.
Listener: TypeAlias = Callable[[WorkEvent], None]
#: What a middleware's ``call_next`` is: calls the next middleware, or the worker.
CallNext: TypeAlias = Callable[[], Awaitable[Result | None]]
#: What ``manager.add_propagator`` accepts: fills a carrier with headers to store with
#: each work enqueued (called in the enqueuing task, so it sees its context variables).
Propagator: TypeAlias = Callable[[dict[str, str]], None]
