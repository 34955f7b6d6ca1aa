"""The in-process change feed: ``wait()`` waiters and ``watch()`` subscriptions.

Publishing costs a dict lookup per record when nobody listens. A subscription's memory is
bounded by what its consumer has not read yet: it buffers the latest record of at most
``max_buffer`` changed works and, past that, drops them and reads its query afresh on the
next read. Of what it delivered it keeps only the last snapshot of each unfinished work
and the ids of the last few finished ones (to drop repeats). A slow subscriber never
blocks the scheduler, and it always ends up seeing each work's latest state.

A snapshot's ``held_by`` (semantics 50) is what holds the work back when the snapshot is
delivered, as this process knows it (:mod:`.holds`); when that changes for a worker (a
pause or resume heard of, a claim finding the worker's limit full or no longer full),
each watcher is given a new snapshot of the ENQUEUED works of that worker it delivered,
if their ``held_by`` changed by the time they are read: no store read.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import anyio
import attrs

from .._core.model import WorkInfo, WorkState

if TYPE_CHECKING:
    from .._core.model import WorkQuery
    from .._core.record import WorkRecord
    from .holds import Holds

#: How many finished works a watcher remembers having delivered: a store re-read (the
#: manager re-reads every watched work after a PostgreSQL reconnection) republishes their
#: final snapshots, which must not be delivered again.
RECENT_FINISHED: Final = 1024


class WorkWatcher:
    """An async iterator of :class:`~wm_async.WorkInfo` snapshots for works matching a
    query: first their current states, then every change, never the same snapshot twice
    in a row for a work.

    If the consumer falls behind, intermediate states of a work are skipped and only its
    latest is delivered. However far behind it falls, the watcher's memory stays bounded:
    it buffers the latest state of at most ``max_buffer`` changed works (an argument of
    :meth:`~wm_async.WorkManager.watch`). When one more work changes, it drops that buffer
    and, on the next read, reads the current states of the works its query selects from
    the store again, as it did first: the consumer still sees each work's latest state,
    coalesced, and no snapshot it already has of an unfinished work.

    A snapshot of an ENQUEUED work shows in ``held_by`` what holds it back as the manager
    knows it when the snapshot is read, as ``get_work_info`` would then (semantics 50).
    When that changes without the work changing (its worker paused or resumed, or the
    manager's latest claim finding the worker's ``max_running`` or ``rate_limit`` full,
    or no longer full), the watcher delivers a new snapshot of it; a work that merely
    becomes due while its worker stays held gets none: its next change shows it.

    Of what it delivered, a watcher keeps the last snapshot of each unfinished work (to
    drop exact repeats; forgotten once the work finishes) and the ids of the last 1,024
    finished works, so that a re-read of the store (after a PostgreSQL reconnection, or
    after the buffer overflowed) does not deliver their final state again. A finished
    work delivered before those may be delivered again by such a re-read.

    Iteration ends when the manager stops or :meth:`aclose` is called (after what was
    buffered; a watcher whose buffer overflowed does not read the store again then). Use
    ``async with manager.watch(q) as infos:`` to close it deterministically.
    """

    def __init__(
        self,
        hub: EventHub,
        query: WorkQuery,
        load: Callable[[], Awaitable[Sequence[WorkRecord]]],
        *,
        max_buffer: int,
    ) -> None:
        self._hub = hub
        self._query = query
        self._load = load
        self._max_buffer = max_buffer
        #: The store must be read before the next delivery: at first, and after the
        #: buffer overflowed.
        self._stale = True
        #: Records of the last store read not yet delivered, nor superseded by a change.
        self._snapshot: OrderedDict[str, WorkRecord] = OrderedDict()
        #: The latest record of each work changed since, in the order of latest change;
        #: or, for a work whose hold changed, the last snapshot delivered (to deliver
        #: again with the hold it has when read).
        self._pending: OrderedDict[str, WorkRecord | WorkInfo] = OrderedDict()
        #: The last snapshot delivered of each unfinished work.
        self._last: dict[str, WorkInfo] = {}
        #: Of those, the ENQUEUED ones by worker, with their due times: the works a
        #: change of their worker's hold concerns.
        self._enqueued: dict[str, dict[str, float]] = {}
        #: ``(enqueued_at, finished_at)`` of the last finished works delivered, oldest
        #: first (a work's final state, which no later record changes).
        self._finished: OrderedDict[str, tuple[float, float | None]] = OrderedDict()
        self._ready = anyio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"WorkWatcher({self._query!r})"

    def _offer(self, records: Sequence[WorkRecord]) -> None:
        if self._closed:
            return
        matches = self._query.matches
        snapshot, pending, last = self._snapshot, self._pending, self._last
        offered = False
        for record in records:
            rid = record.id
            if not matches(record):
                # A work that left the query is forgotten once it finishes: nothing of
                # it can reach this watcher any more. Nor does a change of its hold.
                if rid in last:
                    if record.state.is_finished:
                        self._forget(rid)
                    elif last[rid].state is WorkState.ENQUEUED:
                        self._unindex(rid, last[rid].worker)
                continue
            offered = True
            if snapshot:
                snapshot.pop(rid, None)  # this change is newer
            if rid in pending:  # (inline _push: the path of every published record)
                pending.move_to_end(rid)
            elif len(pending) >= self._max_buffer:
                pending.clear()
                self._stale = True
            pending[rid] = record
        if offered:
            self._ready.set()

    def _push(self, rid: str, item: WorkRecord | WorkInfo) -> bool:
        """Buffer ``item`` as the latest change of the work ``rid``; True if the buffer
        overflowed (the watcher reads the store again next)."""
        pending = self._pending
        overflowed = False
        if rid in pending:
            pending.move_to_end(rid)  # the order follows the latest change
        elif len(pending) >= self._max_buffer:
            # Too far behind: rather than buffer without bound, forget the changes and
            # read the current states afresh on the next read.
            pending.clear()
            self._stale = overflowed = True
        pending[rid] = item
        return overflowed

    def _held_changed(self, workers: frozenset[str]) -> None:
        """What holds the works of ``workers`` changed: deliver again those of their
        works whose last snapshot was ENQUEUED (if their ``held_by`` differs when read)."""
        if self._closed or self._stale:
            return  # a store read comes first, and its snapshots show the hold then
        enqueued, pending, snapshot, last = (
            self._enqueued,
            self._pending,
            self._snapshot,
            self._last,
        )
        # A record waiting to be delivered shows the hold anyway.
        due = [
            rid
            for worker in workers
            for rid in enqueued.get(worker, ())
            if rid not in pending and rid not in snapshot
        ]
        if not due:
            return
        for rid in due:
            if self._push(rid, last[rid]):
                # Overflowed: the store read to come shows every work's hold.
                del pending[rid]
                break
        self._ready.set()

    def _forget(self, rid: str) -> None:
        """Forget the last snapshot of a work (it finished)."""
        last = self._last
        info = last.pop(rid, None)
        if info is not None and info.state is WorkState.ENQUEUED:
            self._unindex(rid, info.worker)
        if not last:
            last.clear()  # the last unfinished one: give back the room (see __anext__)

    def _unindex(self, rid: str, worker: str) -> None:
        enqueued = self._enqueued
        works = enqueued.get(worker)
        if works is not None:
            works.pop(rid, None)
            if not works:
                del enqueued[worker]

    def _close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> WorkWatcher:
        return self

    async def __anext__(self) -> WorkInfo:
        while True:
            if self._stale and not self._closed:
                await self._reread()
            snapshot, pending = self._snapshot, self._pending
            while snapshot or pending:
                rid, item = (snapshot or pending).popitem(last=False)
                info = (
                    self._redelivery(rid, item)
                    if isinstance(item, WorkInfo)
                    else self._delivery(item)
                )
                if info is not None:
                    return info
            if self._closed:
                raise StopAsyncIteration
            # An emptied dict keeps its size: give back the room a burst took.
            pending.clear()
            snapshot.clear()
            self._ready = anyio.Event()
            await self._ready.wait()

    async def _reread(self) -> None:
        self._stale = False
        records = await self._load()
        pending = self._pending
        # Buffered changes win: each is as new as what the read saw, or the newer
        # state's own publication is still to come (a write is published after it).
        fresh = {r.id: r for r in records if r.id not in pending}
        # Works the previous read left undelivered keep their place, so a consumer that
        # keeps falling behind still reaches every work.
        snapshot = OrderedDict((rid, fresh.pop(rid)) for rid in self._snapshot if rid in fresh)
        snapshot.update(fresh)
        self._snapshot = snapshot

    def _delivery(self, record: WorkRecord) -> WorkInfo | None:
        """The snapshot of ``record`` to deliver; ``None`` if the consumer has it (or a
        later one) already."""
        rid = record.id
        finished = self._finished
        if record.state.is_finished:
            final = (record.enqueued_at, record.finished_at)
            if finished.get(rid) == final:
                return None  # a repeat: a finished work never changes again
            self._forget(rid)
            finished.pop(rid, None)
            finished[rid] = final
            if len(finished) > RECENT_FINISHED:
                finished.popitem(last=False)
            return record.to_info()
        if finished:
            done = finished.get(rid)
            if done is not None:
                if done[0] == record.enqueued_at:
                    return None  # read before the work finished: older than delivered
                del finished[rid]  # the id was enqueued again after its work was pruned
        info = self._hub.holds.info(record)
        return self._delivered(rid, info, record.next_run_at)

    def _redelivery(self, rid: str, last: WorkInfo) -> WorkInfo | None:
        """The snapshot of a work whose hold changed, if its ``held_by`` differs now from
        the one delivered (``last``, ENQUEUED)."""
        due = self._enqueued.get(last.worker, {}).get(rid)
        if due is None or self._last.get(rid) is not last:
            return None  # delivered anew meanwhile
        held = self._hub.holds.held_by(last.worker, WorkState.ENQUEUED, due)
        if held is last.held_by:
            return None
        return self._delivered(rid, attrs.evolve(last, held_by=held), due)

    def _delivered(self, rid: str, info: WorkInfo, due: float | None) -> WorkInfo | None:
        """``info`` if it is not the snapshot delivered last of the work; remembered."""
        last = self._last
        before = last.get(rid)
        if before == info:
            return None
        if before is not None and before.state is WorkState.ENQUEUED:
            self._unindex(rid, before.worker)
        last[rid] = info
        if info.state is WorkState.ENQUEUED and due is not None:
            self._enqueued.setdefault(info.worker, {})[rid] = due
        return info

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

    def __init__(self, holds: Holds) -> None:
        #: What holds back due works here (a snapshot's ``held_by``); it tells this hub
        #: of its changes.
        self.holds = holds
        holds.changed = self.held_changed
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
                watcher._offer(records)

    def held_changed(self, workers: frozenset[str]) -> None:
        """What holds the works of ``workers`` back changed (:class:`.holds.Holds`)."""
        if self._subscriptions:
            for watcher in list(self._subscriptions):
                watcher._held_changed(workers)

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
        self,
        query: WorkQuery,
        load: Callable[[], Awaitable[Sequence[WorkRecord]]],
        *,
        max_buffer: int,
    ) -> WorkWatcher:
        """Register a watcher; changes published from now on reach it. ``load`` reads
        the records ``query`` selects (first, and after the buffer overflowed)."""
        watcher = WorkWatcher(self, query, load, max_buffer=max_buffer)
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
