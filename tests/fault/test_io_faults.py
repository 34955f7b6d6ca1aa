"""I/O faults: a full disk, a read-only file, a database locked by another process, a
file that is not a wm_async database, and a store that fails for a while. Each gives a
typed StoreError at the call that hit it, the manager keeps running (or refuses to start
on a file it must not touch), and nothing already stored is lost or corrupted."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async._core.lifecycle import Change
from wm_async._core.record import WorkRecord
from wm_async.stores._base import (
    Claimed,
    ClaimParams,
)
from wm_async.stores.memory import MemoryStore
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing import VirtualClock

S = wm.WorkState


def count_works(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(conn.execute("SELECT count(*) FROM wm_work").fetchone()[0])


def register_noop(manager: wm.WorkManager) -> list[str]:
    ran: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(str(ctx.id))

    return ran


async def test_disk_full_fails_the_enqueue_only_and_the_manager_goes_on(
    tmp_path: Path, clock: VirtualClock
) -> None:
    db = tmp_path / "wm.db"
    store = SQLiteStore(db)
    manager = wm.WorkManager(store, clock=clock, shutdown_grace=0)
    ran = register_noop(manager)
    early = [wm.OneTimeWorkRequest("w", initial_delay=60) for _ in range(10)]
    big = [wm.OneTimeWorkRequest("w", input={"blob": "x" * 8000}) for _ in range(200)]
    async with manager:
        await manager.enqueue(*early)
        # SQLite's page quota stands in for a full disk: the same SQLITE_FULL error.
        writer = store._writer
        assert writer is not None
        pages = next(iter(await writer.execute_fetchall("PRAGMA page_count")))[0]
        await writer.execute_fetchall(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(wm.StoreFullError, match="free disk space"):
            await manager.enqueue(*big)
        assert len(await manager.get_work_infos(wm.WorkQuery(states=set(S)))) == 10
        assert manager.state is wm.RunState.STARTED
        await clock.advance(60)  # the stored works still run
        assert len(ran) == 10
        await writer.execute_fetchall("PRAGMA max_page_count = 1073741823")
        await manager.enqueue(*big)  # room again: the same call now succeeds
        await clock.advance(0)
        assert len(ran) == 210
    assert count_works(db) == 210


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (chattr +i), or skip."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o600)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make a file read-only as root here: {done.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_a_read_only_database_refuses_writes_and_keeps_its_works(
    tmp_path: Path, clock: VirtualClock
) -> None:
    db = tmp_path / "wm.db"
    first = wm.WorkManager(f"sqlite:///{db}", clock=clock, shutdown_grace=0)
    register_noop(first)
    async with first:
        await first.enqueue(*[wm.OneTimeWorkRequest("w", initial_delay=60) for _ in range(5)])
    before = db.read_bytes()
    with read_only(db):
        manager = wm.WorkManager(f"sqlite:///{db}", clock=clock, shutdown_grace=0)
        register_noop(manager)
        with pytest.raises(wm.StoreReadOnlyError, match="read-only"):
            async with manager:
                await manager.enqueue(wm.OneTimeWorkRequest("w"))
        assert manager.state is wm.RunState.STOPPED
    assert db.read_bytes() == before
    assert count_works(db) == 5


HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("ROLLBACK")
    """
)


async def test_a_database_locked_by_another_process_is_retried_then_reported(
    tmp_path: Path,
) -> None:
    db = tmp_path / "wm.db"
    store = SQLiteStore(db, busy_timeout=0.1)
    manager = wm.WorkManager(store, shutdown_grace=0)
    ran = register_noop(manager)
    async with manager:
        await manager.enqueue(wm.OneTimeWorkRequest("w"))
        async with await anyio.open_process(
            [sys.executable, "-c", HOLD_LOCK, str(db), "3"]
        ) as holder:
            assert holder.stdout is not None
            assert (await holder.stdout.receive()).strip() == b"locked"
            started = time.monotonic()
            with pytest.raises(wm.StoreBusyError, match="another process"):
                await manager.enqueue(wm.OneTimeWorkRequest("w"))
            assert time.monotonic() - started < 3  # bounded: not until the lock goes
            await holder.wait()
        late = wm.OneTimeWorkRequest("w")
        await manager.enqueue(late)  # the lock is gone: the store works again
        info = await manager.wait(late.id)
        assert info.state is S.SUCCEEDED
        assert manager.state is wm.RunState.STARTED
    assert len(ran) == 2
    assert count_works(db) == 2


