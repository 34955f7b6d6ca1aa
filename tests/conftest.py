"""Shared fixtures: every store, a virtual clock, and a manager factory on both."""

from __future__ import annotations

import threading
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


def aiosqlite_threads() -> list[threading.Thread]:
    """The live worker threads of aiosqlite connections."""
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each kind; the SQLite one must leave no connection thread behind."""
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


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store of each kind (the semantic suites run on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/wm.db"
    return "memory://"


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
