"""A due-heap with lazy invalidation.

Entries are ``(due, seq, key)``. ``_current`` maps each live key to the seq of its one
valid entry, so rescheduling or removing a key is O(log n) / O(1) with no search: stale
entries are dropped when they reach the top, and the heap is rebuilt when stale entries
outnumber live ones two to one (as trio's ``Deadlines`` does).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_REBUILD_THRESHOLD = 1000


class DueHeap(Generic[K]):
    """Keys ordered by due time; each key appears at most once."""

    __slots__ = ("_current", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
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
        heapq.heappush(self._heap, (due, seq, key))
        if replacing:  # only a replaced entry turns stale; a new key keeps the ratio
            self._maybe_rebuild()

    def discard(self, key: K) -> None:
        """Remove ``key`` if present."""
        if self._current.pop(key, None) is not None:
            self._maybe_rebuild()

    def _drop_stale_top(self) -> None:
        heap, current = self._heap, self._current
        while heap and current.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)

    def peek(self) -> tuple[float, K] | None:
        """The earliest ``(due, key)``, or ``None`` if empty."""
        self._drop_stale_top()
        if not self._heap:
            return None
        due, _, key = self._heap[0]
        return due, key

    def pop(self) -> tuple[float, K]:
        """Remove and return the earliest ``(due, key)``; raises IndexError if empty."""
        heap, current = self._heap, self._current
        while True:
            due, seq, key = heapq.heappop(heap)
            if current.get(key) == seq:
                del current[key]
                return due, key

    def _maybe_rebuild(self) -> None:
        live = len(self._current)
        if len(self._heap) > 2 * live + _REBUILD_THRESHOLD:
            current = self._current
            self._heap = [e for e in self._heap if current.get(e[2]) == e[1]]
            heapq.heapify(self._heap)
