"""Transactional enqueue: ``enqueue(..., connection=conn)``, ``enqueue_unique_work(...,
connection=conn)`` and ``continuation.enqueue(connection=conn)`` write the works in the
app's own asyncpg transaction (PostgreSQL): stored and announced at its COMMIT, never
before; nothing stored, run or announced after a ROLLBACK or a crash of the app's
process; a typed error for a connection the store cannot write through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from anyio.abc import TaskStatus
from conftest import PG_DSN, PgSchema, pg_execute

import wm_async as wm

asyncpg = pytest.importorskip("asyncpg")
from wm_async.stores.postgres import PostgresStore  # after the skip: needs asyncpg

pg = pytest.mark.postgres
CHILD = Path(__file__).with_name("_tx_child.py")


@pytest.fixture
async def pool(schema: PgSchema) -> AsyncIterator[Any]:
    """The app's own connection pool (named as the test's, so a leak is caught)."""
    app_pool = await asyncpg.create_pool(
        PG_DSN, min_size=1, max_size=4, server_settings={"application_name": schema.app}
    )
    try:
        yield app_pool
    finally:
        with anyio.fail_after(10):
            await app_pool.close()


def _manager(schema: PgSchema, *, poll_interval: float = 30) -> wm.WorkManager:
    # Polls every 30 s by default: a work that starts within 10 s of the COMMIT was
    # started by the commit's notification.
    return wm.WorkManager(
        PostgresStore(schema.url(), poll_interval=poll_interval, pool_size=4), shutdown_grace=0
    )


async def _make_orders(schema: PgSchema) -> None:
    """The app's own table, written in the same transactions as the enqueues."""
    await pg_execute(f'CREATE TABLE IF NOT EXISTS "{schema.name}".orders (id text PRIMARY KEY)')


async def _count(statement: str, *args: object) -> int:
    return int(str((await pg_execute(statement, *args))[0][0]))


async def _stored(schema: PgSchema, *ids: uuid.UUID) -> int:
    """How many of the works ``ids`` another connection sees (committed)."""
    return await _count(
        f'SELECT count(*) FROM "{schema.name}".wm_work WHERE id = ANY($1::text[])',
        [str(i) for i in ids],
    )


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Return once ``check()`` holds, polling (another session's or process's state:
    there is nothing to wait on)."""
    while True:
        if await check():
            return
        await anyio.sleep(0.05)


class _Heard:
    """What a LISTEN connection of the test's own hears on the store's channel."""

    def __init__(self, schema: PgSchema) -> None:
        self.channel = f"wm_async:{schema.name}"
        self.payloads: list[str] = []
        self._arrived = anyio.Event()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.payloads.append(payload)
        self._arrived.set()

    def mentions(self, *ids: uuid.UUID) -> bool:
        """Whether an announcement named one of the works ``ids``."""
        return any(str(i) in p for p in self.payloads for i in ids)

    async def barrier(self) -> None:
        """Return once a notification sent now by another session has arrived: every
        announcement committed before it has arrived by then (PostgreSQL delivers
        notifications in the order their transactions committed)."""
        token = f"barrier-{uuid.uuid4().hex}"
        await pg_execute("SELECT pg_notify($1, $2)", self.channel, token)
        while token not in self.payloads:
            await self._arrived.wait()
            self._arrived = anyio.Event()


async def _listen(
    schema: PgSchema, heard: _Heard, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """LISTEN on the store's channel for ``heard`` until cancelled."""
    conn = await asyncpg.connect(PG_DSN, server_settings={"application_name": schema.app})
    try:
        await conn.add_listener(heard.channel, heard._on_notify)
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True), anyio.fail_after(10):
            await conn.close()


# -- commit -------------------------------------------------------------------------------


