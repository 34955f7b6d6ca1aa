"""MemoryStore: keeps works in process memory. The reference implementation of the
store semantics, and the fastest store for tests and for work that need not survive a
restart."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import attrs

from .._errors import InvalidRequestError
from .._heap import DueHeap
from .._lifecycle import claim
from .._model import WorkState
from .._record import RUNTIME_FIELDS, WorkRecord
from ._base import Claimed, ClaimParams, Store

if TYPE_CHECKING:
    from .._lifecycle import Change
    from .._model import WorkQuery

__all__ = ("MemoryStore",)


@attrs.define(eq=False, repr=False)
class MemoryStore(Store):
    """A store in process memory: nothing survives the process."""

    _records: dict[str, WorkRecord] = attrs.field(init=False, factory=dict)
    # Expedited works are dispatched ahead of ordinary due ones, so they get their own heap.
    _due: DueHeap[str] = attrs.field(init=False, factory=DueHeap)
    _due_expedited: DueHeap[str] = attrs.field(init=False, factory=DueHeap)
    # Due works whose signals were blocked at the last claim, re-examined only when the
    # set of blocked signals changes.
    _parked: dict[str, frozenset[str]] = attrs.field(init=False, factory=dict)
    _last_blocked: frozenset[str] = attrs.field(init=False, factory=frozenset)

    def __repr__(self) -> str:
        return f"MemoryStore(works={len(self._records)})"

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close; the works stay in memory for a later open."""

    def _index(self, record: WorkRecord) -> None:
        rid = record.id
        if record.state is WorkState.ENQUEUED and record.next_run_at is not None:
            self._parked.pop(rid, None)
            heap = self._due_expedited if record.expedited else self._due
            heap.push(rid, record.next_run_at)
        else:
            self._unindex(rid)

    def _unindex(self, rid: str) -> None:
        self._due.discard(rid)
        self._due_expedited.discard(rid)
        self._parked.pop(rid, None)

    async def insert(self, records: Sequence[WorkRecord]) -> None:
        """Insert new works, all or none."""
        seen: set[str] = set()
        for record in records:
            if record.id in self._records or record.id in seen:
                raise InvalidRequestError("id", record.id, "a work with this id already exists")
            seen.add(record.id)
        for record in records:
            self._records[record.id] = record
            self._index(record)

    async def claim_due(self, params: ClaimParams) -> Claimed:
        """Claim due works, expedited first."""
        blocked, met = params.blocked_signals, params.constraints_met
        if blocked != self._last_blocked or (met and self._parked):
            self._unpark(blocked, met)
        claimed: list[WorkRecord] = []
        now, limit = params.now, params.limit
        for heap in (self._due_expedited, self._due):
            while len(claimed) < limit:
                top = heap.peek()
                if top is None or top[0] > now:
                    break
                _, rid = heap.pop()
                record = self._records[rid]
                if blocked:
                    needs = record.signal_names
                    if needs and not needs.isdisjoint(blocked) and rid not in met:
                        self._parked[rid] = needs
                        continue
                running = claim(record, now=now, owner=params.owner)
                self._records[rid] = running
                claimed.append(running)
        return Claimed(records=claimed, next_due=self._next_due(blocked))

    def _unpark(self, blocked: frozenset[str], met: frozenset[str]) -> None:
        self._last_blocked = blocked
        for rid, needs in list(self._parked.items()):
            if needs.isdisjoint(blocked) or rid in met:
                self._index(self._records[rid])

    def _next_due(self, blocked: frozenset[str]) -> float | None:
        # Parked works are not claimable, so they must not count: park those on top first
        # (a work not yet due would otherwise set a wake-up that claims nothing).
        tops = []
        for heap in (self._due_expedited, self._due):
            while (top := heap.peek()) is not None:
                needs = self._records[top[1]].signal_names if blocked else frozenset()
                if not needs or needs.isdisjoint(blocked):
                    tops.append(top[0])
                    break
                heap.pop()
                self._parked[top[1]] = needs
        return min(tops) if tops else None

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        """Apply guarded changes; return the records written."""
        written: list[WorkRecord] = []
        records = self._records
        for change in changes:
            before, after = change.before, change.after
            current = records.get(before.id)
            if current is None:
                continue
            if current is not before and (
                current.state is not before.state
                or current.run_attempt_count != before.run_attempt_count
            ):
                continue
            if current.generation != after.generation:
                # The spec was updated meanwhile (update_work): keep it, take the runtime.
                after = attrs.evolve(current, **{f: getattr(after, f) for f in RUNTIME_FIELDS})
            records[after.id] = after
            if after.state is WorkState.ENQUEUED:
                if after.next_run_at != current.next_run_at or current.state is not after.state:
                    self._index(after)
            elif current.state is WorkState.ENQUEUED:
                self._unindex(after.id)  # RUNNING works are in no index: nothing to drop
            written.append(after)
        return written

    async def get(self, ids: Collection[str]) -> list[WorkRecord]:
        """Records by id."""
        records = self._records
        return [records[i] for i in ids if i in records]

    async def query(self, query: WorkQuery) -> list[WorkRecord]:
        """Records matching the query, oldest enqueue first."""
        if query.ids:
            candidates = await self.get(query.id_keys)
        else:
            candidates = list(self._records.values())
        found = [r for r in candidates if query.matches(r)]
        found.sort(key=lambda r: r.enqueued_at)
        return found

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished works older than the given time."""
        doomed = [
            r.id
            for r in self._records.values()
            if r.state.is_finished
            and r.finished_at is not None
            and r.finished_at < finished_before
        ]
        for rid in doomed:
            del self._records[rid]
            self._unindex(rid)
        return len(doomed)
