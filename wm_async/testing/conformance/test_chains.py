"""Chains: ``Store.insert`` with prerequisites decides each new work's state from them,
``Store.apply`` resolves the dependents of the works it finishes in the same call
(unblocks, fails or cancels them, transitively), and ``Store.prune`` keeps what an
unfinished work depends on."""

from __future__ import annotations

import uuid

import pytest

from ..._core import lifecycle
from ..._core.errors import InvalidRequestError
from ..._core.lifecycle import (
    Failed,
    Succeeded,
    cancel,
    finish,
)
from ..._core.mergers import ArrayCreatingInputMerger
from ..._core.model import (
    WorkError,
    WorkState,
)
from ...stores import (
    Claimed,
    Store,
)
from ._helpers import NOW, by_id, claim_due, ids, record, running


async def test_insert_decides_a_chained_work_from_its_prerequisites(store: Store) -> None:
    ok = await running(store, record("ok"))
    ok_done = finish(ok, Succeeded({"k": "ok", "n": 1}), now=NOW + 1)
    bad = await running(store, record("bad"))
    bad_done = finish(bad, Failed(error=WorkError(type="E", message="m")), now=NOW + 1)
    gone = cancel(record("gone", at=NOW + 500), now=NOW + 1)
    assert gone is not None
    await store.insert([gone.before])
    assert len(await store.apply([ok_done, bad_done, gone])) == 3
    pending = record("pending", at=NOW + 1000)
    await store.insert([pending])

    at = NOW + 2
    after_ok = record("after_ok", at=at, input={"own": 0, "n": 0}, initial_delay=5)
    after_bad = record("after_bad", at=at)
    after_gone = record("after_gone", at=at)
    after_pending = record("after_pending", at=at)
    grandchild = record("grandchild", at=at)  # waits for a work inserted with it
    links = {
        after_ok.id: [ok.id],
        after_bad.id: [ok.id, bad.id],
        after_gone.id: [ok.id, gone.after.id],
        after_pending.id: [ok.id, pending.id],
        grandchild.id: [after_pending.id],
    }

    stored = await store.insert(
        [after_ok, after_bad, after_gone, after_pending, grandchild], links
    )

    expected = {
        after_ok.id: lifecycle.resolve(after_ok, [ok_done.after], now=at),
        after_bad.id: lifecycle.resolve(after_bad, [ok_done.after, bad_done.after], now=at),
        after_gone.id: lifecycle.resolve(after_gone, [ok_done.after, gone.after], now=at),
        after_pending.id: lifecycle.blocked(after_pending),
        grandchild.id: lifecycle.blocked(grandchild),
    }
    assert by_id(stored) == expected
    assert by_id(await store.get(list(expected))) == expected
    assert [r.state for r in expected.values()] == [
        WorkState.ENQUEUED,
        WorkState.FAILED,
        WorkState.CANCELLED,
        WorkState.BLOCKED,
        WorkState.BLOCKED,
    ]
    assert expected[after_ok.id].input == {"own": 0, "k": "ok", "n": 1}  # merged
    claimed = await claim_due(store, now=at + 5)
    assert claimed.records == [lifecycle.claim(expected[after_ok.id], now=at + 5, owner="me")]
    assert claimed.next_due == NOW + 1000  # BLOCKED works are never due


async def test_insert_rejects_an_unknown_prerequisite_and_stores_nothing(store: Store) -> None:
    first, child = record(), record()
    unknown = str(uuid.uuid4())

    with pytest.raises(InvalidRequestError, match="no such work") as info:
        await store.insert([first, child], {child.id: [first.id, unknown]})

    assert (info.value.field, info.value.value) == ("prerequisite", unknown)
    assert await store.get([first.id, child.id]) == []


