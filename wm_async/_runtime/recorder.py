"""Recording the outcomes of runs: the batched writes of runs that ended normally, the
immediate writes of stopped ones, and riding out a store that fails meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import anyio

from .._core import lifecycle
from .._core.errors import StoreError
from .._core.model import StopReason
from .health import backoff

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._clock import Clock
    from .._core.record import WorkRecord
    from ..stores._base import Store
    from .executor import RunHandle
    from .health import StoreHealth
    from .runs import RunTable
    from .settle import Settle

logger = logging.getLogger("wm_async.scheduler")

#: Bound on every shielded bookkeeping write (recording an interrupted run).
BOOKKEEPING_TIMEOUT = 5.0


class Recorder:
    """Writes run outcomes to the store and frees the runs' places once written.

    A run that ended normally is queued (:meth:`record_soon`), and :meth:`run` writes all
    the outcomes queued meanwhile with one store call. A stopped or interrupted run is
    written at once (:meth:`record`), shielded, as shutdown may be cancelling its task.
    While the store fails, each write is retried until it takes it; the run keeps its
    place meanwhile, so a store that stays down stops new claims (back-pressure).
    """

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        publish: Callable[[Sequence[WorkRecord]], None],
        runs: RunTable,
        settle: Settle,
        health: StoreHealth,
    ) -> None:
        self._store = store
        self._clock = clock
        self._publish = publish
        self._runs = runs
        self._settle = settle
        self._health = health
        # Outcomes of runs that ended normally, waiting for the next batch.
        self._results: list[RunHandle] = []
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"Recorder(queued={len(self._results)})"

    def record_soon(self, handle: RunHandle, outcome: lifecycle.Outcome) -> None:
        """Hand a normal outcome to the recorder, which writes the outcomes of all the
        runs that ended meanwhile with one store call. The runner goes on to its next run
        at once; this run keeps its place (capacity, ``runs()``) until it is recorded."""
        handle.change = lifecycle.finish(
            handle.record, outcome, now=self._clock.now(), policy=handle.policy
        )
        self._results.append(handle)
        self._settle.in_flight += 1  # a virtual clock waits for the write
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, tg: TaskGroup) -> None:
        """Write the queued outcomes, a batch per turn, for as long as the manager runs;
        retry a failed batch's outcomes one by one in tasks of ``tg``.

        Nothing cancels it while runs are in progress (shutdown stops it once they are
        all recorded), so, as a runner's own write was, the write is not shielded.
        """
        loop = asyncio.get_running_loop()
        settle = self._settle
        while True:
            if not self._results:
                self._waiter = waiter = loop.create_future()
                await waiter
                continue
            batch, self._results = self._results, []
            # Every handle queued by record_soon carries its change.
            changes = cast("list[lifecycle.Change]", [handle.change for handle in batch])
            try:
                written = await self._store.apply(changes)
            except StoreError as exc:
                # Retry each outcome on its own, as runs once recorded their own: a change
                # the store keeps refusing then holds up its run alone.
                for handle, change in zip(batch, changes, strict=True):
                    tg.start_soon(self._record_after_failure, handle, change, exc)
                continue
            self._health.recovered()
            try:
                if written:
                    self._publish(written)
            finally:
                for handle in batch:
                    handle.change = None
                self._runs.release_all(batch)
                settle.in_flight -= len(batch)
                settle.touch()

    async def _record_after_failure(
        self, handle: RunHandle, change: lifecycle.Change, exc: StoreError
    ) -> None:
        try:
            written = await self._retry(exc, "recording a result", change)
            if written:
                self._publish(written)
        finally:
            self._runs.release(handle)
            self._settle.in_flight -= 1
            self._settle.touch()

    async def record(self, handle: RunHandle, outcome: lifecycle.Outcome) -> None:
        """Write the outcome of a stopped or interrupted run now (its place stays held)."""
        if handle.abandoned:
            return  # shutdown recorded it interrupted; the store may be closed by now
        change = lifecycle.finish(
            handle.record, outcome, now=self._clock.now(), policy=handle.policy
        )
        written: list[WorkRecord] = []
        settle = self._settle
        settle.in_flight += 1
        try:
            # Runs that ended normally go through record_soon; these were stopped or
            # interrupted, and shutdown may be cancelling their task.
            with anyio.move_on_after(BOOKKEEPING_TIMEOUT, shield=True):
                try:
                    written = await self._store.apply([change])
                except StoreError as exc:
                    written = await self._retry(exc, "recording a result", change)
            if written:
                self._publish(written)
        finally:
            settle.in_flight -= 1
            settle.touch()

    async def record_and_release(self, handle: RunHandle, outcome: lifecycle.Outcome) -> None:
        """:meth:`record`, then free the run's place (whatever the write did)."""
        try:
            await self.record(handle, outcome)
        finally:
            self._runs.release(handle)

    async def record_abandoned(self, handles: Sequence[RunHandle]) -> None:
        """Record runs that shutdown leaves behind (their workers ignored cancellation)
        as interrupted, so they run again on the next start; nothing they return later
        is recorded (it would fail the compare-and-set guard anyway)."""
        now = self._clock.now()
        changes = [
            lifecycle.finish(
                h.record,
                lifecycle.Interrupted(StopReason.SHUTDOWN)
                if h.started
                else lifecycle.Unstarted(StopReason.SHUTDOWN),
                now=now,
                policy=h.policy,
            )
            for h in handles
        ]
        for handle in handles:
            handle.abandoned = True  # whatever it returns later is not recorded
        with anyio.move_on_after(BOOKKEEPING_TIMEOUT, shield=True), self._settle.tracked():
            self._publish(await self._store.apply(changes))

    async def _retry(
        self, exc: StoreError, doing: str, change: lifecycle.Change
    ) -> list[WorkRecord]:
        """Apply ``change`` until the store takes it. The run keeps its capacity slot
        meanwhile, so a store that stays down stops new claims (back-pressure); if the
        manager stops first, the work is still RUNNING in the store and runs again on the
        next start (semantics 15) or, with leases, once its lease expires."""
        settle, clock = self._settle, self._clock
        failures = 0
        while True:
            self._health.failed(exc, doing)
            failures += 1
            settle.in_flight -= 1  # a virtual clock must be free to move while we wait
            settle.touch()
            try:
                await clock.sleep_until(clock.now() + backoff(failures), anyio.Event())
            finally:
                settle.in_flight += 1
                settle.touch()
            try:
                written = await self._store.apply([change])
            except StoreError as again:
                exc = again
            else:
                self._health.recovered()
                return written
