"""The in-process change feed: ``wait()`` waiters and ``watch()`` subscriptions.

Publishing costs a dict lookup per record when nobody listens. A subscription buffers
at most one snapshot per work id (the latest): a slow subscriber never blocks the
scheduler and never grows without bound, and it always sees a work's latest state.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio

if TYPE_CHECKING:
    from ._model import WorkInfo, WorkQuery
    from ._record import WorkRecord


class WorkWatcher:
    """An async iterator of :class:`~wm_async.WorkInfo` snapshots for works matching a
    query: first their current states, then every change, never the same snapshot twice
    in a row for a work.

    If the consumer falls behind, intermediate states of a work are skipped and only its
    latest is delivered. Iteration ends when the manager stops or :meth:`aclose` is
    called. Use ``async with manager.watch(q) as infos:`` to close it deterministically.
    """

    def __init__(
        self,
        hub: EventHub,
        query: WorkQuery,
        initial: Callable[[], Awaitable[Sequence[WorkRecord]]],
    ) -> None:
        self._hub = hub
        self._query = query
        self._initial: Callable[[], Awaitable[Sequence[WorkRecord]]] | None = initial
        self._pending: dict[str, WorkRecord] = {}
        self._last: dict[str, WorkInfo] = {}
        self._ready = anyio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"WorkWatcher({self._query!r})"

    def _offer(self, record: WorkRecord) -> None:
        if self._closed or not self._query.matches(record):
            return
        pending = self._pending
        pending.pop(record.id, None)  # re-insert so the order follows the latest change
        pending[record.id] = record
        self._ready.set()

    def _close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> WorkWatcher:
        return self

    async def __anext__(self) -> WorkInfo:
        if self._initial is not None:
            load, self._initial = self._initial, None
            for record in await load():
                # Anything already buffered arrived after the watcher was created: newer.
                if record.id not in self._pending:
                    self._pending[record.id] = record
        while True:
            while self._pending:
                rid = next(iter(self._pending))
                info = self._pending.pop(rid).to_info()
                if self._last.get(rid) != info:
                    self._last[rid] = info
                    return info
            if self._closed:
                raise StopAsyncIteration
            self._ready = anyio.Event()
            await self._ready.wait()

    async def aclose(self) -> None:
        """Stop watching."""
        self._close()
        self._hub._subscriptions.discard(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventHub:
    """Fans each written record out to waiters and watchers."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[anyio.Event]] = {}
        # Weak, so an abandoned watcher is collected rather than buffering forever.
        self._subscriptions: weakref.WeakSet[WorkWatcher] = weakref.WeakSet()
        #: Set when the manager stops; reopened when it starts again.
        self.closed = False

    def publish(self, records: Sequence[WorkRecord]) -> None:
        """Deliver written records to whoever listens."""
        waiters = self._waiters
        if waiters:
            for record in records:
                if record.id in waiters and record.state.is_finished:
                    for event in waiters.pop(record.id):
                        event.set()
        if self._subscriptions:
            for watcher in list(self._subscriptions):
                for record in records:
                    watcher._offer(record)

    def is_waited(self, work_id: str) -> bool:
        """Whether a ``wait()`` waits for this work."""
        return work_id in self._waiters

    def waited_ids(self) -> list[str]:
        """The works ``wait()`` calls wait for."""
        return list(self._waiters)

    def has_watchers(self) -> bool:
        """Whether any ``watch()`` is open."""
        return bool(self._subscriptions)

    def watched_queries(self) -> list[WorkQuery]:
        """The queries of the open watchers."""
        return [w._query for w in list(self._subscriptions)]

    def add_waiter(self, work_id: str) -> anyio.Event:
        """An event set when the work reaches a terminal state."""
        event = anyio.Event()
        self._waiters.setdefault(work_id, []).append(event)
        return event

    def remove_waiter(self, work_id: str, event: anyio.Event) -> None:
        """Forget a waiter (after a timeout or cancellation)."""
        events = self._waiters.get(work_id)
        if events is not None and event in events:
            events.remove(event)
            if not events:
                del self._waiters[work_id]

    def subscribe(
        self, query: WorkQuery, initial: Callable[[], Awaitable[Sequence[WorkRecord]]]
    ) -> WorkWatcher:
        """Register a watcher; changes published from now on reach it."""
        watcher = WorkWatcher(self, query, initial)
        self._subscriptions.add(watcher)
        return watcher

    def close(self) -> None:
        """End every watcher and wake every waiter (the manager is stopping)."""
        for watcher in list(self._subscriptions):
            watcher._close()
        self._subscriptions.clear()
        self.closed = True
        for events in self._waiters.values():
            for event in events:
                event.set()
        self._waiters.clear()
