"""Settling: what a virtual clock needs to know of a scheduler before it moves time.

A :class:`~wm_async.testing.VirtualClock` moves time only once every manager on it has
settled: its dispatcher sleeps with no wake-up pending, none of its store calls is in
flight, its shutdown is not working, and all that held for a few loop iterations. One
:class:`Settle` per scheduler holds that state, and the clock attaches to it. The
scheduler's services only bump its counters and flags (:meth:`Settle.touch`,
:meth:`Settle.tracked`); nothing waits on it unless a virtual clock does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

#: Loop iterations a virtual clock lets pass with no scheduler activity before it
#: considers the scheduler settled (workers awaiting nothing wm_async knows about).
SETTLE_CHECKPOINTS = 10


class Settle:
    """One scheduler's activity, as a virtual clock sees it.

    Whoever changes one of the fields below calls :meth:`touch` after it, so that a
    settle check in progress starts again.
    """

    __slots__ = (
        "_waiter",
        "activity",
        "dispatcher_asleep",
        "in_flight",
        "shutdown_busy",
        "stopped",
    )

    def __init__(self) -> None:
        #: Bumped by every :meth:`touch`: a check that saw it move starts again.
        self.activity = 0
        #: Store calls in flight, and outcomes waiting for the recorder.
        self.in_flight = 0
        #: The dispatcher sleeps, and nothing has woken it since it fell asleep.
        self.dispatcher_asleep = True
        #: Shutdown is working (not while it waits out the grace period).
        self.shutdown_busy = False
        #: The scheduler has stopped: settled for good.
        self.stopped = False
        self._waiter: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"Settle(in_flight={self.in_flight}, quiet={self.is_quiet()})"

    def touch(self) -> None:
        """Note a change (cheap: a counter, and an event while a check waits)."""
        self.activity += 1
        if self._waiter is not None:
            self._waiter.set()

    @contextmanager
    def tracked(self) -> Iterator[None]:
        """Mark a store call in flight, so virtual clocks wait for it."""
        self.in_flight += 1
        self.touch()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.touch()

    def is_quiet(self) -> bool:
        """Whether the scheduler has nothing to do at the current time."""
        return self.stopped or (
            self.dispatcher_asleep and self.in_flight == 0 and not self.shutdown_busy
        )

    async def wait_settled(self) -> None:
        """Return once the dispatcher sleeps, no store call is in flight, and that held
        for a few loop iterations (see :class:`wm_async.testing.VirtualClock`)."""
        while True:
            while not self.is_quiet():
                waiter = self._waiter = anyio.Event()
                if self.is_quiet():
                    break
                await waiter.wait()
            self._waiter = None
            marker = self.activity
            for _ in range(SETTLE_CHECKPOINTS):
                await anyio.lowlevel.checkpoint()
            if self.is_quiet() and self.activity == marker:
                return
