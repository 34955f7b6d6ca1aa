"""``Store.claim_due``: due, unparked works move to RUNNING, expedited first, then higher
priority, then by due time, up to the limit; ``next_due`` says when to claim again."""

from __future__ import annotations

from ..._core.lifecycle import claim
from ..._core.model import Constraints
from ...stores import (
    Claimed,
    Store,
)
from ._helpers import NOW, claim_due, ids, record, running


async def test_claim_takes_expedited_first_then_by_due_time(store: Store) -> None:
    late, early = record(at=NOW - 1), record(at=NOW - 3)
    urgent, more_urgent = (
        record(expedited=True, at=NOW - 0.5),
        record(expedited=True, at=NOW - 0.7),
    )
    future = record(at=NOW + 10)
    await store.insert([late, urgent, future, early, more_urgent])
    before = {r.id: r for r in await store.get([late.id, early.id, urgent.id, more_urgent.id])}

    claimed = await claim_due(store)

    assert ids(claimed.records) == [more_urgent.id, urgent.id, early.id, late.id]
    assert claimed.records == [claim(before[r.id], now=NOW, owner="me") for r in claimed.records]
    assert claimed.next_due == NOW + 10
    assert await store.get([early.id]) == [claimed.records[2]]


async def test_claim_takes_higher_priority_first_within_expedited_and_ordinary(
    store: Store,
) -> None:
    low_early = record(at=NOW - 9, priority=-3)
    plain_late, plain_early = record(at=NOW - 1), record(at=NOW - 4)
    high_late, high_early = record(at=NOW - 0.5, priority=7), record(at=NOW - 2, priority=7)
    top = record(at=NOW - 0.1, priority=10)
    urgent_low = record(expedited=True, at=NOW - 0.3, priority=-10)
    urgent_high = record(expedited=True, at=NOW - 0.2, priority=2)
    future_high = record(at=NOW + 5, priority=10)  # not due: priority never makes it due
    works = [low_early, plain_late, high_late, top, urgent_low, plain_early, urgent_high]
    await store.insert([*works, future_high, high_early])

    first = await claim_due(store, limit=4)
    assert ids(first.records) == [urgent_high.id, urgent_low.id, top.id, high_early.id]
    assert first.next_due is not None
    assert first.next_due <= NOW  # works are still due
    rest = await claim_due(store)
    assert ids(rest.records) == [high_late.id, plain_early.id, plain_late.id, low_early.id]
    assert rest.next_due == NOW + 5
    assert [r.priority for r in rest.records] == [7, 0, 0, -3]


async def test_claim_respects_limit_and_reports_next_due(store: Store) -> None:
    works = [record(at=NOW - 5 + i) for i in range(5)]  # due NOW-5 … NOW-1
    await store.insert(works[::-1])

    first = await claim_due(store, limit=2)
    assert ids(first.records) == ids(works[:2])
    assert first.next_due == NOW - 3  # in the past: the limit was reached

    for limit in (0, -1):
        nothing = await claim_due(store, limit=limit)
        assert nothing == Claimed(records=[], next_due=NOW - 3)

    rest = await claim_due(store, limit=10)
    assert ids(rest.records) == ids(works[2:])
    assert rest.next_due is None


async def test_next_due_counts_ordinary_work_when_expedited_fills_the_limit(store: Store) -> None:
    urgent = [record(expedited=True, at=NOW - 1) for _ in range(2)]
    ordinary = record(at=NOW - 9)
    await store.insert([*urgent, ordinary])

    claimed = await claim_due(store, limit=2)

    assert sorted(ids(claimed.records)) == sorted(ids(urgent))
    assert claimed.next_due == NOW - 9


async def test_work_not_due_is_not_claimed(store: Store) -> None:
    work = record(at=NOW, initial_delay=30)
    await store.insert([work])

    assert await claim_due(store, now=NOW + 29.9) == Claimed(records=[], next_due=NOW + 30)
    assert ids((await claim_due(store, now=NOW + 30)).records) == [work.id]


async def test_next_due_is_none_when_nothing_is_enqueued(store: Store) -> None:
    assert await claim_due(store) == Claimed(records=[], next_due=None)
    await running(store, record())
    assert await claim_due(store) == Claimed(records=[], next_due=None)


async def test_parked_works_are_skipped_until_their_signals_hold(store: Store) -> None:
    vpn = Constraints(signals={"vpn"})
    needs_vpn = record(constraints=vpn, at=NOW - 2)
    needs_network = record(constraints=Constraints(required_network="CONNECTED"), at=NOW - 1)
    free = record(at=NOW - 0.5)
    later_vpn = record(constraints=vpn, at=NOW + 5)
    later_free = record(at=NOW + 50)
    await store.insert([needs_vpn, needs_network, free, later_vpn, later_free])

    first = await claim_due(store, blocked={"vpn", "network"})
    assert ids(first.records) == [free.id]
    assert first.next_due == NOW + 50  # parked works do not count, due or not
    assert await store.get([needs_vpn.id]) == [needs_vpn]

    second = await claim_due(store, blocked={"vpn"})
    assert ids(second.records) == [needs_network.id]
    assert second.next_due == NOW + 50

    third = await claim_due(store)
    assert ids(third.records) == [needs_vpn.id]
    assert third.next_due == NOW + 5


async def test_signal_names_with_commas_do_not_collide(store: Store) -> None:
    odd = record(constraints=Constraints(signals={"a,b"}))
    await store.insert([odd])

    assert await claim_due(store, blocked={"a,b"}) == Claimed(records=[], next_due=None)
    others = {"a", "b", "a%2Cb", ",", "%", "a,b,c"}
    assert ids((await claim_due(store, blocked=others)).records) == [odd.id]
