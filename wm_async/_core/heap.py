"""A due-heap with lazy invalidation.

Entries are ``(due, seq, key)``. ``_current`` maps each live key to the seq of its one
valid entry, so rescheduling or removing a key is O(log n) / O(1) with no search: stale
entries are dropped when they reach the top, and the entries are rebuilt when stale ones
outnumber live ones two to one (as trio's ``Deadlines`` does).

Most pushes come in due order (work enqueued to run now, or all with the same delay), so
an entry due no earlier than the last one appended goes to a FIFO lane instead of the
heap: O(1) in and out. The earliest entry is the smaller of the two heads.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_REBUILD_THRESHOLD = 1000


class DueHeap(Generic[K]):
    """Keys ordered by due time (equal times in push order); each key appears at most
    once."""

    __slots__ = ("_current", "_fifo", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        # Sorted by (due, seq): appended only when due >= the tail's due.
        self._fifo: deque[tuple[float, int, K]] = deque()
        self._current: dict[K, int] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def push(self, key: K, due: float) -> None:
        """Add ``key`` due at ``due``, replacing any earlier entry for it."""
        seq = self._seq = self._seq + 1
        current = self._current
        replacing = key in current
        current[key] = seq
        fifo = self._fifo
        if not fifo or due >= fifo[-1][0]:
            fifo.append((due, seq, key))
        else:
            heapq.heappush(self._heap, (due, seq, key))
        if replacing:  # only a replaced entry turns stale; a new key keeps the ratio
            self._maybe_rebuild()

    def members(self) -> list[K]:
        """The keys, in no set order."""
        return list(self._current)

    def discard(self, key: K) -> None:
        """Remove ``key`` if present."""
        if self._current.pop(key, None) is not None:
            self._maybe_rebuild()

    def peek(self) -> tuple[float, K] | None:
        """The earliest ``(due, key)``, or ``None`` if empty."""
        heap, fifo, current = self._heap, self._fifo, self._current
        while heap and current.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        while fifo and current.get(fifo[0][2]) != fifo[0][1]:
            fifo.popleft()
        if fifo and (not heap or fifo[0] < heap[0]):
            due, _, key = fifo[0]
        elif heap:
            due, _, key = heap[0]
        else:
            return None
        return due, key

    def pop(self) -> tuple[float, K]:
        """Remove and return the earliest ``(due, key)``; raises IndexError if empty."""
        heap, fifo, current = self._heap, self._fifo, self._current
        while True:
            if fifo and (not heap or fifo[0] < heap[0]):
                due, seq, key = fifo.popleft()
            else:
                due, seq, key = heapq.heappop(heap)
            if current.get(key) == seq:
                del current[key]
                return due, key

    def pop_due(self, now: float, limit: int) -> list[K]:
        """Remove and return up to ``limit`` keys due at or before ``now``, earliest first
        (what ``peek`` and ``pop`` in a loop do, in one call)."""
        out: list[K] = []
        heap, fifo, current = self._heap, self._fifo, self._current
        while len(out) < limit:
            if fifo and (not heap or fifo[0] < heap[0]):
                due, seq, key = fifo[0]
                if current.get(key) != seq:
                    fifo.popleft()  # stale
                    continue
                if due > now:
                    break
                fifo.popleft()
            elif heap:
                due, seq, key = heap[0]
                if current.get(key) != seq:
                    heapq.heappop(heap)
                    continue
                if due > now:
                    break
                heapq.heappop(heap)
            else:
                break
            del current[key]
            out.append(key)
        return out

    def _maybe_rebuild(self) -> None:
        live = len(self._current)
        if len(self._heap) + len(self._fifo) > 2 * live + _REBUILD_THRESHOLD:
            current = self._current
            self._heap = [e for e in self._heap if current.get(e[2]) == e[1]]
            heapq.heapify(self._heap)
            self._fifo = deque(e for e in self._fifo if current.get(e[2]) == e[1])
