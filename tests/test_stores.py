"""The store conformance suite: every test runs against every store (the ``store``
fixture), then SQLite-only tests (files, schema, group commit, query plans)."""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import anyio
import attrs
import pytest

from wm_async._api.requests import OneTimeWorkRequest
from wm_async._core.errors import (
    InvalidRequestError,
    StoreCorruptError,
    StoreError,
)
from wm_async._core.lifecycle import (
    Change,
    Failed,
    Interrupted,
    Retry,
    Succeeded,
    cancel,
    claim,
    finish,
    set_progress,
)
from wm_async._core.mergers import ArrayCreatingInputMerger
from wm_async._core.model import (
    DEFAULT_BACKOFF,
    NO_CONSTRAINTS,
    Backoff,
    BackoffPolicy,
    Constraints,
    NetworkType,
    Periodicity,
    StopReason,
    WorkError,
    WorkQuery,
    WorkState,
)
from wm_async._core.record import (
    RUNTIME_FIELDS,
    WorkRecord,
)
from wm_async.stores import (
    Claimed,
    ClaimParams,
    Store,
)
from wm_async.stores import _sqlite_ops as sqlite_store
from wm_async.stores import _sqlite_sql as schema
from wm_async.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0


def record(
    worker: str = "w", *, at: float = NOW, unique_name: str | None = None, **kw: object
) -> WorkRecord:
    """A new ENQUEUED record enqueued at ``at`` (so due at ``at`` + initial_delay)."""
    request = OneTimeWorkRequest(worker, **kw)  # type: ignore[arg-type]
    return WorkRecord.from_request(request, now=at, unique_name=unique_name)


async def claim_due(
    store: Store, *, now: float = NOW, limit: int = 100, blocked: set[str] | None = None
) -> Claimed:
    params = ClaimParams(
        now=now, limit=limit, owner="me", blocked_signals=frozenset(blocked or ())
    )
    return await store.claim_due(params)


async def running(store: Store, work: WorkRecord, *, now: float = NOW) -> WorkRecord:
    """Insert ``work`` (due by ``now``) and claim it."""
    await store.insert([work])
    claimed = await claim_due(store, now=now)
    assert [r.id for r in claimed.records] == [work.id]
    return claimed.records[0]


def ids(records: list[WorkRecord]) -> list[str]:
    return [r.id for r in records]


# -- insert / get ----------------------------------------------------------------------------


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


async def test_get_skips_unknown_ids(store: Store) -> None:
    work = record()
    await store.insert([work])
    assert await store.get([]) == []
    assert await store.get([str(uuid.uuid4())]) == []
    assert await store.get([str(uuid.uuid4()), work.id]) == [work]


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


# -- claim_due ---------------------------------------------------------------------------------


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


# -- apply -------------------------------------------------------------------------------------


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


# -- query / prune -----------------------------------------------------------------------------


async def test_query_combines_fields(store: Store) -> None:
    a = record("w1", tags={"x"}, at=NOW - 4)
    b = record("w2", tags={"x", "y"}, at=NOW - 3)
    c = record("w2", unique_name="u1", at=NOW - 2)
    d = record("w3", unique_name="u2", at=NOW - 1)
    await store.insert([d, c, b, a])
    a_running = (await claim_due(store, limit=1)).records[0]
    assert a_running.id == a.id

    async def q(**fields: object) -> list[str]:
        return ids(await store.query(WorkQuery(**fields)))  # type: ignore[arg-type]

    assert await q(ids={c.id, a.id}) == [a.id, c.id]
    assert await q(tags={"x"}) == [a.id, b.id]
    assert await q(tags={"y", "w1"}) == [a.id, b.id]
    assert await q(tags={"w2"}) == [b.id, c.id]
    assert await q(tags={"x"}, states={WorkState.RUNNING}) == [a.id]
    assert await q(unique_names={"u1"}) == [c.id]
    assert await q(unique_names={"u1", "u2"}, tags={"w3"}) == [d.id]
    assert await q(states={WorkState.ENQUEUED}) == [b.id, c.id, d.id]
    assert await q(states={WorkState.RUNNING}) == [a.id]
    assert await q(states={WorkState.ENQUEUED, WorkState.RUNNING}) == [a.id, b.id, c.id, d.id]
    assert await q(states={WorkState.SUCCEEDED}) == []
    assert await q(ids={a.id}, tags={"y"}) == []
    assert await q(ids={b.id, c.id}, tags={"y"}, states={WorkState.ENQUEUED}) == [b.id]
    assert await q(ids={uuid.uuid4()}) == []
    assert (await store.query(WorkQuery(ids={a.id})))[0] == a_running


