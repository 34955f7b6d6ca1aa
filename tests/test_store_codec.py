"""The SQL stores' row codec: one declared column list, checked against WorkRecord's
fields, and every column round-trips."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import anyio
import attrs
import pytest
from conftest import pg_execute

from wm_async._api.requests import OneTimeWorkRequest
from wm_async._core.data import FrozenData
from wm_async._core.mergers import ArrayCreatingInputMerger
from wm_async._core.model import (
    Backoff,
    BackoffPolicy,
    Constraints,
    NetworkType,
    Periodicity,
    StopReason,
    WorkError,
    WorkState,
)
from wm_async._core.record import (
    RUNTIME_FIELDS,
    WorkRecord,
)
from wm_async.stores import Store
from wm_async.stores import _codec as codec
from wm_async.stores.memory import MemoryStore
from wm_async.stores.sqlite import SQLiteStore

NOW: Final = 1_700_000_000.0
FIELDS: Final = [a.name for a in attrs.fields(WorkRecord)]

#: A value for every field, none the default a new work has.
SAMPLE: Final[dict[str, object]] = {
    "id": "0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b",
    "worker": "sync_feed",
    "input": FrozenData({"url": "https://example.org", "n": [1, 2.5, None, True]}),
    "tags": frozenset({"feeds", "a,b"}),
    "constraints": Constraints(
        required_network=NetworkType.UNMETERED, requires_charging=True, signals={"vpn", "x,%"}
    ),
    "initial_delay": 12.5,
    "backoff": Backoff(BackoffPolicy.LINEAR, timedelta(seconds=10), max_delay=timedelta(hours=1)),
    "timeout": 30.25,
    "max_attempts": 5,
    "expedited": True,
    "input_merger": ArrayCreatingInputMerger.name,
    "unique_name": "nightly",
    "generation": 3,
    "enqueued_at": NOW - 100,
    "periodic": Periodicity(interval=timedelta(hours=1), flex=timedelta(minutes=10)),
    "priority": -7,
    "headers": FrozenData(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    ),
    "state": WorkState.FAILED,
    "run_attempt_count": 4,
    "next_run_at": NOW + 7,
    "last_enqueue_time": NOW - 50,
    "started_at": NOW - 20,
    "finished_at": NOW - 10,
    "output": FrozenData({"done": "é"}),
    "progress": FrozenData({"pct": 99}),
    "stop_reason": StopReason.TIMEOUT,
    "error": WorkError(type="ValueError", message="bad, bad input"),
    "period_count": 6,
    "owner": "host:123",
}


def default_record() -> WorkRecord:
    return WorkRecord.from_request(OneTimeWorkRequest("w"), now=NOW)


def sample_record() -> WorkRecord:
    missing = set(FIELDS) - set(SAMPLE)
    assert not missing, f"SAMPLE needs a value for the new WorkRecord field(s) {missing}"
    return WorkRecord(**SAMPLE)  # type: ignore[arg-type]


def test_the_sample_sets_every_field_to_a_value_of_its_own() -> None:
    rich, plain = sample_record(), default_record()
    assert [f for f in FIELDS if getattr(rich, f) == getattr(plain, f)] == []


def test_the_columns_come_from_workrecords_fields() -> None:
    assert codec.columns_of(FIELDS, RUNTIME_FIELDS) == tuple(
        zip(codec.COLUMNS, codec.PG_TYPES, strict=True)
    )
    assert codec.COLUMNS[: codec.N_SPEC][0] == "id"
    assert codec.RUNTIME_COLUMNS[0] == "state"


def test_a_field_without_columns_fails_loudly() -> None:
    with pytest.raises(TypeError, match=r"fields without columns \['urgency'\]"):
        codec.columns_of([*FIELDS, "urgency"], RUNTIME_FIELDS)
    with pytest.raises(TypeError, match=r"columns for no field \['owner'\]"):
        codec.columns_of([f for f in FIELDS if f != "owner"], RUNTIME_FIELDS)


def test_every_column_round_trips() -> None:
    rich, plain = sample_record(), default_record()
    row = codec.insert_params(rich)
    assert len(row) == len(codec.COLUMNS) + 1  # and the signals column
    # Every column holds something of its own: none is left at the default's encoding.
    plain_row = codec.insert_params(plain)[:-1]
    same = [c for c, a, b in zip(codec.COLUMNS, row[:-1], plain_row, strict=True) if a == b]
    assert same == []
    decoded = codec.record_from_row((1, *row[:-1]))
    assert decoded == rich
    runtime = codec.runtime_params(rich)
    assert runtime == row[codec.N_SPEC : len(codec.COLUMNS)]
    assert len(runtime) == len(codec.RUNTIME_COLUMNS)


async def test_every_field_round_trips_through_each_store(store: Store) -> None:
    rich = sample_record()
    with anyio.fail_after(30):
        await store.insert([rich])
        assert await store.get([rich.id]) == [rich]


_PG_NAMES: Final = {
    "text": "text",
    "float8": "double precision",
    "int8": "bigint",
    "int2": "smallint",
}


async def test_the_columns_are_the_tables_columns(store: Store) -> None:
    # Columns of the stores' own (not record fields): ``late`` is what a claim writes for
    # the dashboard's start-lateness chart.
    extra = {"signals", "waiting", "late"}
    with anyio.fail_after(30):
        if isinstance(store, MemoryStore):
            pytest.skip("no table")
        if isinstance(store, SQLiteStore):
            db = store._reader
            assert db is not None
            names = await db.execute_fetchall("SELECT name FROM pragma_table_info('wm_work')")
            assert {r[0] for r in names} - extra == set(codec.COLUMNS)
            return
        schema = store.schema  # type: ignore[attr-defined]
        rows = await pg_execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'wm_work'",
            schema,
        )
    types = {
        name: kind for name, kind in rows if name not in {"seq", "lease_until", "txn", *extra}
    }
    expected = {c: _PG_NAMES[t] for c, t in zip(codec.COLUMNS, codec.PG_TYPES, strict=True)}
    assert types == expected
