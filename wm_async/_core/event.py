"""WorkEvent: one state transition of one work, as listeners receive it (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeAlias

import attrs

from .model import Result, StopReason, WorkError, WorkState


@attrs.frozen(kw_only=True, slots=True)
class WorkEvent:
    """One state transition of one work, as this process saw it written.

    Listeners registered with ``manager.add_listener`` receive one per transition: the
    ones this process wrote (enqueue, claim, the end of a run, a retry, cancel, crash
    recovery, a chain's propagation) and, flagged ``external``, the ones another process
    wrote that this process read back (works it waits on, watches or runs). Progress
    reports are not transitions.

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
        started (``None`` when the due time was not seen here)
    :ivar error: the error a FAILED work (or one waiting for a retry) carries
    :ivar stop_reason: why the run was stopped (``NOT_STOPPED`` otherwise)
    :ivar tags: the work's tags
    :ivar period_count: periods done (periodic work)
    :ivar external: written by another process and read back here
    """

    work_id: uuid.UUID
    worker: str
    from_state: WorkState | None
    to_state: WorkState
    attempt: int
    at: datetime
    duration: timedelta | None = None
    lateness: timedelta | None = None
    error: WorkError | None = None
    stop_reason: StopReason = StopReason.NOT_STOPPED
    tags: frozenset[str] = frozenset()
    period_count: int = 0
    external: bool = False

    @property
    def is_retry(self) -> bool:
        """A run ended with a retry (``Result.retry()`` or a ``retry_on`` exception)."""
        return (
            self.from_state is WorkState.RUNNING
            and self.to_state is WorkState.ENQUEUED
            and self.stop_reason is StopReason.NOT_STOPPED
            and self.attempt > 0
        )

    @property
    def is_timeout(self) -> bool:
        """A run was stopped by its timeout."""
        return self.stop_reason is StopReason.TIMEOUT and self.from_state in (
            WorkState.RUNNING,
            None,
        )

    @property
    def is_rescue(self) -> bool:
        """A work left RUNNING by a dead process (or a lost lease) was put back by
        crash recovery."""
        return (
            self.to_state is WorkState.ENQUEUED
            and self.from_state in (WorkState.RUNNING, None)
            and self.stop_reason is StopReason.UNKNOWN
        )


#: What ``manager.add_listener`` accepts: called with each event, in the event loop.
Listener: TypeAlias = Callable[[WorkEvent], None]
#: What a middleware's ``call_next`` is: calls the next middleware, or the worker.
CallNext: TypeAlias = Callable[[], Awaitable[Result | None]]
#: What ``manager.add_propagator`` accepts: fills a carrier with headers to store with
#: each work enqueued (called in the enqueuing task, so it sees its context variables).
Propagator: TypeAlias = Callable[[dict[str, str]], None]
