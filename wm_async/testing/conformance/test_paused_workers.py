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


async def test_a_claim_past_a_paused_backlog_keeps_the_claim_order_across_workers(
    store: Store,
) -> None:
    # The paused worker's backlog is due first; the others' works are taken expedited
    # first, then by priority, then by due time, whichever worker they belong to.
    backlog = [record("held", at=NOW - 100 + i / 100) for i in range(300)]
    a_late, b_early = record("a", at=NOW - 2), record("b", at=NOW - 3)
    a_high, b_expedited = record("a", at=NOW - 1, priority=5), record("b", expedited=True)
    c_later, c_top = record("c", initial_delay=30), record("c", at=NOW - 50, priority=9)
    await store.insert([*backlog, a_late, b_early, a_high, b_expedited, c_later])
    await store.insert([c_top])
    params = ClaimParams(now=NOW, limit=3, owner="me", paused_workers=frozenset({"held"}))
    first = await store.claim_due(params)
    assert ids(first.records) == [b_expedited.id, c_top.id, a_high.id]
    assert first.next_due is not None
    assert first.next_due <= NOW  # more are due now
    rest = await store.claim_due(params)
    assert ids(rest.records) == [b_early.id, a_late.id]
    assert rest.next_due == NOW + 30  # c_later; not the paused backlog


async def test_a_claim_past_a_paused_worker_among_many_workers(store: Store) -> None:
    works = [record(f"w{i:02}", at=NOW - 40 + i) for i in range(40)]
    held = [record("held", at=NOW - 50) for _ in range(5)]
    await store.insert([*works, *held])
    params = ClaimParams(now=NOW, limit=100, owner="me", paused_workers=frozenset({"held"}))
    claimed = await store.claim_due(params)
    assert ids(claimed.records) == ids(works)  # in due order, none of the paused worker's
    assert claimed.next_due is None
