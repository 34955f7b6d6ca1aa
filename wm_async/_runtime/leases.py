"""Leases (stores shared by several processes): renewing those of this process's runs,
and stopping a run whose lease is lost or may end before it can be renewed (fencing)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import anyio

from .._core.errors import StoreError
from .._core.model import (
    StopReason,
    WorkState,
)

if TYPE_CHECKING:
    from .._clock import Clock
    from ..stores._base import Store
    from .runs import RunTable
    from .settle import Settle

logger = logging.getLogger("wm_async.scheduler")

#: While lease renewals fail, a run is stopped this long (at most a tenth of the lease)
#: before its lease may end, so that it never overlaps another process's run.
LEASE_MARGIN = 1.0


class LeaseKeeper:
    """Keeps the leases of this process's runs for as long as they run."""

    def __init__(
        self, *, store: Store, clock: Clock, owner: str, runs: RunTable, settle: Settle
    ) -> None:
        self._store = store
        self._clock = clock
        self._owner = owner
        self._runs = runs
        self._settle = settle

    def __repr__(self) -> str:
        return f"LeaseKeeper(owner={self._owner!r})"

    async def run(self, lease: float) -> None:
        """Renew the leases of this process's runs every half lease while any run; stop
        the runs whose lease was lost (their results would not be recorded).

        While renewals fail (the store is unreachable from here, not necessarily from
        other processes), a run whose lease may be about to end is stopped here, with
        stop reason LEASE_LOST, before another process can rescue it: a partition does
        not let two runs of one work overlap. So is a run whose lease may have ended while
        this process was paused. A run's lease is known to last at least ``lease`` from
        when the claim or the last successful renewal was *sent* (the store extends it
        later than that), on the monotonic clock.
        """
        clock, runs = self._clock, self._runs
        margin = min(LEASE_MARGIN, lease / 10)
        failing = False
        while True:
            if not runs.running:
                runs.has_runs = anyio.Event()
                await runs.has_runs.wait()
            delay = lease / 2
            if failing:  # wake up in time to fence the runs whose lease is ending
                ending = min(
                    (h.lease_from for h in runs.running.values() if h.stop_reason is None),
                    default=math.inf,
                )
                delay = min(delay, max(0.0, ending + lease - margin - clock.monotonic()))
            # all_idle cuts the sleep short when the last run ends: with a virtual clock,
            # an idle manager then has no timer for advance() to step through.
            await clock.sleep_until(clock.now() + delay, runs.all_idle)
            # A run whose lease may have ended meanwhile (this process was paused past
            # it: a stopped process, a frozen VM) may be running elsewhere by now: stop
            # it before anything else, rather than after a round trip to the store.
            self._fence(lease - margin)
            handles = [h for h in runs.running.values() if h.stop_reason is None]
            if not handles:
                continue
            sent = clock.monotonic()
            try:
                with self._settle.tracked():
                    lost = await self._store.renew_leases(
                        owner=self._owner, ids=[h.record.id for h in handles], now=clock.now()
                    )
                    for handle in handles:
                        if handle.record.id not in lost:
                            handle.lease_from = max(handle.lease_from, sent)
                    failing = False
                    if lost:
                        await self._stop_lost(lost)
            except StoreError as exc:
                if not failing:
                    logger.error("renewing leases failed: %s", exc)
                failing = True
                self._fence(lease - margin)

    def _fence(self, valid: float) -> None:
        """Stop the runs whose lease may end within ``valid`` of its last known start."""
        now = self._clock.monotonic()
        for handle in list(self._runs.running.values()):
            if handle.finished or handle.stop_reason is not None:
                continue
            if handle.lease_from + valid <= now:
                logger.warning(
                    "stopping %r: its lease could not be renewed and ends now; another "
                    "process may run the work (stop reason LEASE_LOST)",
                    handle,
                )
                handle.stop(StopReason.LEASE_LOST)

    async def _stop_lost(self, lost: set[str]) -> None:
        # Read why: a work cancelled by another process stops as CANCELLED_BY_APP; one
        # taken over after its lease expired (this process stalled) as LEASE_LOST.
        states = {r.id: r.state for r in await self._store.get(lost)}
        for work_id in lost:
            handle = self._runs.running.get(work_id)
            if handle is None or handle.finished:
                continue  # ended meanwhile
            cancelled = states.get(work_id) is WorkState.CANCELLED
            reason = StopReason.CANCELLED_BY_APP if cancelled else StopReason.LEASE_LOST
            logger.warning("stopping %r: its lease was lost (%s)", handle, reason.value)
            handle.stop(reason)
