"""Shared fixtures: every store, a virtual clock, and a manager factory on both."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async.stores import Store
from wm_async.stores.memory import MemoryStore
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the PostgreSQL server (marker ``pg_restart``) disturb every
    other test using it: run them last, one after the other, once nothing else runs."""
    items.sort(key=lambda item: item.get_closest_marker("pg_restart") is not None)


def aiosqlite_threads() -> list[threading.Thread]:
    """The live worker threads of aiosqlite connections."""
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


#: The PostgreSQL server the tests use (each test gets a schema of its own).
PG_DSN = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_pg_status: list[str] = []  # [] untested, [""] reachable, [reason] unreachable


async def require_postgres() -> str:
    """The server's DSN; skip the test if no server answers (fail under ``CI=true``: a
    skipped PostgreSQL test in CI is a failure)."""
    if not _pg_status:
        try:
            import asyncpg

            conn = await asyncpg.connect(PG_DSN, timeout=5)
            await conn.close()
            _pg_status.append("")
        except Exception as exc:  # noqa: BLE001  # any failure means: no server to test on
            _pg_status.append(f"no PostgreSQL server at {PG_DSN} ({exc!r}); set WM_ASYNC_PG_DSN")
    if _pg_status[0]:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(_pg_status[0])
        pytest.skip(_pg_status[0])
    return PG_DSN


async def pg_execute(statement: str, *args: object) -> list[tuple[object, ...]]:
    """Run one statement on a fresh connection to the test server."""
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        return [tuple(row) for row in await conn.fetch(statement, *args)]
    finally:
        await conn.close()


class PgSchema:
    """A fresh schema (and application name, to find the test's connections) on the test
    server; :meth:`drop` removes it and checks that no connection was left open."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:12]
        self.name = f"wm_test_{tag}"
        self.app = f"wm_async_test_{tag}"

    def url(self, dsn: str = PG_DSN) -> str:
        """The store URL for this schema."""
        sep = "&" if "?" in dsn else "?"
        return f"{dsn}{sep}schema={self.name}&application_name={self.app}"

    async def connections(self) -> int:
        """How many server connections the code under test holds open."""
        rows = await pg_execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.app
        )
        value = rows[0][0]
        assert isinstance(value, int)
        return value

    async def drop(self, *, check_leaks: bool = True) -> None:
        """Drop the schema; fail if connections are left (after a grace for the server to
        notice closed ones)."""
        leaked = 0
        if check_leaks:
            for _ in range(100):  # the server notices closed connections soon, not at once
                leaked = await self.connections()
                if not leaked:
                    break
                await anyio.sleep(0.05)
        await pg_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            self.app,
        )
        await pg_execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        assert leaked == 0, f"{leaked} PostgreSQL connection(s) left open"


@pytest.fixture
async def schema() -> AsyncIterator[PgSchema]:
    """A fresh schema on the test server, dropped afterwards."""
    await require_postgres()
    fresh = PgSchema()
    try:
        yield fresh
    finally:
        await fresh.drop()


STORE_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each kind; the SQLite one must leave no connection thread behind,
    the PostgreSQL one (a fresh schema, dropped afterwards) no connection."""
    if request.param == "postgres":
        await require_postgres()
        from wm_async.stores.postgres import PostgresStore

        schema = PgSchema()
        try:
            async with PostgresStore(schema.url(), pool_size=4) as postgres:
                yield postgres
        finally:
            await schema.drop()
        return
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
        return
    before = set(aiosqlite_threads())
    async with SQLiteStore(tmp_path / "wm.db") as sqlite:
        yield sqlite
    with anyio.fail_after(5):
        for thread in set(aiosqlite_threads()) - before:
            await anyio.to_thread.run_sync(thread.join, 5)
    assert set(aiosqlite_threads()) <= before, "SQLiteStore.close() left a connection open"


@pytest.fixture(params=STORE_KINDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh store of each kind (the semantic suites run on all)."""
    if request.param == "postgres":
        await require_postgres()
        schema = PgSchema()
        try:
            yield schema.url()
        finally:
            await schema.drop()
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/wm.db"
    else:
        yield "memory://"


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock at 2030-01-01T00:00Z."""
    return VirtualClock()


@pytest.fixture
def make_manager(store_url: str, clock: VirtualClock) -> MakeManager:
    """Builds managers on the test's store and virtual clock; keyword overrides apply."""

    def make(**overrides: object) -> wm.WorkManager:
        # shutdown_grace=0: leaving `async with` waits the grace on the virtual clock,
        # which only the test moves; tests of the grace period set it themselves.
        options: dict[str, object] = {"store": store_url, "clock": clock, "shutdown_grace": 0}
        options.update(overrides)
        return wm.WorkManager(**options)  # type: ignore[arg-type]

    return make
