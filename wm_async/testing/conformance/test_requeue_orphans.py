"""``Store.requeue_orphans``: RUNNING works whose process is gone (every RUNNING work for
a store without leases; those whose lease expired for one with leases) are enqueued
again with stop reason UNKNOWN, the attempt counted."""

from __future__ import annotations

from ..._core.lifecycle import (
    Succeeded,
    claim,
    finish,
    recover,
)
from ..._core.model import (
    StopReason,
    WorkState,
)
from ...stores import Store
from ._helpers import NOW, by_id, claim_due, record


async def test_requeue_orphans_enqueues_running_works_again(store: Store) -> None:
    first, second, third = (record(at=NOW - i) for i in (3, 2, 1))
    waiting = record(at=NOW + 5000)
    await store.insert([first, second, third, waiting])
    claimed = (await claim_due(store, limit=3)).records
    done = finish(claimed[2], Succeeded(), now=NOW + 1)
    await store.apply([done])
    later = NOW + (store.lease_duration or 0) + 1  # every lease has expired

    requeued = await store.requeue_orphans(now=later)

    expected = {r.id: recover(r, now=later).after for r in claimed[:2]}
    assert by_id(requeued) == expected
    for work in expected.values():
        assert (work.state, work.stop_reason) == (WorkState.ENQUEUED, StopReason.UNKNOWN)
        assert work.run_attempt_count == 1
    unchanged = {done.after.id: done.after, waiting.id: waiting}
    assert by_id(await store.get([first.id, second.id, third.id, waiting.id])) == {
        **expected,
        **unchanged,
    }
    assert await store.requeue_orphans(now=later) == []  # nothing is RUNNING any more
    due = max(r.next_run_at or later for r in expected.values())
    again = await claim_due(store, now=due)
    assert by_id(again.records) == {r.id: claim(r, now=due, owner="me") for r in expected.values()}