@pg
async def test_a_work_is_hidden_until_the_app_commits_then_wakes_another_manager(
    schema: PgSchema, pool: Any
) -> None:
    worker_side, producer = _manager(schema), _manager(schema)
    # The work needs a signal that holds only on the worker's side: the producer (which
    # enqueues it) cannot run it.
    here = wm.signals.Flag()
    here.set()
    worker_side.register_signal("side", here)
    producer.register_signal("side", wm.signals.Flag())
    ran = anyio.Event()

    @worker_side.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.set()

    producer.register_worker("w", work)
    request = wm.OneTimeWorkRequest("w", constraints=wm.Constraints(signals={"side"}))
    heard = _Heard(schema)
    with anyio.fail_after(60):
        async with worker_side, producer, anyio.create_task_group() as tg:
            await tg.start(_listen, schema, heard)
            await _make_orders(schema)
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute(f'INSERT INTO "{schema.name}".orders VALUES ($1)', "o1")
                    await producer.enqueue(request, connection=conn)
                    # Not visible outside the app's transaction, so nobody can claim it...
                    assert await _stored(schema, request.id) == 0
                    assert await worker_side.get_work_info(request.id) is None
                    assert await producer.get_work_info(request.id) is None
                    # ...and not announced: an announcement sent by any transaction
                    # committed before this barrier would have arrived before it.
                    await heard.barrier()
                    assert not heard.mentions(request.id)
                    assert not ran.is_set()
                with anyio.fail_after(10):  # the workers poll every 30 s
                    await ran.wait()
            got = await producer.wait(request.id)
            tg.cancel_scope.cancel()
    assert got.state is wm.WorkState.SUCCEEDED
    assert heard.mentions(request.id)
    assert await _count(f'SELECT count(*) FROM "{schema.name}".orders') == 1


@pg
async def test_the_enqueuing_process_hears_the_commit_and_runs_the_work(
    schema: PgSchema, pool: Any
) -> None:
    """The manager that enqueued in the app's transaction published nothing then; its
    own change feed hears the commit's announcement, so the work runs at once (its poll
    is 30 s away) and ``watch()`` and ``wait()`` see it."""
    manager = _manager(schema)
    ran: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        ran.append(str(ctx.id))
        return wm.Result.success({"done": True})

    request = wm.OneTimeWorkRequest("w", tags={"tx"})
    seen: list[wm.WorkState] = []
    with anyio.fail_after(60):
        async with manager, manager.watch(wm.WorkQuery(tags={"tx"})) as infos:
            async with pool.acquire() as conn, conn.transaction():
                await manager.enqueue(request, connection=conn)
                assert await manager.get_work_info(request.id) is None
            with anyio.fail_after(10):
                async for info in infos:
                    seen.append(info.state)
                    if info.is_finished:
                        break
            got = await manager.wait(request.id)
    assert got.state is wm.WorkState.SUCCEEDED
    assert dict(got.output) == {"done": True}
    assert seen[-1] is wm.WorkState.SUCCEEDED
    assert ran == [str(request.id)]


# -- rollback and crash -------------------------------------------------------------------


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # Output goes to a file: a pipe nobody reads would fill up and block the child.
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(CHILD.parent.parent)},
        )


@pg
async def test_a_rolled_back_enqueue_stores_runs_and_announces_nothing(
    schema: PgSchema, pool: Any
) -> None:
    manager = _manager(schema, poll_interval=0.2)
    ran: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(str(ctx.id))

    lost = wm.OneTimeWorkRequest("w")
    lost_unique = wm.OneTimeWorkRequest("w")
    lost_chain = manager.begin_with(wm.OneTimeWorkRequest("w")).then(wm.OneTimeWorkRequest("w"))
    heard = _Heard(schema)
    with anyio.fail_after(60):
        async with manager, anyio.create_task_group() as tg:
            await tg.start(_listen, schema, heard)
            await _make_orders(schema)
            async with pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                await conn.execute(f'INSERT INTO "{schema.name}".orders VALUES (1)')
                await manager.enqueue(lost, connection=conn)
                assert await manager.enqueue_unique_work(
                    "name", "KEEP", lost_unique, connection=conn
                )
                await lost_chain.enqueue(connection=conn)
                await transaction.rollback()
            ids = (lost.id, lost_unique.id, *lost_chain.ids)
            await heard.barrier()
            assert not heard.mentions(*ids)
            assert await _stored(schema, *ids) == 0
            for work_id in ids:
                assert await manager.get_work_info(work_id) is None
            assert await manager.get_work_infos(wm.WorkQuery(unique_names={"name"})) == []
            # A work enqueued now runs; a rolled-back one (due earlier) would have run
            # with or before it.
            marker = wm.OneTimeWorkRequest("w")
            await manager.enqueue(marker)
            await manager.wait(marker.id)
            tg.cancel_scope.cancel()
    assert ran == [str(marker.id)]
    assert await _count(f'SELECT count(*) FROM "{schema.name}".orders') == 0


