"""Leases (``Store.lease_duration``, ``Store.renew_leases``): a store shared by several
processes gives each claim a lease its owner renews; ``requeue_orphans`` takes a work
only once its lease expired. A store without leases (one scheduling process) has
nothing to renew."""

from __future__ import annotations

import uuid

import pytest

from ..._core.lifecycle import (
    Succeeded,
    finish,
    recover,
)
from ...stores import Store
from ._helpers import NOW, claim_due, record, running


async def test_renew_leases_reports_what_the_owner_no_longer_holds(store: Store) -> None:
    kept, ended = record(at=NOW - 2), record(at=NOW - 1)
    await store.insert([kept, ended])
    kept_run, ended_run = (await claim_due(store)).records
    await store.apply([finish(ended_run, Succeeded(), now=NOW + 1)])
    unknown = str(uuid.uuid4())

    lost = await store.renew_leases(owner="me", ids=[kept.id, ended.id, unknown], now=NOW + 1)
    not_theirs = await store.renew_leases(owner="someone else", ids=[kept.id], now=NOW + 1)

    if store.lease_duration is None:  # no leases: nothing to lose
        assert (lost, not_theirs) == (set(), set())
    else:
        assert (lost, not_theirs) == ({ended.id, unknown}, {kept.id})
    assert await store.renew_leases(owner="me", ids=[], now=NOW + 1) == set()
    assert await store.get([kept.id]) == [kept_run]  # a lease is not part of the record


async def test_a_work_is_requeued_only_once_its_renewed_lease_expired(store: Store) -> None:
    lease = store.lease_duration
    if lease is None:
        pytest.skip("the store has no leases: every RUNNING work is an orphan at start")
    work = await running(store, record())  # the lease runs until NOW + lease
    assert await store.renew_leases(owner="me", ids=[work.id], now=NOW + lease / 2) == set()

    assert await store.requeue_orphans(now=NOW + lease + 1) == []  # renewed: still held
    assert await store.get([work.id]) == [work]
    late = NOW + lease * 1.5 + 1
    assert await store.requeue_orphans(now=late) == [recover(work, now=late).after]
    assert await store.renew_leases(owner="me", ids=[work.id], now=late) == {work.id}
