"""The virtual clock: time moves only when a test advances it (re-exported by
:mod:`wm_async.testing`)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio

from .._clock import (
    Clock,
    Settleable,
    Timer,
    Wakeup,
)
from .._core import validators
from .._core.errors import InvalidRequestError

__all__ = ("VirtualClock",)

_DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


class _VirtualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock(Clock):
    """A clock that moves only when the test calls :meth:`advance`.

    :param start: the time to start at (an aware datetime; naive means UTC). Defaults to
        2030-01-01T00:00Z so tests are deterministic.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = _DEFAULT_START
        if not isinstance(start, datetime):
            raise InvalidRequestError("start", start, "expected a datetime")
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._now = start.timestamp()
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _VirtualTimer]] = []
        self._sleepers: dict[int, tuple[float, anyio.CancelScope]] = {}
        self._participants: list[Settleable] = []

    def __repr__(self) -> str:
        return f"VirtualClock(now={self.datetime().isoformat()})"

    def now(self) -> float:
        """The virtual time, UTC epoch seconds."""
        return self._now

    def datetime(self) -> datetime:
        """The virtual time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._now, UTC)

    async def sleep_until(self, deadline: float | None, wakeup: Wakeup) -> None:
        """Wait for ``wakeup`` or until :meth:`advance` reaches ``deadline``."""
        if deadline is not None and deadline <= self._now:
            return
        key = next(self._seq)
        # The deadline cancels this scope rather than setting ``wakeup``, which other
        # code may share and must not see set by a timer.
        with anyio.CancelScope() as scope:
            if deadline is not None:
                self._sleepers[key] = (deadline, scope)
            try:
                await wakeup.wait()
            finally:
                self._sleepers.pop(key, None)

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` when :meth:`advance` reaches ``when``."""
        timer = _VirtualTimer(callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def attach(self, participant: Settleable) -> None:
        """Called by a starting manager: advance waits for it to settle."""
        self._participants.append(participant)

    def detach(self, participant: Settleable) -> None:
        """Called by a stopping manager."""
        if participant in self._participants:
            self._participants.remove(participant)

    def _next_deadline(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        candidates = [d for d, _ in self._sleepers.values()]
        if self._timers:
            candidates.append(self._timers[0][0])
        return min(candidates) if candidates else None

    def _fire(self) -> None:
        now = self._now
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()
        for key, (deadline, scope) in list(self._sleepers.items()):
            if deadline <= now:
                del self._sleepers[key]
                scope.cancel()

    async def settle(self) -> None:
        """Wait until every manager on this clock has nothing left to do now."""
        for participant in list(self._participants):
            await participant.wait_settled()

    async def advance(self, delta: timedelta | float) -> None:
        """Move time forward by ``delta``, running everything that becomes due on the way,
        in order, and return when all managers on this clock are settled.

        Settled means: no dispatcher has anything to do now and no store call of theirs
        is in flight, including the first read of a watcher whose consumer has started
        iterating. Time never moves while a store call is in flight.
        """
        step = validators.to_timedelta("delta", delta)
        validators.check_non_negative("delta", step)
        target = self._now + step.total_seconds()
        await self.settle()
        while True:
            deadline = self._next_deadline()
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            self._fire()
            await self.settle()
        self._now = target
        self._fire()
        await self.settle()