@pytest.mark.parametrize("damage", ["garbage", "newer schema", "other application"])
async def test_the_manager_refuses_a_file_it_must_not_use_and_leaves_it_untouched(
    tmp_path: Path, damage: str
) -> None:
    db = tmp_path / "wm.db"
    if damage == "garbage":
        db.write_bytes(os.urandom(8192))
    else:
        with sqlite3.connect(db) as conn:
            if damage == "newer schema":
                conn.execute(f"PRAGMA application_id = {0x776D6173}")
                conn.execute("PRAGMA user_version = 999")
            conn.execute("CREATE TABLE notes (x)")
    before = db.read_bytes()
    manager = wm.WorkManager(f"sqlite:///{db}")
    with pytest.raises(wm.StoreCorruptError, match="untouched"):
        async with manager:
            pass
    assert manager.state is wm.RunState.STOPPED
    assert db.read_bytes() == before


class FlakyStore(MemoryStore):
    """A memory store whose claims and applies fail while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failures = 0

    def _check(self) -> None:
        if self.down:
            self.failures += 1
            raise wm.StoreError("the store is down (test)")

    async def claim_due(self, params: ClaimParams) -> Claimed:
        self._check()
        return await super().claim_due(params)

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        self._check()
        return await super().apply(changes)


async def test_the_scheduler_rides_out_a_failing_store(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    manager = wm.WorkManager(store, clock=clock, shutdown_grace=0)
    release = anyio.Event()
    ran: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(str(ctx.id))
        await release.wait()

    first = wm.OneTimeWorkRequest("w")
    later = [wm.OneTimeWorkRequest("w", initial_delay=10) for _ in range(3)]
    caplog.set_level(logging.WARNING, logger="wm_async")
    async with manager:
        await manager.enqueue(first, *later)
        await clock.settle()
        assert len(ran) == 1
        store.down = True
        release.set()  # its result cannot be recorded yet
        await clock.advance(15)  # claims fail too
        assert store.failures >= 2
        assert len(ran) == 1
        assert manager.state is wm.RunState.STARTED
        store.down = False
        await clock.advance(5)
        infos = await manager.get_work_infos(wm.WorkQuery(states=set(S)))
    assert {i.state for i in infos} == {S.SUCCEEDED}
    assert len(ran) == 4
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per outage, not once per retry
    assert "store failed" in errors[0].getMessage()
    assert any("store recovered" in r.getMessage() for r in caplog.records)


class PickyStore(MemoryStore):
    """A memory store that refuses every write touching the ``refused`` works, and
    counts the applies it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: set[str] = set()
        self.applies: list[int] = []

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        self.applies.append(len(changes))
        if any(c.before.id in self.refused for c in changes):
            raise wm.StoreError("refused (test)")
        return await super().apply(changes)


async def test_a_result_the_store_refuses_holds_up_only_its_own_run(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Results are written in batches; when a batch fails, each result is retried on
    its own, so one the store keeps refusing does not stop the others from being
    recorded, and it is recorded once the store takes it."""
    store = PickyStore()
    manager = wm.WorkManager(store, clock=clock, max_concurrency=50, shutdown_grace=0)

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        pass

    requests = [wm.OneTimeWorkRequest("w") for _ in range(40)]
    stuck = requests[7]
    store.refused.add(str(stuck.id))
    caplog.set_level(logging.ERROR, logger="wm_async")
    async with manager:
        await manager.enqueue(*requests)
        await clock.advance(5)
        every = wm.WorkQuery(states=set(S))
        infos = {i.id: i.state for i in await manager.get_work_infos(every)}
        assert infos.pop(stuck.id) is S.RUNNING  # ran, its result not recorded yet
        assert set(infos.values()) == {S.SUCCEEDED}
        assert manager.statistics()["running"] == 1  # it keeps its place meanwhile
        store.refused.clear()
        await clock.advance(5)
        recorded = await manager.get_work_info(stuck.id)
        assert recorded is not None
        assert recorded.state is S.SUCCEEDED
    assert max(store.applies) > 1  # results are written several to a store call
    assert any("store failed" in r.getMessage() for r in caplog.records)
