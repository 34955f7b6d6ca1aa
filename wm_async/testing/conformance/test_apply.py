"""``Store.apply``: each change is written only where its guard (the state and attempt
count it expects) holds, in one transaction; the stored spec is kept."""

from __future__ import annotations

import uuid
from datetime import timedelta

import anyio
import attrs

from ..._core.lifecycle import (
    Change,
    Failed,
    Interrupted,
    Retry,
    Succeeded,
    claim,
    finish,
    set_progress,
)
from ..._core.model import (
    Backoff,
    BackoffPolicy,
    StopReason,
    WorkError,
    WorkState,
)
from ..._core.record import (
    RUNTIME_FIELDS,
    WorkRecord,
)
from ...stores import (
    Claimed,
    Store,
)
from ._helpers import NOW, claim_due, ids, record, running


async def test_apply_writes_only_where_the_guard_holds(store: Store) -> None:
    work = await running(store, record())
    done = finish(work, Succeeded({"ok": 1}), now=NOW + 1)

    assert await store.apply([done]) == [done.after]
    assert await store.get([work.id]) == [done.after]
    assert await store.apply([done]) == []  # stale: the work is SUCCEEDED now
    assert await store.get([work.id]) == [done.after]

    other = await running(store, record())
    failed = finish(other, Failed(error=WorkError(type="E", message="m")), now=NOW + 2)
    unknown = Change(attrs.evolve(other, id=str(uuid.uuid4())), failed.after)
    assert await store.apply([done, unknown, failed]) == [failed.after]
    assert await store.get([other.id]) == [failed.after]


async def test_apply_guard_checks_the_attempt_count(store: Store) -> None:
    first_run = await running(store, record(backoff=Backoff(delay=0)))
    retry = finish(first_run, Retry(), now=NOW)
    await store.apply([retry])
    second_run = (await claim_due(store)).records[0]
    assert (second_run.state, second_run.run_attempt_count) == (WorkState.RUNNING, 2)

    late_result = finish(first_run, Succeeded(), now=NOW + 1)  # RUNNING, attempt 1: stale

    assert await store.apply([late_result]) == []
    assert await store.get([first_run.id]) == [second_run]


async def test_reenqueued_work_is_due_again(store: Store) -> None:
    backoff = Backoff(BackoffPolicy.LINEAR, timedelta(seconds=10))
    work = await running(store, record(backoff=backoff))
    retry = finish(work, Retry(), now=NOW + 1)
    assert await store.apply([retry]) == [retry.after]

    assert await claim_due(store, now=NOW + 10) == Claimed(records=[], next_due=NOW + 11)
    again = await claim_due(store, now=NOW + 11)
    assert again.records == [claim(retry.after, now=NOW + 11, owner="me")]


async def test_claiming_interrupted_work_matches_the_lifecycle(store: Store) -> None:
    work = await running(store, record(max_attempts=5))
    interrupted = finish(work, Interrupted(StopReason.TIMEOUT), now=NOW + 1)
    assert await store.apply([interrupted]) == [interrupted.after]
    assert interrupted.after.stop_reason is StopReason.TIMEOUT

    again = await claim_due(store, now=NOW + 2)

    assert again.records == [claim(interrupted.after, now=NOW + 2, owner="me")]
    assert await store.get([work.id]) == again.records


async def test_apply_two_changes_to_one_work_in_one_call(store: Store) -> None:
    work = await running(store, record())
    progress = set_progress(work, {"step": 1})
    assert progress is not None
    done = finish(work, Succeeded(), now=NOW + 1)

    assert await store.apply([progress, done]) == [progress.after, done.after]
    assert await store.get([work.id]) == [done.after]


async def test_apply_keeps_the_stored_spec_when_generations_differ(store: Store) -> None:
    work = await running(store, record(input={"v": 1}))
    done = finish(work, Succeeded({"out": 2}), now=NOW + 1)
    newer = attrs.evolve(done.after, generation=7, worker="other", input={"v": 2})

    written = await store.apply([Change(work, newer)])

    expected = attrs.evolve(work, **{f: getattr(newer, f) for f in RUNTIME_FIELDS})
    assert written == [expected]
    assert await store.get([work.id]) == [expected]


async def test_concurrent_applies(store: Store) -> None:
    works = [record(at=NOW - i) for i in range(30)]
    await store.insert(works)
    claimed = (await claim_due(store)).records
    changes = [finish(r, Succeeded({"i": i}), now=NOW + 1) for i, r in enumerate(claimed)]
    results: dict[str, list[WorkRecord]] = {}

    async def apply(change: Change) -> None:
        results[change.after.id] = await store.apply([change, change])  # 2nd is stale

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for change in changes:
                tg.start_soon(apply, change)

    assert results == {c.after.id: [c.after] for c in changes}
    assert sorted(await store.get(ids(works)), key=lambda r: r.id) == sorted(
        (c.after for c in changes), key=lambda r: r.id
    )
