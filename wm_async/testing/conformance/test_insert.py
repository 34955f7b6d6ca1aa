"""``Store.insert``: new works are stored whole, all or none, and ids are unique."""

from __future__ import annotations

import uuid
from datetime import timedelta

import anyio
import attrs
import pytest

from ..._api.requests import OneTimeWorkRequest
from ..._core.data import FrozenData
from ..._core.errors import InvalidRequestError
from ..._core.mergers import ArrayCreatingInputMerger
from ..._core.model import (
    DEFAULT_BACKOFF,
    NO_CONSTRAINTS,
    Backoff,
    BackoffPolicy,
    Constraints,
    NetworkType,
    Periodicity,
    StopReason,
    WorkError,
    WorkState,
)
from ..._core.record import WorkRecord
from ...stores import Store
from ._helpers import NOW, claim_due, ids, record


async def test_insert_get_round_trips_every_field(store: Store) -> None:
    constraints = Constraints(
        required_network=NetworkType.UNMETERED,
        requires_charging=True,
        requires_battery_not_low=True,
        requires_storage_not_low=True,
        requires_device_idle=True,
        signals={"vpn", "odd,name%"},
    )
    spec = record(
        "sync_feed",
        unique_name="nightly",
        input={"url": "https://example.org", "n": [1, 2.5, None, True], "deep": {"é": "ü"}},
        tags={"feeds", "a,b"},
        constraints=constraints,
        initial_delay=12.5,
        backoff=Backoff(
            BackoffPolicy.LINEAR, timedelta(seconds=10), max_delay=timedelta(minutes=2)
        ),
        timeout=30.25,
        max_attempts=5,
        input_merger=ArrayCreatingInputMerger,
    )
    rich = attrs.evolve(
        spec,
        expedited=True,
        generation=3,
        enqueued_at=NOW - 1.5,
        state=WorkState.FAILED,
        run_attempt_count=4,
        next_run_at=NOW + 99.125,
        last_enqueue_time=NOW - 0.5,
        started_at=NOW + 1,
        finished_at=NOW + 2,
        output={"result": [1, {"k": "v"}]},
        progress={"done": 0.5},
        stop_reason=StopReason.TIMEOUT,
        error=WorkError(type="builtins.ValueError", message="bad ☃"),
        period_count=2,
        owner="host-1",
        periodic=Periodicity(interval=timedelta(hours=1), flex=timedelta(minutes=5)),
        priority=-7,
        headers=FrozenData(
            {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        ),
    )
    plain = WorkRecord.from_request(OneTimeWorkRequest("w"), now=0)
    same = [
        f.name for f in attrs.fields(WorkRecord) if getattr(rich, f.name) == getattr(plain, f.name)
    ]
    assert same == [], "give every field a non-default value, so all are round-tripped"
    await store.insert([rich, plain])

    got = {r.id: r for r in await store.get([rich.id, plain.id])}

    assert got == {rich.id: rich, plain.id: plain}
    assert got[plain.id].constraints is NO_CONSTRAINTS
    cron = attrs.evolve(
        plain,
        id=str(uuid.uuid4()),
        periodic=Periodicity(cron="0 3 * * *", timezone="Europe/Berlin"),
    )
    await store.insert([cron])
    assert await store.get([cron.id]) == [cron]
    assert got[plain.id].backoff is DEFAULT_BACKOFF
    assert got[plain.id].timeout is None
    assert got[plain.id].error is None


async def test_insert_empty_is_a_no_op(store: Store) -> None:
    await store.insert([])
    assert (await claim_due(store)).next_due is None


async def test_duplicate_id_is_rejected_and_nothing_is_stored(store: Store) -> None:
    stored, fresh, twice = record(), record(), record()
    await store.insert([stored])

    with pytest.raises(InvalidRequestError, match="already exists") as info:
        await store.insert([fresh, stored])
    assert (info.value.field, info.value.value) == ("id", stored.id)
    with pytest.raises(InvalidRequestError, match="already exists"):
        await store.insert([twice, twice])

    assert await store.get([fresh.id, twice.id]) == []
    assert await store.get([stored.id]) == [stored]


async def test_concurrent_inserts_fail_alone(store: Store) -> None:
    taken, a, b = record(), record(), record()
    await store.insert([taken])
    errors: dict[str, BaseException] = {}

    async def insert(name: str, records: list[WorkRecord]) -> None:
        try:
            await store.insert(records)
        except InvalidRequestError as exc:
            errors[name] = exc

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(insert, "a", [a])
            tg.start_soon(insert, "dup", [record(), taken])
            tg.start_soon(insert, "b", [b])

    assert list(errors) == ["dup"]
    assert sorted(ids(await store.get([a.id, b.id]))) == sorted([a.id, b.id])
