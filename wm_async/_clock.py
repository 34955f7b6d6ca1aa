"""Clocks: where wm_async gets the time from.

Persisted times are wall-clock UTC epoch seconds (``now()``); sleeping uses the event
loop's monotonic clock, re-derived from the wall time each time, so a wall-clock jump
delays nothing by more than the jump. Durations that must not follow the wall clock (run
timeouts) are measured on ``monotonic()`` and timed with ``call_later``: stepping the
wall clock an hour forward must not time out a healthy run. Nothing outside this module
and :mod:`wm_async.testing` reads the time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import anyio


class Timer(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None:
        """Do not run the callback (no-op if it already ran)."""


class Wakeup(Protocol):
    """What a sleep can be woken by: an ``anyio.Event`` or an ``asyncio.Event``."""

    def is_set(self) -> bool:
        """Whether it is set."""

    async def wait(self) -> object:
        """Return once it is set."""


class Settleable(Protocol):
    """Something a virtual clock waits for before and after moving time (a scheduler)."""

    async def wait_settled(self) -> None:
        """Return once nothing is left to do at the current time."""


class Clock:
    """The interface every clock provides. :class:`SystemClock` is the real one."""

    def now(self) -> float:
        """The current wall-clock time, UTC epoch seconds."""
        raise NotImplementedError

    def now_datetime(self) -> datetime:
        """The current wall-clock time as an aware UTC ``datetime``: what ``WorkInfo``'s
        times (``next_schedule_time``, ``started_at``, …) compare with. From :meth:`now`."""
        return datetime.fromtimestamp(self.now(), UTC)

    async def sleep_until(self, deadline: float | None, wakeup: Wakeup) -> None:
        """Return when ``wakeup`` is set or ``deadline`` (wall time) has passed.

        ``deadline=None`` waits for ``wakeup`` only.
        """
        raise NotImplementedError

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` (synchronously, on the loop) once wall time reaches ``when``."""
        raise NotImplementedError

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (its origin is arbitrary): what durations
        such as run timeouts are measured on.

        The default is :meth:`now`, for clocks whose time never steps (a virtual clock).
        """
        return self.now()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` (synchronously, on the loop) ``delay`` seconds of
        :meth:`monotonic` time from now.

        The default schedules it with :meth:`call_at` at ``now() + delay``.
        """
        return self.call_at(self.now() + delay, callback)

    def attach(self, participant: Settleable) -> None:
        """Register a scheduler driven by this clock (used by virtual clocks)."""

    def detach(self, participant: Settleable) -> None:
        """Undo :meth:`attach`."""


class SystemClock(Clock):
    """Real time: ``time.time()`` for timestamps, the loop's clock for sleeping."""

    def __repr__(self) -> str:
        return "SystemClock()"

    def now(self) -> float:
        """Wall-clock UTC epoch seconds."""
        return time.time()

    async def sleep_until(self, deadline: float | None, wakeup: Wakeup) -> None:
        """Sleep on the loop's monotonic clock until ``deadline`` or ``wakeup``."""
        if deadline is None:
            await wakeup.wait()
            return
        delay = deadline - time.time()
        if delay <= 0:
            return
        with anyio.CancelScope(deadline=anyio.current_time() + delay):
            await wakeup.wait()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Schedule ``callback`` on the running asyncio loop."""
        # asyncio's TimerHandle is the cheapest timer there is; wm_async is asyncio-native.
        return asyncio.get_running_loop().call_later(max(0.0, when - time.time()), callback)

    def monotonic(self) -> float:
        """``time.monotonic()``: a wall-clock step does not move it."""
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Schedule ``callback`` ``delay`` seconds from now on the running asyncio loop."""
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)
