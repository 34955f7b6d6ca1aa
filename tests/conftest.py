from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from wm_async.stores import Store
from wm_async.stores.memory import MemoryStore
from wm_async.stores.sqlite import SQLiteStore


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
