"""MemoryStore: keeps works in process memory. The reference implementation of the
store semantics, and the fastest store for tests and for work that need not survive a
restart."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from .._core.errors import InvalidRequestError
from .._core.heap import DueHeap
from .._core.lifecycle import (
    claim,
    resolve_new,
)
from .._core.limits import Allowance, Bucket, HeldBy
from .._core.model import (
    NO_CONSTRAINTS,
    WorkState,
)
from .._core.record import (
    RUNTIME_FIELDS,
    WorkRecord,
)
from ._base import (
    Claimed,
    ClaimParams,
    Store,
)
from ._browse import overview_records
from ._propagation import propagate

if TYPE_CHECKING:
    from .._core.data import Data
    from .._core.lifecycle import (
        Change,
        UniquePlan,
    )
    from .._core.model import WorkQuery
    from ._base import UniquePlanner
    from ._browse import Overview

__all__ = ("MemoryStore",)

_Group = tuple[bool, int, frozenset[str]]
#: The group of works with no constraints, not expedited, priority 0: most of them.
_PLAIN: _Group = (False, 0, frozenset())


@attrs.define(eq=False, repr=False)
class MemoryStore(Store):
    """A store in process memory: nothing survives the process."""

    _records: dict[str, WorkRecord] = attrs.field(init=False, factory=dict)
    # One due-heap per (expedited, priority, signal names) group. A claim reads only the heaps of
    # groups whose signals all hold, so parked works are never looked at, and a signal
    # turning true makes a whole group claimable in O(1) instead of re-heaping each work.
    _heaps: dict[_Group, DueHeap[str]] = attrs.field(init=False, factory=dict)
    # Chains: a work's direct prerequisites in order, the reverse edges, and how many
    # prerequisites each BLOCKED work still waits for.
    _prerequisites: dict[str, tuple[str, ...]] = attrs.field(init=False, factory=dict)
    _dependents: dict[str, list[str]] = attrs.field(init=False, factory=dict)
    _waiting: dict[str, int] = attrs.field(init=False, factory=dict)
    # The token buckets of rate-limited workers (semantics 50).
    _buckets: dict[str, Bucket] = attrs.field(init=False, factory=dict)
    # How late each work's last run started (the dashboard's chart; SQL stores: a column).
    _late: dict[str, float] = attrs.field(init=False, factory=dict)

    def __repr__(self) -> str:
        return f"MemoryStore(works={len(self._records)})"

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close; the works stay in memory for a later open."""

    def _heap_of(self, record: WorkRecord) -> DueHeap[str]:
        group = (record.expedited, record.priority, record.signal_names)
        heap = self._heaps.get(group)
        if heap is None:
            heap = self._heaps[group] = DueHeap()
        return heap

    def _index(self, record: WorkRecord) -> None:
        heap = self._heap_of(record)
        if record.state is WorkState.ENQUEUED and record.next_run_at is not None:
            heap.push(record.id, record.next_run_at)
        else:
            heap.discard(record.id)

    async def insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None = None,
    ) -> list[WorkRecord]:
        """Insert new works, all or none, resolving chained ones; return them as stored."""
        self._check_new(records, prerequisites, ())
        return self._insert(records, prerequisites)

    def _check_new(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None,
        gone: Collection[str],
    ) -> None:
        if not prerequisites and not gone:  # the common case: new ids only, checked in C
            new_ids = [r.id for r in records]
            if len(set(new_ids)) == len(new_ids) and self._records.keys().isdisjoint(new_ids):
                return
        seen: set[str] = set()
        for record in records:
            rid = record.id
            if (rid in self._records and rid not in gone) or rid in seen:
                raise InvalidRequestError("id", rid, "a work with this id already exists")
            if prerequisites and rid in prerequisites:
                for pid in prerequisites[rid]:
                    if pid not in seen and (pid not in self._records or pid in gone):
                        raise InvalidRequestError(
                            "prerequisite", pid, "no such work (pruned, or never enqueued)"
                        )
            seen.add(rid)

    def _insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None,
    ) -> list[WorkRecord]:
        stored = self._records
        if not prerequisites:
            heap = self._heaps.get(_PLAIN)
            for record in records:
                stored[record.id] = record
                if (
                    heap is not None
                    and record.constraints is NO_CONSTRAINTS
                    and not record.expedited
                    and record.priority == 0
                    and record.state is WorkState.ENQUEUED
                    and record.next_run_at is not None
                ):
                    heap.push(record.id, record.next_run_at)  # what _index does, in short
                else:
                    self._index(record)
                    heap = self._heaps.get(_PLAIN)
            return list(records)
        known = {p: stored[p] for ps in prerequisites.values() for p in ps if p in stored}
        resolved, waiting, edges = resolve_new(records, prerequisites, known)
        for record, left in zip(resolved, waiting, strict=True):
            stored[record.id] = record
            self._index(record)
            if record.state is WorkState.BLOCKED:
                self._waiting[record.id] = left
        # In position order per work; gathered in lists first (a tuple grown one edge at a
        # time made a fan-in of N cost O(N^2)).
        added: dict[str, list[str]] = {}
        for pid, rid, _ in edges:
            added.setdefault(rid, []).append(pid)
            self._dependents.setdefault(pid, []).append(rid)
        for rid, pids in added.items():
            self._prerequisites[rid] = (*self._prerequisites.get(rid, ()), *pids)
        return resolved

    def _active(self, blocked: frozenset[str], expedited: bool) -> list[list[DueHeap[str]]]:
        """The non-empty heaps of unparked groups, one list per priority, highest first."""
        levels: dict[int, list[DueHeap[str]]] = {}
        for (exp, priority, needs), heap in self._heaps.items():
            if exp is expedited and len(heap) and (not needs or needs.isdisjoint(blocked)):
                levels.setdefault(priority, []).append(heap)
        return [levels[p] for p in sorted(levels, reverse=True)]

    async def claim_due(self, params: ClaimParams) -> Claimed:
        """Claim due works, expedited first, then by priority (higher first), then by due
        time (semantics 48), from the groups whose signals hold."""
        blocked, now, limit = params.blocked_signals, params.now, params.limit
        if params.paused_workers or params.limits:
            return self._claim_scan(params)
        claimed: list[WorkRecord] = []
        records = self._records
        late = self._late
        owner = params.owner
        tops: list[float] = []
        for expedited in (True, False):
            for heaps in self._active(blocked, expedited):
                if len(heaps) == 1:  # one group to take from (most often): no merging
                    for rid in heaps[0].pop_due(now, limit - len(claimed)):
                        before = records[rid]
                        late[rid] = now - (before.next_run_at or now)
                        running = claim(before, now=now, owner=owner)
                        records[rid] = running
                        claimed.append(running)
                while len(claimed) < limit and len(heaps) > 1:
                    # The earliest due across the level's groups (few: a linear scan).
                    best: DueHeap[str] | None = None
                    best_due = now
                    for heap in heaps:
                        top = heap.peek()
                        if top is not None and top[0] <= best_due:
                            best, best_due = heap, top[0]
                    if best is None:
                        break
                    _, rid = best.pop()
                    late[rid] = now - best_due
                    running = claim(records[rid], now=now, owner=owner)
                    records[rid] = running
                    claimed.append(running)
                tops.extend(top[0] for heap in heaps if (top := heap.peek()) is not None)
        return Claimed(records=claimed, next_due=min(tops) if tops else None)

    def _claim_scan(self, params: ClaimParams) -> Claimed:
        """A claim while some workers are paused or limited (semantics 47, 50): a scan of
        the unparked due works (slower than the heaps, which do not know workers)."""
        paused, blocked, now = params.paused_workers, params.blocked_signals, params.now
        records = self._records
        candidates = sorted(
            (not r.expedited, -r.priority, r.next_run_at, r.id)
            for levels in (self._active(blocked, True), self._active(blocked, False))
            for heaps in levels
            for heap in heaps
            for rid in heap.members()
            if (r := records[rid]).worker not in paused and r.next_run_at is not None
        )
        allowances = self._allowances(params)
        taken = dict.fromkeys(allowances, 0)
        left: dict[str, float] = {}  # a limited worker's earliest claimable work not taken
        claimed: list[WorkRecord] = []
        next_due: float | None = None
        for _, _, due, rid in candidates:
            worker = records[rid].worker
            allowance = allowances.get(worker)
            if (
                due <= now
                and len(claimed) < params.limit
                and (allowance is None or taken[worker] < allowance.take)
            ):
                self._late[rid] = now - due
                running = claim(records[rid], now=now, owner=params.owner)
                records[rid] = running
                self._index(running)
                claimed.append(running)
                if allowance is not None:
                    taken[worker] += 1
            elif allowance is not None:
                if worker not in left or due < left[worker]:
                    left[worker] = due
            elif next_due is None or due < next_due:
                next_due = due
        held: dict[str, HeldBy] = {}
        for worker, allowance in allowances.items():
            first = left.get(worker)
            start = allowance.next_start(taken[worker], first)
            if start is not None and (next_due is None or start < next_due):
                next_due = start
            why = allowance.held_by(taken[worker])
            if why is not None and first is not None and first <= now:
                held[worker] = why
            bucket = allowance.bucket_after(taken[worker])
            if bucket is not None:
                self._buckets[worker] = bucket
        return Claimed(records=claimed, next_due=next_due, held=held)

    def _allowances(self, params: ClaimParams) -> dict[str, Allowance]:
        limited = {w: lim for w, lim in params.limits.items() if w not in params.paused_workers}
        if not limited:
            return {}
        running = dict.fromkeys(limited, 0)
        returned = params.returned
        for record in self._records.values():
            # A run that returned here, its outcome not yet written, no longer runs.
            if (
                record.state is WorkState.RUNNING
                and record.worker in running
                and record.id not in returned.get(record.worker, ())
            ):
                running[record.worker] += 1
        return {
            w: Allowance.of(
                lim,
                running=running[w],
                bucket=self._buckets.get(w),
                now=params.now,
            )
            for w, lim in limited.items()
        }

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        """Apply guarded changes, resolving dependents of finished works; return the
        records written."""
        written: list[WorkRecord] = []
        records = self._records
        dependents = self._dependents
        ended: list[WorkRecord] = []
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
                self._heap_of(current).discard(after.id)  # RUNNING works are in no heap
            written.append(after)
            if dependents and after.id in dependents and after.state.is_finished:
                ended.append(after)
        if ended:
            written += [
                r for _, r in await propagate(_Dependents(self), {r.id: (r, None) for r in ended})
            ]
        return written

    def _leaves(self, works: list[WorkRecord]) -> list[WorkRecord]:
        return [r for r in works if not self._dependents.get(r.id)]

    def _delete(self, rid: str) -> None:
        self._heap_of(self._records.pop(rid)).discard(rid)
        self._late.pop(rid, None)
        self._waiting.pop(rid, None)
        for pid in self._prerequisites.pop(rid, ()):
            siblings = self._dependents.get(pid)
            if siblings is not None:
                siblings.remove(rid)
                if not siblings:
                    del self._dependents[pid]
        # Dangling edges from its dependents stay until they go (they are finished, or
        # were cancelled with it).
        self._dependents.pop(rid, None)

    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """Read, decide and apply in one step (no await: nothing interleaves)."""
        existing = [r for r in self._records.values() if r.unique_name == name]
        decided = plan(existing, self._leaves(existing))
        self._check_new(decided.inserts, decided.prerequisites, decided.deletes)
        written = await self.apply(decided.cancels)
        for rid in decided.deletes:
            if rid in self._records:
                self._delete(rid)
        written += self._insert(decided.inserts, decided.prerequisites)
        return decided, written

    async def update_spec(self, change: Change) -> WorkRecord | None:
        """Replace a work's spec (compare-and-set on state, attempts and generation)."""
        before, after = change.before, change.after
        current = self._records.get(before.id)
        if current is None or (
            current.state is not before.state
            or current.run_attempt_count != before.run_attempt_count
            or current.generation != before.generation
        ):
            return None
        self._heap_of(current).discard(current.id)  # its signal group may change
        self._records[after.id] = after
        if after.state is WorkState.ENQUEUED:
            self._index(after)
        return after

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

    async def overview(self, *, now: float, since: float, bucket: float) -> Overview:
        """The overview's aggregates, start lateness included."""
        return overview_records(
            list(self._records.values()), now=now, since=since, bucket=bucket, late=self._late
        )

    async def edges(self, ids: Collection[str]) -> list[tuple[str, str]]:
        """The chain edges touching ``ids``."""
        found = {(p, i) for i in ids for p in self._prerequisites.get(i, ())}
        found.update((i, c) for i in ids for c in self._dependents.get(i, ()))
        return list(found)

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished works older than the given time, except those an unfinished
        work depends on."""
        records = self._records
        doomed = [
            r.id
            for r in records.values()
            if r.state.is_finished
            and r.finished_at is not None
            and r.finished_at < finished_before
            and not any(
                not records[c].state.is_finished
                for c in self._dependents.get(r.id, ())
                if c in records
            )
        ]
        for rid in doomed:
            self._delete(rid)
        return len(doomed)


@attrs.define(eq=False)
class _Dependents:
    """The propagation walk's reads and writes on a MemoryStore (see _propagation)."""

    store: MemoryStore

    async def stopped(self, ids: list[str]) -> list[tuple[str, WorkRecord]]:
        """The BLOCKED dependents of ``ids`` (the propagation walk's read)."""
        records = self.store._records
        return [
            (pid, child)
            for pid in ids
            for cid in self.store._dependents.get(pid, ())
            if (child := records.get(cid)) is not None and child.state is WorkState.BLOCKED
        ]

    async def count(self, ids: list[str]) -> list[tuple[int, WorkRecord]]:
        """Count the successes of ``ids`` in their BLOCKED dependents."""
        records, waiting = self.store._records, self.store._waiting
        counted: dict[str, WorkRecord] = {}
        for pid in ids:
            for cid in self.store._dependents.get(pid, ()):
                child = records.get(cid)
                if child is not None and child.state is WorkState.BLOCKED:
                    waiting[cid] -= 1
                    counted[cid] = child
        return [(waiting[cid], child) for cid, child in counted.items()]

    async def outputs(self, ready: list[WorkRecord]) -> list[list[Data]]:
        """The direct prerequisites' outputs of each ``ready`` work, in order."""
        records = self.store._records
        return [
            [records[p].output for p in self.store._prerequisites[r.id] if p in records]
            for r in ready
        ]

    async def write(self, records: list[WorkRecord]) -> None:
        """Store dependents resolved by the propagation walk."""
        for record in records:
            self.store._records[record.id] = record
            self.store._waiting.pop(record.id, None)
            self.store._index(record)