async def test_the_last_prerequisite_to_succeed_unblocks_with_the_merged_input(
    store: Store,
) -> None:
    a, b = record("a", at=NOW - 2), record("b", at=NOW - 1)
    child = record("child", input={"n": 0}, input_merger=ArrayCreatingInputMerger)
    await store.insert([a, b, child], {child.id: [a.id, b.id]})
    a_run, b_run = (await claim_due(store)).records
    assert ids([a_run, b_run]) == [a.id, b.id]  # the BLOCKED child is not claimed

    b_done = finish(b_run, Succeeded({"n": 2}), now=NOW + 1)
    assert await store.apply([b_done]) == [b_done.after]
    assert await store.get([child.id]) == [lifecycle.blocked(child)]  # still waits for a

    a_done = finish(a_run, Succeeded({"n": 1}), now=NOW + 2)
    written = await store.apply([a_done])

    # Outputs merge in the order of the prerequisites, not of their ends.
    unblocked = lifecycle.unblock(
        lifecycle.blocked(child), [a_done.after.output, b_done.after.output], now=NOW + 2
    )
    assert by_id(written) == {a.id: a_done.after, child.id: unblocked}
    assert unblocked.state is WorkState.ENQUEUED
    assert unblocked.input == {"n": [0, 1, 2]}
    assert await store.get([child.id]) == [unblocked]
    again = await claim_due(store, now=NOW + 2)
    assert again.records == [lifecycle.claim(unblocked, now=NOW + 2, owner="me")]


async def test_a_failure_fails_every_blocked_dependent_transitively(store: Store) -> None:
    a, b, c, d, free = (record(name) for name in ("a", "b", "c", "d", "free"))
    other = record("other", at=NOW + 100)  # a second prerequisite of d, still unfinished
    await store.insert(
        [a, other, b, c, d, free], {b.id: [a.id], c.id: [b.id], d.id: [a.id, other.id]}
    )
    claimed = by_id((await claim_due(store)).records)
    assert sorted(claimed) == sorted([a.id, free.id])

    failed = finish(claimed[a.id], Failed(error=WorkError(type="E", message="m")), now=NOW + 1)
    written = await store.apply([failed])

    b_failed = lifecycle.prerequisite_failed(lifecycle.blocked(b), failed.after, now=NOW + 1)
    expected = {
        a.id: failed.after,
        b.id: b_failed,
        c.id: lifecycle.prerequisite_failed(lifecycle.blocked(c), b_failed, now=NOW + 1),
        d.id: lifecycle.prerequisite_failed(lifecycle.blocked(d), failed.after, now=NOW + 1),
    }
    assert by_id(written) == expected
    assert by_id(await store.get(list(expected))) == expected
    assert all(r.state is WorkState.FAILED for r in expected.values())
    assert by_id(await store.get([free.id, other.id])) == {
        free.id: claimed[free.id],
        other.id: other,
    }


async def test_a_cancellation_cancels_every_blocked_dependent_transitively(
    store: Store,
) -> None:
    a, b, c = record("a", at=NOW + 100), record("b"), record("c")
    await store.insert([a, b, c], {b.id: [a.id], c.id: [b.id]})
    cancelled = cancel(a, now=NOW + 1)
    assert cancelled is not None

    written = await store.apply([cancelled])

    expected = {
        a.id: cancelled.after,
        b.id: lifecycle.prerequisite_cancelled(lifecycle.blocked(b), now=NOW + 1),
        c.id: lifecycle.prerequisite_cancelled(lifecycle.blocked(c), now=NOW + 1),
    }
    assert by_id(written) == expected
    assert by_id(await store.get(list(expected))) == expected
    assert all(r.state is WorkState.CANCELLED for r in expected.values())
    assert await claim_due(store, now=NOW + 1000) == Claimed(records=[], next_due=None)


async def test_prune_keeps_the_prerequisites_of_unfinished_works(store: Store) -> None:
    a, b = record("a", at=NOW - 1), record("b", at=NOW + 100)
    child = record("child")
    await store.insert([a, b, child], {child.id: [a.id, b.id]})
    a_run = (await claim_due(store)).records[0]
    await store.apply([finish(a_run, Succeeded(), now=NOW + 1)])

    assert await store.prune(finished_before=NOW + 10_000) == 0  # the child needs a
    b_run = (await claim_due(store, now=NOW + 100)).records[0]
    assert b_run.id == b.id
    await store.apply([finish(b_run, Succeeded(), now=NOW + 101)])
    assert await store.prune(finished_before=NOW + 10_000) == 0  # ... and b: unfinished
    child_run = (await claim_due(store, now=NOW + 101)).records[0]
    assert child_run.id == child.id
    await store.apply([finish(child_run, Succeeded(), now=NOW + 102)])

    assert await store.prune(finished_before=NOW + 10_000) == 3
    assert await store.get([a.id, b.id, child.id]) == []