async def test_prune_deletes_old_finished_works_only(store: Store) -> None:
    old = await running(store, record("old", tags={"gone"}, at=NOW - 100), now=NOW)
    old_done = finish(old, Succeeded(), now=NOW)
    cancelled = cancel(record("c", at=NOW + 500), now=NOW + 1)
    assert cancelled is not None
    await store.insert([cancelled.before])
    recent = await running(store, record("recent", at=NOW - 50), now=NOW)
    recent_done = finish(recent, Failed(), now=NOW + 100)
    unfinished = record("enqueued", at=NOW + 1000)
    await store.insert([unfinished])
    assert len(await store.apply([old_done, cancelled, recent_done])) == 3

    assert await store.prune(finished_before=NOW + 50) == 2
    assert await store.prune(finished_before=NOW + 50) == 0

    remaining = [recent.id, unfinished.id]
    assert sorted(ids(await store.get([old.id, cancelled.before.id, *remaining]))) == sorted(
        remaining
    )
    assert await store.query(WorkQuery(tags={"gone"})) == []
    await store.insert([old])  # the id and its tags are free again
    assert ids(await store.query(WorkQuery(tags={"gone"}))) == [old.id]


# -- SQLite only -------------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "wm.db"


def _raw(path: Path, *statements: str) -> None:
    """Run statements on a plain sqlite3 connection (call in a worker thread)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


async def test_sqlite_works_survive_close_and_reopen(db_path: Path) -> None:
    work = record(input={"k": "v"})
    async with SQLiteStore(db_path) as store:
        await store.insert([work])
        claimed = await claim_due(store)
    async with SQLiteStore(str(db_path)) as store:
        assert await store.get([work.id]) == claimed.records


async def test_sqlite_creates_a_private_file(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.insert([record()])
        for path in (db_path, Path(f"{db_path}-wal")):
            assert os.stat(path).st_mode & 0o777 == 0o600, path


async def _bytes(path: Path) -> bytes:
    return await anyio.Path(path).read_bytes()


async def test_sqlite_rejects_a_file_that_is_not_sqlite(db_path: Path) -> None:
    data = b"important notes, not a database\n" * 100
    await anyio.Path(db_path).write_bytes(data)

    with pytest.raises(StoreCorruptError, match="not a SQLite database") as info:
        await SQLiteStore(db_path).open()

    assert str(db_path) in str(info.value)
    assert await _bytes(db_path) == data


async def test_sqlite_rejects_a_damaged_database(db_path: Path) -> None:
    data = schema.HEADER + os.urandom(8192)
    await anyio.Path(db_path).write_bytes(data)

    with pytest.raises(StoreCorruptError, match=re.escape(str(db_path))):
        await SQLiteStore(db_path).open()
    assert await _bytes(db_path) == data


async def test_sqlite_rejects_another_applications_database(db_path: Path) -> None:
    await anyio.to_thread.run_sync(_raw, db_path, "CREATE TABLE notes (body TEXT)")
    data = await _bytes(db_path)

    with pytest.raises(StoreCorruptError, match="not a wm_async database"):
        await SQLiteStore(db_path).open()
    assert await _bytes(db_path) == data


async def test_sqlite_rejects_a_newer_schema(db_path: Path) -> None:
    async with SQLiteStore(db_path):
        pass
    await anyio.to_thread.run_sync(_raw, db_path, "PRAGMA user_version = 99")
    data = await _bytes(db_path)

    with pytest.raises(StoreCorruptError, match="newer wm_async"):
        await SQLiteStore(db_path).open()
    assert await _bytes(db_path) == data


async def test_sqlite_schema_is_versioned(db_path: Path) -> None:
    versions = [n for n, _ in schema.migrations()]
    assert versions == list(range(1, len(versions) + 1))
    racers = [SQLiteStore(db_path), SQLiteStore(db_path)]
    async with anyio.create_task_group() as tg:  # two openers race to migrate
        for racer in racers:
            tg.start_soon(racer.open)
    for racer in racers:
        await racer.close()
    async with SQLiteStore(db_path) as store:
        assert store._writer is not None
        rows = await store._writer.execute_fetchall(
            "SELECT (SELECT user_version FROM pragma_user_version), "
            "(SELECT application_id FROM pragma_application_id), "
            "(SELECT journal_mode FROM pragma_journal_mode)"
        )
        assert list(rows) == [(versions[-1], schema.APPLICATION_ID, "wal")]


async def test_sqlite_reader_is_read_only(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        assert store._reader is not None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store._reader.execute_fetchall("DELETE FROM wm_work")


async def test_sqlite_store_that_is_not_open_raises(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.close()  # never opened: a no-op
    for _ in range(2):
        await store.open()
    await store.close()
    await store.close()
    operations = [
        store.insert([record()]),
        store.insert([]),
        claim_due(store),
        store.apply([]),
        store.get(["x"]),
        store.get([]),
        store.query(WorkQuery(tags={"t"})),
        store.prune(finished_before=NOW),
    ]
    for operation in operations:
        with pytest.raises(StoreError, match="store is not open"):
            await operation


def test_sqlite_store_arguments_are_checked() -> None:
    for path in (":memory:", ""):
        with pytest.raises(InvalidRequestError, match="path"):
            SQLiteStore(path)
    with pytest.raises(InvalidRequestError, match="synchronous"):
        SQLiteStore("x.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="busy_timeout"):
        SQLiteStore("x.db", busy_timeout=-1)
    assert repr(SQLiteStore("x.db", synchronous="FULL")) == "SQLiteStore('x.db')"


async def test_sqlite_group_commit_batches_concurrent_writes(db_path: Path) -> None:
    works = [record(at=NOW - i / 1000) for i in range(200)]
    async with SQLiteStore(db_path) as store:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for work in works:
                    tg.start_soon(store.insert, [work])
            inserts = store._commits
            claimed = (await claim_due(store, limit=500)).records
            written: list[WorkRecord] = []

            async def apply(change: Change) -> None:
                written.extend(await store.apply([change]))

            commits = store._commits
            async with anyio.create_task_group() as tg:
                for i, r in enumerate(claimed):
                    tg.start_soon(apply, finish(r, Succeeded({"i": i}), now=NOW + 1))
            applies = store._commits - commits

        assert inserts <= 5, inserts
        assert applies <= 5, applies
        assert len(written) == 200
        stored = await store.query(WorkQuery(states={WorkState.SUCCEEDED}))
        assert sorted(stored, key=lambda r: r.id) == sorted(written, key=lambda r: r.id)


async def test_sqlite_failing_write_fails_only_its_caller(db_path: Path) -> None:
    good = [record(), record()]
    bad = attrs.evolve(record(), max_attempts=2**70)  # too big for SQLite's INTEGER
    errors: list[BaseException] = []

    async def insert(work: WorkRecord) -> None:
        try:
            await store.insert([work])
        except StoreError as exc:
            errors.append(exc)

    async with SQLiteStore(db_path) as store:
        async with anyio.create_task_group() as tg:
            for work in (good[0], bad, good[1]):
                tg.start_soon(insert, work)
        assert [type(e) for e in errors] == [StoreError]
        assert "too large" in str(errors[0])
        assert str(db_path) in str(errors[0])
        assert sorted(ids(await store.get([w.id for w in [*good, bad]]))) == sorted(ids(good))


async def test_sqlite_cancelled_callers_leave_the_store_working(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        leader = record()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.insert([leader])  # a cancelled leader still finishes its batch
        assert await store.get([leader.id]) == [leader]

        victims = [record() for _ in range(20)]
        keepers = [record() for _ in range(20)]
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for work in keepers:
                    tg.start_soon(store.insert, [work])
                async with anyio.create_task_group() as doomed:
                    for work in victims:
                        doomed.start_soon(store.insert, [work])
                    await anyio.lowlevel.checkpoint()
                    doomed.cancel_scope.cancel()
            assert sorted(ids(await store.get(ids(keepers)))) == sorted(ids(keepers))
            assert (store._queue, store._busy) == ([], False)
            more = record()
            await store.insert([more])
            assert ids((await claim_due(store, limit=100)).records)[-1] == more.id


async def test_sqlite_busy_database_is_retried_then_reported(db_path: Path) -> None:
    async with SQLiteStore(db_path, busy_timeout=0.01) as store:
        connect = functools.partial(
            sqlite3.connect, db_path, isolation_level=None, check_same_thread=False
        )
        other = await anyio.to_thread.run_sync(connect)
        try:
            await anyio.to_thread.run_sync(other.execute, "BEGIN IMMEDIATE")
            work = record()
            with anyio.fail_after(5), pytest.raises(StoreError, match="locked") as info:
                await store.insert([work])
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            await anyio.to_thread.run_sync(other.execute, "ROLLBACK")
        finally:
            await anyio.to_thread.run_sync(other.close)
        await store.insert([work])
        assert await store.get([work.id]) == [work]


async def _plan(store: SQLiteStore, statement: str, args: object = ()) -> list[str]:
    assert store._writer is not None
    rows = await store._writer.execute_fetchall(f"EXPLAIN QUERY PLAN {statement}", args)
    return [row[3] for row in rows]


def _no_table_scan(plan: list[str]) -> bool:
    """No step reads a whole table ("SCAN t USING INDEX i" reads a partial index only)."""
    return not any(re.fullmatch(r"SCAN (wm_work|wm_work_tag|w)", step) for step in plan)


async def test_sqlite_hot_statements_use_indexes(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.insert([record(at=NOW - i) for i in range(50)])
        for blocked in (0, 2):
            args = {"now": NOW, "k": 10, **{f"b{i}": ",x," for i in range(blocked)}}
            plan = await _plan(store, schema.claim_sql(blocked), args)
            searches = [step for step in plan if step.startswith("SEARCH")]
            assert len(searches) == 4, plan  # due now and next due, expedited and ordinary
            assert all(
                "COVERING INDEX wm_work_due (expedited=? AND next_run_at" in s for s in searches
            ), plan
            assert _no_table_scan(plan), plan
        plans = {
            "claim update": await _plan(store, schema.CLAIM_UPDATE, (NOW, "me", "[1]")),
            "apply": await _plan(store, schema.apply_sql(4), [None] * 64),
            "prune tags": await _plan(store, schema.PRUNE_TAGS, (NOW,)),
            "prune works": await _plan(store, schema.PRUNE_WORKS, (NOW,)),
            "get": await _plan(store, schema.GET, ("[]",)),
            "tag query": await _plan(
                store,
                "SELECT id FROM wm_work WHERE id IN (SELECT work_id FROM wm_work_tag "
                "WHERE tag IN (SELECT value FROM json_each(?)))",
                ("[]",),
            ),
            "running": await _plan(store, "SELECT id FROM wm_work WHERE state = 'RUNNING'"),
        }
        expected = {
            "claim update": "INTEGER PRIMARY KEY",
            "apply": "sqlite_autoindex_wm_work_1",
            "prune tags": "wm_work_finished",
            "prune works": "wm_work_finished",
            "get": "sqlite_autoindex_wm_work_1",
            "tag query": "wm_work_tag USING PRIMARY KEY",
            "running": "wm_work_running",
        }
        for name, plan in plans.items():
            assert _no_table_scan(plan), (name, plan)
            assert any(expected[name] in s for s in plan), (name, plan)


async def test_sqlite_allows_one_scheduling_manager_per_file(tmp_path: Path) -> None:
    from wm_async.stores.sqlite import SQLiteStore

    path = tmp_path / "one.db"
    async with SQLiteStore(path) as first, SQLiteStore(path) as second:
        await first.lock_for_scheduler("first-owner")
        with pytest.raises(StoreError, match="first-owner"):
            await second.lock_for_scheduler("second-owner")
        await second.get([])  # reading the file is still fine (the CLI does)
    async with SQLiteStore(path) as third:
        await third.lock_for_scheduler("third-owner")  # released when first closed


@pytest.mark.parametrize("in_thread", [True, False], ids=["one-trip", "statement-by-statement"])
async def test_sqlite_transactions_behave_the_same_on_both_paths(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, in_thread: bool
) -> None:
    """A transaction runs whole in the connection's thread when aiosqlite exposes it, or
    statement by statement otherwise: inserts, claims, guarded applies, chains and a
    failing write that must roll back give the same results either way."""
    monkeypatch.setattr(sqlite_store, "_IN_THREAD", in_thread)
    async with SQLiteStore(db_path) as store:
        first, second = record(), record()
        child = record(input_merger=ArrayCreatingInputMerger)
        await store.insert([first, second])
        await store.insert([child], {child.id: [first.id, second.id]})
        claimed = (await claim_due(store)).records
        assert sorted(ids(claimed)) == sorted([first.id, second.id])
        done = [finish(r, Succeeded({"n": i}), now=NOW + 1) for i, r in enumerate(claimed)]
        written = await store.apply(done)
        by_id = {r.id: r for r in written}
        assert by_id[child.id].state is WorkState.ENQUEUED  # unblocked with the last one
        assert sorted(by_id[child.id].input["n"]) == [0, 1]  # type: ignore[arg-type,type-var]
        assert await store.apply(done) == []  # the guard: already applied
        bad = attrs.evolve(record(), max_attempts=2**70)  # too big for SQLite's INTEGER
        with pytest.raises(StoreError):
            await store.insert([record(), bad])
        stored = await store.query(WorkQuery(states=set(WorkState)))
        assert sorted(ids(stored)) == sorted([first.id, second.id, child.id])  # rolled back
