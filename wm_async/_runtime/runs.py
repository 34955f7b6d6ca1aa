"""The runs in progress in this process and the capacity they hold.

A run keeps its place (one of ``max_concurrency``) from its claim until its worker returns
(or, stopped or interrupted, until its outcome is recorded). A run whose worker returned
stays in progress, holding its lease, until the recorder has written its outcome; at most
``max_concurrency`` such outcomes wait at once (claims wait beyond that), so the next
batch is claimed while the last one's outcomes are written. Capacity is a count, not an anyio CapacityLimiter: nothing ever
waits for a place (the dispatcher claims only what is free), and the limiter's
bookkeeping cost a measurable share of a quick run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from .executor import RunHandle

if TYPE_CHECKING:
    from .._core.model import StopReason
    from .._core.record import WorkRecord
    from .hooks import TestHooks

logger = logging.getLogger("wm_async.scheduler")


def _nothing() -> None:
    pass


class RunTable:
    """The runs in progress, by work id, and the places they hold.

    :param max_concurrency: how many runs may be in progress at once
    :param hooks: what a TestDriver changed (works whose signals are ignored)
    """

    __slots__ = (
        "_hooks",
        "all_idle",
        "has_runs",
        "limited",
        "max_concurrency",
        "on_busy",
        "on_released",
        "returned_by_worker",
        "running",
        "slots_used",
    )

    def __init__(self, max_concurrency: int, hooks: TestHooks) -> None:
        self.max_concurrency = max_concurrency
        self._hooks = hooks
        self.running: dict[str, RunHandle] = {}
        #: Places held: runs claimed whose worker has not returned (or, stopped, whose
        #: outcome is not recorded).
        self.slots_used = 0
        #: The workers with a ``max_running`` cap (semantics 50), and how many of their
        #: runs here returned and wait for their outcome to be written: RUNNING in the
        #: store, no longer running (a claim does not count them against the cap).
        self.limited: frozenset[str] = frozenset()
        self.returned_by_worker: dict[str, set[str]] = {}
        #: Set while no run is in progress.
        self.all_idle = anyio.Event()
        self.all_idle.set()
        #: Set when a run starts while none ran (the lease renewal loop waits for it).
        self.has_runs = anyio.Event()
        #: Called when runs start while none ran (the loop watchdog wakes up).
        self.on_busy: Callable[[], None] = _nothing
        #: Called when places are freed (the dispatcher wakes up to claim more).
        self.on_released: Callable[[], None] = _nothing

    def __repr__(self) -> str:
        return f"RunTable(running={len(self.running)}, slots_used={self.slots_used})"

    def add(self, records: Sequence[WorkRecord], claimed_at: float) -> list[RunHandle]:
        """Hold a place for each run just claimed; return their handles."""
        was_idle = self.all_idle.is_set()
        if was_idle:
            self.all_idle = anyio.Event()
        self.has_runs.set()
        running = self.running
        self.slots_used += len(records)
        handles: list[RunHandle] = []
        for record in records:
            handle = RunHandle(record, claimed_at)
            running[record.id] = handle
            handles.append(handle)
        if was_idle:
            self.on_busy()  # after filling running, which the watchdog reads
        return handles

    def returned(self, handle: RunHandle) -> None:
        """The run's worker returned and its outcome waits for the recorder: free its
        place (the run stays in :attr:`running`, holding its lease, until recorded)."""
        if handle.returned or handle.finished:
            return
        handle.returned = True
        self.slots_used -= 1
        worker = handle.record.worker
        if worker in self.limited:
            self.returned_by_worker.setdefault(worker, set()).add(handle.record.id)
        # Wake the dispatcher only if this frees the first place: with places free
        # already, it is not waiting for one (it sleeps until a due time or a wake-up).
        if self.slots_used == self.max_concurrency - 1 and len(self.running) < (
            2 * self.max_concurrency
        ):
            self.on_released()

    def claimable(self) -> int:
        """How many works may be claimed now: free places, while no more than
        ``max_concurrency`` outcomes wait to be recorded."""
        limit = self.max_concurrency
        return min(limit - self.slots_used, 2 * limit - len(self.running))

    def release(self, handle: RunHandle) -> None:
        """The run's outcome is recorded (or given up): free its place."""
        self.release_all((handle,))

    def release_all(self, handles: Sequence[RunHandle]) -> None:
        """:meth:`release` for each run, waking the dispatcher once."""
        running = self.running
        finished = 0
        places = 0
        for handle in handles:
            if handle.finished:
                continue  # released already
            handle.finished = True
            finished += 1
            if not handle.returned:
                places += 1
            elif handle.record.worker in self.limited:
                ids = self.returned_by_worker.get(handle.record.worker)
                if ids is not None:
                    ids.discard(handle.record.id)
                    if not ids:
                        del self.returned_by_worker[handle.record.worker]
            # A work re-enqueued with no delay (zero backoff, interruption) may already
            # have been claimed again while this run recorded its outcome: drop only our
            # own entry.
            work_id = handle.record.id
            if running.get(work_id) is handle:
                del running[work_id]
        if not finished:
            return
        self.slots_used -= places
        if not running:
            self.all_idle.set()
        self.on_released()

    def statistics(self) -> dict[str, object]:
        """Capacity figures for the manager's stats."""
        return {
            "running": len(self.running),
            "max_concurrency": self.max_concurrency,
            "borrowed_tokens": self.slots_used,
            "recording": len(self.running) - self.slots_used,
            "claimable": max(self.claimable(), 0),
            "tasks_waiting": 0,
        }

    def is_busy(self) -> bool:
        """True while runs are in progress (safe to call from another thread)."""
        return bool(self.running)

    def runs(self, work_id: str) -> bool:
        """Whether a run of this work is in progress in this process."""
        return work_id in self.running

    def running_ids(self) -> list[str]:
        """The works running in this process."""
        return list(self.running)

    def interrupt(self, work_id: str, reason: StopReason) -> bool:
        """Stop a run of this process; returns False if it does not run here."""
        handle = self.running.get(work_id)
        if handle is None:
            return False
        handle.stop(reason)
        return True

    def stop_runs_needing(self, signal: str, reason: StopReason) -> None:
        """Stop the runs whose constraints need ``signal`` (it just turned false)."""
        for handle in list(self.running.values()):
            record = handle.record
            if signal in record.signal_names and not self._hooks.ignores_signals(record.id):
                logger.info("stopping %r: signal %s turned false", handle, signal)
                handle.stop(reason)