@pg
async def test_an_app_killed_before_its_commit_leaves_nothing_stored(
    schema: PgSchema, tmp_path: Path
) -> None:
    """A real app process enqueues a work and a unique work in its transaction and is
    SIGKILLed before it commits: nothing is stored, the unique name is free (its lock
    went with the transaction), and a worker runs only what is enqueued later."""
    manager = _manager(schema, poll_interval=0.2)
    ran: list[str] = []

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        ran.append(str(ctx.id))

    work, unique = uuid.uuid4(), uuid.uuid4()
    child_app = f"{schema.app}c"  # the child's connections, told apart from the test's
    sep = "&" if "?" in PG_DSN else "?"
    log = tmp_path / "child.log"
    with anyio.fail_after(90):
        async with manager:
            await _make_orders(schema)
            args = [
                "--url", f"{PG_DSN}{sep}schema={schema.name}&application_name={child_app}",
                "--dsn", f"{PG_DSN}{sep}application_name={child_app}",
                "--schema", schema.name, "--work", str(work),
                "--unique-work", str(unique), "--name", "the-name",
            ]  # fmt: skip
            child = _spawn(args, log)
            try:

                async def enqueued() -> bool:
                    assert child.poll() is None, log.read_text(errors="replace")
                    return "enqueued" in log.read_text(errors="replace")

                await _until(enqueued)
                assert await _stored(schema, work, unique) == 0  # not committed
                child.send_signal(signal.SIGKILL)
                await anyio.to_thread.run_sync(child.wait, abandon_on_cancel=True)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()

            async def child_gone() -> bool:  # its backends end (and roll back) at EOF
                return not await _count(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    child_app,
                )

            await _until(child_gone)
            assert await _stored(schema, work, unique) == 0
            assert await _count(f'SELECT count(*) FROM "{schema.name}".orders') == 0
            # The name is free: a KEEP enqueues (it would wait for a held lock, or keep
            # a stored work).
            later = wm.OneTimeWorkRequest("job")
            assert await manager.enqueue_unique_work("the-name", "KEEP", later)
            await manager.wait(later.id)
    assert ran == [str(later.id)]
    assert child.returncode == -signal.SIGKILL


# -- unique work and chains ---------------------------------------------------------------


async def _lock_waiters(schema: PgSchema) -> int:
    """How many of the test's sessions wait for an advisory lock."""
    return await _count(
        "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = $1",
        schema.app,
    )


@pg
async def test_a_unique_enqueue_in_a_transaction_holds_the_name_until_commit(
    schema: PgSchema, pool: Any
) -> None:
    manager = _manager(schema, poll_interval=0.2)
    ran: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(str(ctx.id))

    first, second = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w")
    results: list[bool] = []

    async def keep_second() -> None:
        results.append(await manager.enqueue_unique_work("name", "KEEP", second))

    with anyio.fail_after(60):
        async with manager:

            async def waiting() -> bool:
                return await _lock_waiters(schema) == 1

            # The transaction commits first, then the task group waits for the other
            # enqueue.
            async with (
                anyio.create_task_group() as tg,
                pool.acquire() as conn,
                conn.transaction(),
            ):
                assert await manager.enqueue_unique_work("name", "KEEP", first, connection=conn)
                tg.start_soon(keep_second)
                # The other enqueue waits for the name's lock, which the app's
                # transaction holds, and once it commits sees the first work and keeps it.
                await _until(waiting)
                assert results == []
            done = await manager.wait(first.id)
    assert results == [False]
    assert done.state is wm.WorkState.SUCCEEDED
    assert ran == [str(first.id)]


