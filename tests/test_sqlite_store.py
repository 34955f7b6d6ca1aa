"""SQLiteStore's own behaviour: its file, schema, group commit, query plans and
transactions (the store conformance suite, which it passes too, runs in
tests/test_store_conformance.py)."""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from pathlib import Path

import anyio
import attrs
import pytest

from wm_async._core.errors import (
    InvalidRequestError,
    StoreCorruptError,
    StoreError,
)
from wm_async._core.lifecycle import (
    Change,
    Succeeded,
    finish,
)
from wm_async._core.mergers import ArrayCreatingInputMerger
from wm_async._core.model import (
    WorkQuery,
    WorkState,
)
from wm_async._core.record import WorkRecord
from wm_async.stores import _sqlite_ops as sqlite_store
from wm_async.stores import _sqlite_sql as schema
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing.conformance._helpers import (
    NOW,
    claim_due,
    ids,
    record,
)


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


async def test_sqlite_insert_waits_for_another_process_lock_without_blocking_the_loop(
    db_path: Path,
) -> None:
    # A lone small insert commits on the loop's thread, but never waits for a lock
    # there: while another connection holds the write lock, the loop keeps running.
    async with SQLiteStore(db_path, busy_timeout=30) as store:
        connect = functools.partial(
            sqlite3.connect, db_path, isolation_level=None, check_same_thread=False
        )
        other = await anyio.to_thread.run_sync(connect)
        work = record()
        done = anyio.Event()
        turns = 0

        async def insert() -> None:
            await store.insert([work])
            done.set()

        try:
            await anyio.to_thread.run_sync(other.execute, "BEGIN IMMEDIATE")
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(insert)
                    while turns < 200:  # the loop turns while the insert waits
                        assert not done.is_set()
                        turns += 1
                        await anyio.sleep(0.001)
                    await anyio.to_thread.run_sync(other.execute, "ROLLBACK")
                    await done.wait()
        finally:
            await anyio.to_thread.run_sync(other.close)
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
            # Two levels: (ordinary, priority 0) and (expedited, priority 3).
            args = {"now": NOW, "k": 10, **{f"b{i}": ",x," for i in range(blocked)}}
            args.update(e0=1, p0=3, e1=0, p1=0)
            plan = await _plan(store, schema.claim_sql(blocked, 2), args)
            searches = [step for step in plan if step.startswith("SEARCH")]
            assert all("COVERING INDEX wm_work_due (expedited=?" in s for s in searches), plan
            due = [s for s in searches if "AND priority=? AND next_run_at" in s]
            assert len(due) == 4, plan  # due now and next due, of each level
            assert len(searches) == 7, plan  # and the levels there are (3 seeks)
            assert _no_table_scan(plan), plan
        levels = await _plan(store, schema.CLAIM_LEVELS)
        assert all(
            "COVERING INDEX wm_work_due (expedited=?" in step
            for step in levels
            if step.startswith("SEARCH")
        ), levels
        assert sum(step.startswith("SEARCH") for step in levels) == 3, levels
        assert _no_table_scan(levels), levels
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
            # (Either RUNNING index: the partial one, or the dashboard's state index.)
            "running": "wm_work_",
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
