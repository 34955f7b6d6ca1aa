"""Run timeouts: the deadlines of the runs in progress, and stopping a run whose time is
up (stop reason TIMEOUT)."""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING

from .._core.model import StopReason

if TYPE_CHECKING:
    from .._clock import (
        Clock,
        Timer,
    )
    from .executor import (
        RunHandle,
    )
    from .workers import WorkerTable

logger = logging.getLogger("wm_async.scheduler")


class Deadlines:
    """Run deadlines, one FIFO queue per timeout length, behind a single clock timer.

    Deadlines are on the clock's monotonic time: a timeout measures a duration, and a
    step of the wall clock must neither cut a run short nor stretch it.

    Runs with the same timeout start in order, so their deadlines are already sorted:
    adding is an append, a finished run is dropped lazily when it reaches the head of its
    queue, and only the earliest head has a timer. (A heap or a timer per run costs more
    on the hot path, and almost every run shares the manager's default timeout.)
    """

    def __init__(self, clock: Clock, workers: WorkerTable) -> None:
        self._clock = clock
        self._workers = workers
        # Handles, each with its deadline set (no tuple per run to allocate).
        self._queues: dict[float, deque[RunHandle]] = {}
        self._timer: Timer | None = None
        self._timer_at = math.inf

    def __repr__(self) -> str:
        return f"Deadlines(queues={len(self._queues)})"

    def add(self, handle: RunHandle, timeout: float, now: float) -> None:
        """Watch ``handle`` until ``now + timeout``."""
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        while queue and queue[0].finished:
            queue.popleft()
        deadline = handle.deadline = now + timeout
        queue.append(handle)
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_later(when - self._clock.monotonic(), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        for handle in self.expired(self._clock.monotonic()):
            worker = self._workers.find(handle.record.worker)
            if handle.in_worker and worker is not None and not worker.is_async:
                logger.warning(
                    "%r passed its timeout; a sync worker's thread cannot be cancelled, so "
                    "the run keeps its place (max_concurrency) until the function returns",
                    handle,
                )
            handle.stop(StopReason.TIMEOUT)

    def expired(self, now: float) -> list[RunHandle]:
        """Remove and return the unfinished runs whose deadline has passed; re-arm."""
        out: list[RunHandle] = []
        earliest = math.inf
        for timeout, queue in list(self._queues.items()):
            while queue and (queue[0].finished or queue[0].deadline <= now):
                handle = queue.popleft()
                if not handle.finished:
                    out.append(handle)
            if queue:
                earliest = min(earliest, queue[0].deadline)
            else:
                del self._queues[timeout]
        if earliest < math.inf:
            self._arm(earliest)
        return out

    def close(self) -> None:
        """Cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._queues.clear()