@pg
async def test_a_replace_in_a_transaction_stops_the_running_work_only_at_commit(
    schema: PgSchema, pool: Any
) -> None:
    manager = _manager(schema)
    started, stopped = anyio.Event(), anyio.Event()
    reasons: list[wm.StopReason] = []

    @manager.worker("hold")
    async def hold(ctx: wm.WorkContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            reasons.append(ctx.stop_reason)
            stopped.set()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    old = wm.OneTimeWorkRequest("hold")
    rolled_back, new = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w")
    with anyio.fail_after(60):
        async with manager:
            await manager.enqueue_unique_work("name", "REPLACE", old)
            await started.wait()
            async with pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                assert await manager.enqueue_unique_work(
                    "name", "REPLACE", rolled_back, connection=conn
                )
                await transaction.rollback()
                async with conn.transaction():
                    assert await manager.enqueue_unique_work(
                        "name", "REPLACE", new, connection=conn
                    )
                    info = await manager.get_work_info(old.id)
                    assert info is not None
                    assert info.state is wm.WorkState.RUNNING  # outside, until the commit
                    assert not stopped.is_set()
                with anyio.fail_after(10):  # the commit's notification: the poll is 30 s
                    await stopped.wait()
            got = await manager.wait(new.id)
            assert await manager.get_work_info(old.id) is None  # REPLACE deletes it
            assert await manager.get_work_info(rolled_back.id) is None
    assert reasons == [wm.StopReason.CANCELLED_BY_APP]
    assert got.state is wm.WorkState.SUCCEEDED


@pg
async def test_chains_in_a_transaction_commit_with_it(schema: PgSchema, pool: Any) -> None:
    manager = _manager(schema, poll_interval=0.2)
    order: list[str] = []
    inputs: dict[str, dict[str, object]] = {}

    @manager.worker("step")
    async def step(ctx: wm.WorkContext) -> wm.Result:
        name = str(ctx.input["name"])
        order.append(name)
        inputs[name] = dict(ctx.input)
        return wm.Result.success({name: True})

    def req(name: str) -> wm.OneTimeWorkRequest:
        return wm.OneTimeWorkRequest("step", input={"name": name})

    a, b = req("a"), req("b")
    chain = manager.begin_with(a).then(b)
    x, y, z = req("x"), req("y"), req("z")
    with anyio.fail_after(60):
        async with manager:
            async with pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                await chain.enqueue(connection=conn)
                await transaction.rollback()
                assert await _stored(schema, *chain.ids) == 0
                async with conn.transaction():
                    # The same continuation: its steps were not marked as enqueued.
                    await chain.enqueue(connection=conn)
                    # A unique chain, and an APPEND to it that sees its works in the
                    # same transaction.
                    unique = manager.begin_unique_work("c", "APPEND", x).then(y)
                    await unique.enqueue(connection=conn)
                    assert await manager.enqueue_unique_work("c", "APPEND", z, connection=conn)
                    assert await _stored(schema, *chain.ids, x.id, y.id, z.id) == 0
            got_b = await manager.wait(b.id)
            got_z = await manager.wait(z.id)
            # Committed: enqueueing the continuation again finds its works there.
            with pytest.raises(wm.InvalidRequestError, match="already exists"):
                await chain.enqueue()
    assert got_b.state is wm.WorkState.SUCCEEDED
    assert inputs["b"] == {"name": "b", "a": True}  # a's output merged into b's input
    assert got_z.state is wm.WorkState.SUCCEEDED
    assert order.index("a") < order.index("b")
    assert order.index("x") < order.index("y") < order.index("z")


# -- typed errors -------------------------------------------------------------------------


@pg
async def test_a_connection_the_store_cannot_write_through_is_refused(
    schema: PgSchema, pool: Any
) -> None:
    manager = _manager(schema)
    manager.register_worker("w", lambda ctx: None)
    request = wm.OneTimeWorkRequest("w")

    async def refused(connection: object, match: str, *, unique: bool = False) -> None:
        call = (
            manager.enqueue_unique_work("n", "KEEP", request, connection=connection)
            if unique
            else manager.enqueue(request, connection=connection)
        )
        with pytest.raises(wm.InvalidRequestError, match=match) as caught:
            await call
        assert caught.value.field == "connection"
        assert await _stored(schema, request.id) == 0

    with anyio.fail_after(60):
        async with manager:
            await refused(object(), "expected an asyncpg connection")
            async with pool.acquire() as conn:
                await refused(conn, "not in a transaction")
                async with conn.transaction(readonly=True):
                    await refused(conn, "read-only")
                async with conn.transaction(isolation="repeatable_read"):
                    await refused(conn, "REPEATABLE READ", unique=True)
                    await conn.execute("SELECT 1")  # the transaction goes on
                transaction = conn.transaction()
                await transaction.start()
                with pytest.raises(asyncpg.DivisionByZeroError):
                    await conn.execute("SELECT 1 / 0")
                await refused(conn, "its transaction has failed")
                await transaction.rollback()
            await refused(conn, "cannot be used")  # released to the pool
            # A plain enqueue under REPEATABLE READ is fine (no snapshot decides it).
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                await manager.enqueue(request, connection=conn)
            assert await _stored(schema, request.id) == 1


@pg
async def test_a_connection_to_another_database_is_refused(schema: PgSchema) -> None:
    """The app's connection goes to another database of the server: without the store's
    schema there, then with a schema of the same name (another app's copy)."""
    parts = urlsplit(PG_DSN)
    if parts.path.strip("/") == "postgres":
        pytest.skip("the tests' database is 'postgres': no other database to connect to")
    other_dsn = urlunsplit(parts._replace(path="/postgres"))
    manager = _manager(schema)
    manager.register_worker("w", lambda ctx: None)
    request = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(60):
        async with manager:
            other = await asyncpg.connect(
                other_dsn, server_settings={"application_name": schema.app}
            )
            try:
                async with other.transaction():
                    with pytest.raises(wm.InvalidRequestError, match="has no table") as e:
                        await manager.enqueue(request, connection=other)
                    assert e.value.field == "connection"
                async with PostgresStore(other_dsn, schema=schema.name):
                    pass  # the same schema, in the other database
                async with other.transaction():
                    with pytest.raises(wm.InvalidRequestError, match="its database is") as e:
                        await manager.enqueue(request, connection=other)
                    assert e.value.field == "connection"
                    assert (
                        await other.fetchval(f'SELECT count(*) FROM "{schema.name}".wm_work') == 0
                    )
            finally:
                await other.execute(f'DROP SCHEMA IF EXISTS "{schema.name}" CASCADE')
                await other.close()
            assert await _stored(schema, request.id) == 0


@pg
async def test_a_failed_enqueue_leaves_the_app_transaction_usable(
    schema: PgSchema, pool: Any
) -> None:
    manager = _manager(schema)
    manager.register_worker("w", lambda ctx: None)
    taken, fresh = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w")
    with anyio.fail_after(60):
        async with manager:
            await _make_orders(schema)
            await manager.enqueue(taken)
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f'INSERT INTO "{schema.name}".orders VALUES (1)')
                with pytest.raises(wm.InvalidRequestError, match="already exists"):
                    await manager.enqueue(fresh, taken, connection=conn)
                # The failed write was undone, not the app's: its transaction goes on.
                await conn.execute(f'INSERT INTO "{schema.name}".orders VALUES (2)')
                await manager.enqueue(fresh, connection=conn)
            assert await _stored(schema, fresh.id) == 1
    assert await _count(f'SELECT count(*) FROM "{schema.name}".orders') == 2


