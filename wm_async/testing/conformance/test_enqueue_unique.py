"""``Store.enqueue_unique``: in one transaction, the store reads the works under a unique
name and which of them are leaves, lets the planner decide, and carries the plan out;
calls on one name are serialised, so each sees the others' result."""

from __future__ import annotations

import itertools

import anyio
import attrs
import pytest

from ..._core import lifecycle
from ..._core.errors import InvalidRequestError
from ..._core.lifecycle import (
    Succeeded,
    UniquePlan,
    cancel,
    finish,
    plan_unique,
)
from ..._core.model import (
    WorkQuery,
    WorkState,
)
from ..._core.record import WorkRecord
from ...stores import Store
from ...stores._base import UniquePlanner
from ._helpers import NOW, by_id, claim_due, ids, record, running

#: What a planner was shown: the ids of the works under the name and of its leaves.
Seen = list[tuple[list[str], list[str]]]


def planner(
    policy: str, new: list[WorkRecord], *, now: float = NOW, seen: Seen | None = None
) -> UniquePlanner:
    """The manager's planner for ``policy`` enqueueing ``new`` (one work or a chain of
    one work per step); records what it was shown in ``seen``."""
    links = {later.id: (earlier.id,) for earlier, later in itertools.pairwise(new)}

    def plan(existing: list[WorkRecord], leaves: list[WorkRecord]) -> UniquePlan:
        if seen is not None:
            seen.append((sorted(ids(existing)), sorted(ids(leaves))))
        return plan_unique(policy, existing, leaves, new, prerequisites=links, now=now)

    return plan


async def test_a_free_name_takes_the_new_works(store: Store) -> None:
    first, second = record(unique_name="n"), record(unique_name="n")
    seen: Seen = []

    plan, written = await store.enqueue_unique("n", planner("KEEP", [first, second], seen=seen))

    assert seen == [([], [])]
    assert plan == UniquePlan(inserts=(first, second), prerequisites={second.id: (first.id,)})
    assert by_id(written) == {first.id: first, second.id: lifecycle.blocked(second)}
    assert by_id(await store.query(WorkQuery(unique_names={"n"}))) == by_id(written)


async def test_keep_leaves_an_unfinished_work_alone(store: Store) -> None:
    kept = await running(store, record(unique_name="n"))
    new = record(unique_name="n")
    seen: Seen = []

    plan, written = await store.enqueue_unique("n", planner("KEEP", [new], seen=seen))

    assert seen == [([kept.id], [kept.id])]
    assert (plan, written) == (UniquePlan(), [])
    assert await store.query(WorkQuery(unique_names={"n"})) == [kept]
    assert await store.get([new.id]) == []


async def test_replace_cancels_and_removes_the_works_under_the_name(store: Store) -> None:
    done = await running(store, record(unique_name="n", at=NOW - 1))
    finished = finish(done, Succeeded(), now=NOW)
    await store.apply([finished])
    busy = await running(store, record(unique_name="n"))
    elsewhere = record(unique_name="other", at=NOW + 100)
    await store.insert([elsewhere])
    new = record(unique_name="n", at=NOW + 5)

    plan, written = await store.enqueue_unique("n", planner("REPLACE", [new], now=NOW + 5))

    stopped = cancel(busy, now=NOW + 5)
    assert stopped is not None
    assert plan.cancels == (stopped,)
    assert sorted(plan.deletes) == sorted([done.id, busy.id])
    assert by_id(written) == {busy.id: stopped.after, new.id: new}
    assert stopped.after.state is WorkState.CANCELLED
    assert await store.query(WorkQuery(unique_names={"n"})) == [new]
    assert await store.get([done.id, busy.id]) == []
    assert await store.get([elsewhere.id]) == [elsewhere]


async def test_append_chains_the_new_work_after_the_leaves(store: Store) -> None:
    first, second = record(unique_name="n", at=NOW + 100), record(unique_name="n")
    await store.insert([first, second], {second.id: [first.id]})
    new = record(unique_name="n", at=NOW + 1)
    seen: Seen = []

    plan, written = await store.enqueue_unique("n", planner("APPEND", [new], seen=seen))

    assert seen == [(sorted([first.id, second.id]), [second.id])]
    assert plan.prerequisites == {new.id: (second.id,)}
    assert written == [lifecycle.blocked(new)]
    # The new work depends on the leaf: cancelling the chain's start reaches it.
    cancelled = cancel(first, now=NOW + 2)
    assert cancelled is not None
    assert sorted(ids(await store.apply([cancelled]))) == sorted([first.id, second.id, new.id])
    assert (await store.get([new.id]))[0].state is WorkState.CANCELLED


async def test_concurrent_calls_on_one_name_see_each_other(store: Store) -> None:
    plans: list[UniquePlan] = []

    async def enqueue() -> None:
        new = record(unique_name="n")
        plan, _ = await store.enqueue_unique("n", planner("KEEP", [new]))
        plans.append(plan)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(enqueue)

    inserted = [plan.inserts[0] for plan in plans if plan.inserts]
    assert len(plans) == 5
    assert ids(inserted) == ids(await store.query(WorkQuery(unique_names={"n"})))
    assert len(inserted) == 1


async def test_a_plan_that_cannot_be_carried_out_changes_nothing(store: Store) -> None:
    busy = await running(store, record(unique_name="n"))
    taken = record(unique_name="other", at=NOW + 100)
    await store.insert([taken])
    clash = attrs.evolve(record(unique_name="n"), id=taken.id)  # an id stored elsewhere

    with pytest.raises(InvalidRequestError, match="already exists"):
        await store.enqueue_unique("n", planner("REPLACE", [clash]))

    assert await store.get([busy.id]) == [busy]  # not cancelled
    assert await store.get([taken.id]) == [taken]
    assert ids((await claim_due(store, now=NOW + 100)).records) == [taken.id]
