"""``Store.pause_worker``, ``resume_worker`` and ``paused_workers``, and claims given
paused workers (``ClaimParams.paused_workers``): their works stay ENQUEUED and are not
counted in the next due time."""

from __future__ import annotations

from ...stores import ClaimParams, Store
from ._helpers import NOW, ids, record


async def test_pause_and_resume_are_idempotent_and_listed(store: Store) -> None:
    assert await store.paused_workers() == frozenset()
    await store.pause_worker("a", now=NOW)
    await store.pause_worker("a", now=NOW + 1)
    await store.pause_worker("b c", now=NOW)
    assert await store.paused_workers() == {"a", "b c"}
    await store.resume_worker("a")
    await store.resume_worker("a")
    await store.resume_worker("never paused")
    assert await store.paused_workers() == {"b c"}


async def test_claim_leaves_the_works_of_paused_workers_enqueued(store: Store) -> None:
    held = record("held")
    held_expedited = record("held", expedited=True)
    held_later = record("held", at=NOW - 10, initial_delay=5)  # due before the others
    free = record("free")
    free_later = record("free", initial_delay=60)
    await store.insert([held, held_expedited, held_later, free, free_later])
    params = ClaimParams(now=NOW, limit=10, owner="me", paused_workers=frozenset({"held"}))
    claimed = await store.claim_due(params)
    assert ids(claimed.records) == [free.id]
    assert claimed.next_due == NOW + 60  # the paused worker's due works are not counted
    unpaused = await store.claim_due(ClaimParams(now=NOW, limit=10, owner="me"))
    assert sorted(ids(unpaused.records)) == sorted([held.id, held_expedited.id, held_later.id])
