"""Claims given workers' flow limits (``ClaimParams.limits``, semantics 50): at most
``max_running`` of a worker's works RUNNING in the store, at most the tokens of its
bucket started, a capped-out worker's works not counted in the next due time, a
rate-limited one's counted no earlier than its next token."""

from __future__ import annotations

import pytest

from ..._core.lifecycle import Succeeded, finish
from ..._core.limits import HeldBy, RateLimit, WorkerLimits
from ...stores import Claimed, ClaimParams, Store
from ._helpers import NOW, ids, record

CAP2 = {"capped": WorkerLimits(max_running=2)}


async def _claim(
    store: Store,
    limits: dict[str, WorkerLimits],
    *,
    now: float = NOW,
    limit: int = 100,
    owner: str = "me",
    paused: frozenset[str] = frozenset(),
) -> Claimed:
    params = ClaimParams(now=now, limit=limit, owner=owner, limits=limits, paused_workers=paused)
    return await store.claim_due(params)


async def test_a_claim_starts_at_most_max_running_works_of_a_capped_worker(store: Store) -> None:
    capped = [record("capped", at=NOW - 10 + i) for i in range(5)]
    free = [record("free"), record("free")]
    await store.insert([*capped, *free])
    claimed = await _claim(store, CAP2)
    assert sorted(ids(claimed.records)) == sorted([capped[0].id, capped[1].id, *ids(free)])
    assert claimed.next_due is None  # the held works wait for a slot, not for a time
    assert dict(claimed.held) == {"capped": HeldBy.MAX_RUNNING}
    again = await _claim(store, CAP2)
    assert again.records == []
    assert dict(again.held) == {"capped": HeldBy.MAX_RUNNING}
    # A run that ends frees its slot: the next claim takes the next due work.
    first = next(r for r in claimed.records if r.id == capped[0].id)
    await store.apply([finish(first, Succeeded(), now=NOW + 1)])
    freed = await _claim(store, CAP2, now=NOW + 1)
    assert ids(freed.records) == [capped[2].id]
    # Without limits the rest is claimed as ever.
    unlimited = await _claim(store, {}, now=NOW + 1)
    assert sorted(ids(unlimited.records)) == sorted([capped[3].id, capped[4].id])


async def test_works_running_for_any_owner_count_against_the_cap(store: Store) -> None:
    works = [record("capped", at=NOW - 10 + i) for i in range(3)]
    await store.insert(works)
    elsewhere = await _claim(store, {}, limit=1, owner="other process")
    assert ids(elsewhere.records) == [works[0].id]
    claimed = await _claim(store, CAP2)
    assert ids(claimed.records) == [works[1].id]


async def test_the_claim_limit_still_applies_and_the_order_holds_within_a_worker(
    store: Store,
) -> None:
    low = record("capped", at=NOW - 20)
    high = record("capped", priority=5)
    urgent = record("capped", expedited=True)
    await store.insert([low, high, urgent])
    claimed = await _claim(store, {"capped": WorkerLimits(max_running=5)}, limit=2)
    assert ids(claimed.records) == [urgent.id, high.id]
    assert claimed.next_due is not None
    assert claimed.next_due <= NOW  # more is due now
    assert dict(claimed.held) == {}  # the claim's limit held it, not the worker's


async def test_a_capped_out_worker_with_later_works_is_looked_at_when_they_fall_due(
    store: Store,
) -> None:
    now, later = record("capped"), record("capped", initial_delay=60)
    await store.insert([now, later])
    claimed = await _claim(store, {"capped": WorkerLimits(max_running=1)})
    assert ids(claimed.records) == [now.id]
    assert claimed.next_due == NOW + 60
    assert dict(claimed.held) == {}


async def test_a_rate_limited_worker_starts_no_more_than_its_tokens(store: Store) -> None:
    limits = {"rated": WorkerLimits(rate=RateLimit(2, per=10, burst=2))}
    works = [record("rated", at=NOW - 10 + i) for i in range(6)]
    other = record("free")
    await store.insert([*works, other])
    claimed = await _claim(store, limits)
    assert sorted(ids(claimed.records)) == sorted([works[0].id, works[1].id, other.id])
    assert dict(claimed.held) == {"rated": HeldBy.RATE_LIMIT}
    assert claimed.next_due == NOW + 5  # a token every 5 s
    early = await _claim(store, limits, now=NOW + 4)
    assert early.records == []
    assert early.next_due == NOW + 5
    one = await _claim(store, limits, now=NOW + 5)
    assert ids(one.records) == [works[2].id]
    assert one.next_due == NOW + 10
    # After a quiet spell the bucket holds its burst, no more.
    burst = await _claim(store, limits, now=NOW + 1000)
    assert ids(burst.records) == [works[3].id, works[4].id]
    assert burst.next_due == NOW + 1005


async def test_a_rate_limited_worker_with_later_works_waits_for_both(store: Store) -> None:
    limits = {"rated": WorkerLimits(rate=RateLimit(1, per=100))}
    first, soon = record("rated"), record("rated", initial_delay=10)
    await store.insert([first, soon])
    claimed = await _claim(store, limits)
    assert ids(claimed.records) == [first.id]
    assert claimed.next_due == NOW + 100  # due at NOW + 10, but no token until NOW + 100
    assert dict(claimed.held) == {}  # nothing due now is held back


async def test_a_paused_limited_worker_stays_paused(store: Store) -> None:
    await store.insert([record("capped")])
    claimed = await _claim(store, CAP2, paused=frozenset({"capped"}))
    assert claimed.records == []
    assert claimed.next_due is None
    assert dict(claimed.held) == {}


async def test_works_whose_lease_expired_count_no_more(store: Store) -> None:
    lease = store.lease_duration
    if lease is None:
        pytest.skip("the store has no leases: only its scheduling process runs works")
    works = [record("capped", at=NOW - 10 + i) for i in range(4)]
    await store.insert(works)
    dead = await _claim(store, CAP2, owner="a process that died")
    assert len(dead.records) == 2
    assert (await _claim(store, CAP2, now=NOW + lease / 2)).records == []
    # Its leases ended (not renewed): its slots are free before anyone re-enqueues them.
    later = await _claim(store, CAP2, now=NOW + lease + 1)
    assert ids(later.records) == [works[2].id, works[3].id]
