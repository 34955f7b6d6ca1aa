"""``Store.update_spec`` (``update_work``): the new spec and due time are written only if the
stored work still has the state, attempt count and generation the change expects."""

from __future__ import annotations

import uuid

import attrs

from ..._core import lifecycle
from ..._core.lifecycle import (
    Change,
    Succeeded,
    finish,
)
from ..._core.model import (
    Constraints,
    UpdateResult,
    WorkQuery,
)
from ..._core.record import RUNTIME_FIELDS
from ...stores import (
    Claimed,
    Store,
)
from ._helpers import NOW, claim_due, ids, record, running


async def test_update_spec_writes_the_new_spec_and_due_time(store: Store) -> None:
    work = record("w", input={"v": 1}, tags={"old"}, initial_delay=10)
    await store.insert([work])
    new = record(
        "w2",
        input={"v": 2},
        tags={"new"},
        initial_delay=60,
        constraints=Constraints(signals={"vpn"}),
    )
    result, change = lifecycle.update_spec(work, new)
    assert result is UpdateResult.APPLIED_IMMEDIATELY
    assert change is not None

    assert await store.update_spec(change) == change.after

    assert await store.get([work.id]) == [change.after]
    assert change.after.generation == 1
    assert ids(await store.query(WorkQuery(tags={"new"}))) == [work.id]
    assert await store.query(WorkQuery(tags={"old"})) == []
    # The claim follows the new due time and the new signals.
    assert await claim_due(store, now=NOW + 10) == Claimed(records=[], next_due=NOW + 60)
    assert await claim_due(store, now=NOW + 60, blocked={"vpn"}) == Claimed(
        records=[], next_due=None
    )
    claimed = await claim_due(store, now=NOW + 60)
    assert claimed.records == [lifecycle.claim(change.after, now=NOW + 60, owner="me")]


async def test_update_spec_is_a_compare_and_set(store: Store) -> None:
    work = record(input={"v": 1})
    await store.insert([work])
    _, first = lifecycle.update_spec(work, record(input={"v": 2}))
    _, second = lifecycle.update_spec(
        work, record(input={"v": 3})
    )  # from the same, now stale, record
    assert first is not None
    assert second is not None

    assert await store.update_spec(first) == first.after
    assert await store.update_spec(second) is None  # the generation moved on
    assert await store.update_spec(first) is None

    _, late = lifecycle.update_spec(first.after, record(input={"v": 4}))
    assert late is not None
    running_now = (await claim_due(store)).records[0]
    assert await store.update_spec(late) is None  # the state moved on
    unknown = Change(attrs.evolve(work, id=str(uuid.uuid4())), late.after)
    assert await store.update_spec(unknown) is None
    assert await store.get([work.id]) == [running_now]
    assert running_now.input == {"v": 2}


async def test_a_running_work_keeps_its_run_and_its_result_takes_the_new_spec(
    store: Store,
) -> None:
    run = await running(store, record(input={"v": 1}))
    result, change = lifecycle.update_spec(run, record(input={"v": 2}, tags={"new"}))
    assert result is UpdateResult.APPLIED_FOR_NEXT_RUN
    assert change is not None

    assert await store.update_spec(change) == change.after
    assert await store.get([run.id]) == [change.after]

    done = finish(run, Succeeded({"out": 1}), now=NOW + 1)  # the run that was under way
    written = await store.apply([done])

    expected = attrs.evolve(change.after, **{f: getattr(done.after, f) for f in RUNTIME_FIELDS})
    assert written == [expected]
    assert await store.get([run.id]) == [expected]
    assert (expected.input, expected.output, expected.generation) == ({"v": 2}, {"out": 1}, 1)
