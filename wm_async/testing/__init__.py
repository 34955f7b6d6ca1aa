"""Test helpers: a virtual clock and a driver that short-cuts delays and constraints.

::

    clock = VirtualClock()
    manager = WorkManager(store="memory://", clock=clock)
    async with manager:
        await manager.enqueue(OneTimeWorkRequest("w", initial_delay=60))
        await clock.advance(timedelta(seconds=60))   # runs it, returns when idle

Time moves only when the test advances it. ``advance`` steps through every timer due in
the interval in order (so a retry's backoff is measured from when the run really ended)
and, after each step, waits until every manager on the clock is settled: the dispatcher
sleeps, no store call is in flight, and that stays so for a few loop iterations. A worker
awaiting something other than wm_async (a real socket, ``anyio.sleep``) counts as
blocked, not busy.

Leaving ``async with manager:`` waits up to ``shutdown_grace`` *on the manager's clock*
for running work: with a virtual clock, either advance it from another task while the
manager stops, or give managers whose workers may still be running ``shutdown_grace=0``.

:mod:`wm_async.testing.conformance` is the store conformance suite: the pytest tests every
:class:`~wm_async.stores.Store` passes, which a store of your own runs too (its docstring
says how). It needs pytest; importing :mod:`wm_async.testing` does not import it.
"""

from __future__ import annotations

from ._clock import VirtualClock as VirtualClock
from ._driver import TestDriver as TestDriver

__all__ = ("TestDriver", "VirtualClock")
