"""What finished works do to their BLOCKED dependents, the same on every store (the walk
is shared, the decisions are the lifecycle's)."""

from __future__ import annotations

import anyio

from wm_async._api.requests import OneTimeWorkRequest
from wm_async._core.lifecycle import (
    PREREQUISITE_FAILED,
    Failed,
    Succeeded,
    cancel,
    finish,
)
from wm_async._core.model import WorkState
from wm_async._core.record import WorkRecord
from wm_async.stores import (
    ClaimParams,
    Store,
)

NOW = 1_700_000_000.0


def record(worker: str = "w") -> WorkRecord:
    return WorkRecord.from_request(OneTimeWorkRequest(worker), now=NOW)


async def run_two(store: Store) -> tuple[WorkRecord, WorkRecord]:
    a, b = record(), record()
    await store.insert([a, b])
    claimed = await store.claim_due(ClaimParams(now=NOW, limit=10, owner="me"))
    by_id = {r.id: r for r in claimed.records}
    return by_id[a.id], by_id[b.id]


async def test_a_failure_outranks_a_cancellation_finished_in_the_same_write(
    store: Store,
) -> None:
    with anyio.fail_after(30):
        a, b = await run_two(store)
        child = record()
        await store.insert([child], {child.id: [a.id, b.id]})
        cancelled = cancel(a, now=NOW + 1)
        assert cancelled is not None
        # The cancellation comes first in the write, the failure second.
        written = await store.apply([cancelled, finish(b, Failed(), now=NOW + 1)])
        (stored,) = await store.get([child.id])
    assert stored.state is WorkState.FAILED
    assert stored.error is not None
    assert stored.error.type == PREREQUISITE_FAILED
    assert stored.error.message == f"prerequisite {b.id} failed"
    assert stored in written


async def test_the_last_success_unblocks_with_the_merged_outputs(store: Store) -> None:
    with anyio.fail_after(30):
        a, b = await run_two(store)
        child, grandchild = record(), record()
        links = {child.id: [a.id, b.id], grandchild.id: [child.id]}
        await store.insert([child, grandchild], links)
        first = await store.apply([finish(a, Succeeded({"k": "a", "x": 1}), now=NOW + 1)])
        (waiting,) = await store.get([child.id])
        assert waiting.state is WorkState.BLOCKED
        assert child.id not in {r.id for r in first}
        written = await store.apply([finish(b, Succeeded({"k": "b"}), now=NOW + 2)])
        stored = {r.id: r for r in await store.get([child.id, grandchild.id])}
    unblocked = stored[child.id]
    assert (unblocked.state, unblocked.next_run_at) == (WorkState.ENQUEUED, NOW + 2)
    assert dict(unblocked.input) == {"k": "b", "x": 1}  # outputs merged in position order
    assert unblocked in written
    assert stored[grandchild.id].state is WorkState.BLOCKED