@pg
async def test_a_cancelled_enqueue_leaves_the_app_transaction_as_it_was(
    schema: PgSchema, pool: Any
) -> None:
    """An app's timeout cancels an enqueue waiting for a unique name's lock (another
    app transaction holds it): the app's transaction goes on, and its commit stores
    its own rows, not the cancelled enqueue's."""
    manager = _manager(schema)
    manager.register_worker("w", lambda ctx: None)
    holder, late = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w")

    async def waiting() -> bool:
        return await _lock_waiters(schema) == 1

    with anyio.fail_after(60):
        async with manager:
            await _make_orders(schema)
            async with pool.acquire() as other, pool.acquire() as conn:
                held = other.transaction()
                await held.start()
                assert await manager.enqueue_unique_work("n", "KEEP", holder, connection=other)
                async with conn.transaction():
                    await conn.execute(f'INSERT INTO "{schema.name}".orders VALUES (1)')
                    with anyio.CancelScope() as scope:
                        async with anyio.create_task_group() as tg:

                            async def time_out() -> None:
                                await _until(waiting)
                                scope.cancel()

                            tg.start_soon(time_out)
                            await manager.enqueue_unique_work("n", "KEEP", late, connection=conn)
                    assert scope.cancelled_caught
                    await conn.execute(f'INSERT INTO "{schema.name}".orders VALUES (2)')
                await held.rollback()
            assert await _stored(schema, holder.id, late.id) == 0
    assert await _count(f'SELECT count(*) FROM "{schema.name}".orders') == 2


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_stores_other_than_postgres_refuse_a_connection(kind: str, tmp_path: Path) -> None:
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path}/wm.db"
    manager = wm.WorkManager(url, shutdown_grace=0)
    manager.register_worker("w", lambda ctx: None)
    request = wm.OneTimeWorkRequest("w")
    connection = object()  # what the app would pass: refused whatever it is
    with anyio.fail_after(30):
        async with manager:
            for call in (
                lambda: manager.enqueue(request, connection=connection),
                lambda: manager.enqueue_unique_work("n", "KEEP", request, connection=connection),
                lambda: manager.begin_with(request).enqueue(connection=connection),
            ):
                with pytest.raises(wm.InvalidRequestError, match="cannot enqueue inside") as e:
                    await call()
                assert e.value.field == "connection"
            assert await manager.get_work_info(request.id) is None
            await manager.enqueue(request)  # and without it, as ever
            assert await manager.get_work_info(request.id) is not None
