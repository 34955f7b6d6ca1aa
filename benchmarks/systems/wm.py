"""wm_async itself, on the memory, SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import wm_async as wm
from benchmarks._common import settle_memory
from benchmarks.systems._base import PG_BENCH_URL, Skip, System, Tracker, chunks
from benchmarks.systems._services import pg_ping, pg_recreate
from wm_async.stores import open_store

MAX_CONCURRENCY = 500
LATER = timedelta(hours=1)
PG_DB = "wm_async_bench"


class _WmSystem(System):
    has_batch_api = True
    settings = f"max_concurrency={MAX_CONCURRENCY}; enqueue(*requests) in batches of 1,000"

    def __init__(self, tracker: Tracker, params: dict[str, Any]) -> None:
        super().__init__(tracker, params)
        self._last: list[wm.OneTimeWorkRequest] = []

    def store(self) -> str:
        raise NotImplementedError

    def _manager(self) -> wm.WorkManager:
        manager = wm.WorkManager(self.store(), max_concurrency=MAX_CONCURRENCY)
        tracker = self.tracker

        @manager.worker("job")
        async def job(ctx: wm.WorkContext) -> None:
            # The id (a UUID built on access) only where lateness needs it.
            tracker.record(str(ctx.id) if tracker.keep_times else "")

        return manager

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        # A manager always runs its works; ``workers=False`` workloads enqueue works
        # that are not due yet instead (see enqueue_only).
        self.manager = self._manager()
        async with self.manager:
            yield

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        for part in chunks(keys, batch):
            requests = [wm.OneTimeWorkRequest("job") for _ in part]
            await self.manager.enqueue(*requests)
        self._last = requests

    async def enqueue_only(self, keys: Sequence[str], *, batch: int | None) -> None:
        enqueue = self.manager.enqueue
        if batch is None:
            for _ in keys:
                await enqueue(wm.OneTimeWorkRequest("job", initial_delay=LATER))
        else:
            for part in chunks(keys, batch):
                await enqueue(*[wm.OneTimeWorkRequest("job", initial_delay=LATER) for _ in part])

    async def settle(self) -> None:
        # Count durable outcomes, not worker calls: wait until every work's SUCCEEDED is
        # written (the last few are still being recorded when the last worker returns).
        if self._last:
            await self.manager.wait(self._last[-1].id)
        pending = wm.WorkQuery(states={wm.WorkState.ENQUEUED, wm.WorkState.RUNNING})
        while await self.manager.get_work_infos(pending):  # noqa: ASYNC110  (a store query)
            await asyncio.sleep(0.001)

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        due: dict[str, float] = {}
        for part in chunks(items, batch):
            now = time.time()
            requests = [
                wm.OneTimeWorkRequest("job", initial_delay=timedelta(seconds=max(0.0, at - now)))
                for _, at in part
            ]
            await self.manager.enqueue(*requests)
            # The due time is what the store holds: enqueue time + initial delay.
            infos = await self.manager.get_work_infos(wm.WorkQuery(ids={r.id for r in requests}))
            for info in infos:
                assert info.next_schedule_time is not None
                due[str(info.id)] = info.next_schedule_time.timestamp()
        return due

    async def scale(self, n: int, *, batch: int) -> dict[str, float]:
        # Called inside running(): the manager is open and empty.
        before = settle_memory()
        start = time.perf_counter()
        for i in range(0, n, batch):
            await self.manager.enqueue(
                *[
                    wm.OneTimeWorkRequest("job", initial_delay=LATER)
                    for _ in range(min(batch, n - i))
                ]
            )
        enqueue_s = time.perf_counter() - start
        after = settle_memory()
        self.tracker.arm(1)
        start = time.perf_counter()
        await self.manager.enqueue(wm.OneTimeWorkRequest("job"))
        await self.tracker.wait(60)
        first = time.perf_counter() - start
        return {
            "enqueue_s": enqueue_s,
            "bytes_per_work": (after - before) / n,
            "first_dispatch_ms": first * 1000,
        }


class WmMemory(_WmSystem):
    name = "wm-memory"
    label = "wm_async memory"
    kind = "memory"

    def store(self) -> str:
        return "memory://"


class WmSQLite(_WmSystem):
    name = "wm-sqlite"
    label = "wm_async SQLite"
    kind = "durable"
    settings = (
        _WmSystem.settings + "; WAL, synchronous=NORMAL (the default): every transition committed"
    )

    def prepare(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wm_async_bench_"))

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def store(self) -> str:
        return f"sqlite:///{self._dir / 'bench.db'}"

    async def scale(self, n: int, *, batch: int) -> dict[str, float]:
        figures = await super().scale(n, batch=batch)
        figures["file_mb"] = _file_mb(self._dir)
        return figures

    async def restart(self) -> float:
        """Open a second manager on the file the first one filled; seconds until a new
        due work runs (opening, recovery and the first dispatch)."""
        self.tracker.arm(1)
        start = time.perf_counter()
        async with self._manager() as manager:
            await manager.enqueue(wm.OneTimeWorkRequest("job"))
            await self.tracker.wait(600)
            return time.perf_counter() - start


class WmPostgres(_WmSystem):
    name = "wm-postgres"
    label = "wm_async PostgreSQL"
    kind = "durable"
    settings = _WmSystem.settings + "; throughput: 4 processes on one database (this one enqueues)"

    def check(self) -> None:
        try:
            open_store(PG_BENCH_URL.format(db=PG_DB))
        except Exception as exc:
            cause = exc.__cause__ or exc  # the ImportError behind open_store's StoreError
            raise Skip(f"PostgresStore not available ({cause})") from exc
        pg_ping()

    def prepare(self) -> None:
        pg_recreate(PG_DB)
        self._helpers: list[Any] = []

    def store(self) -> str:
        return PG_BENCH_URL.format(db=PG_DB)

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        processes = int(self.params.get("processes", 1))
        ctx = multiprocessing.get_context("spawn")
        self._shared = ctx.Value("q", 0)
        stop = ctx.Event()
        ready = [ctx.Event() for _ in range(processes - 1)]
        helpers = [
            ctx.Process(target=_pg_helper, args=(self.store(), self._shared, r, stop), daemon=True)
            for r in ready
        ]
        for helper in helpers:
            helper.start()
        try:
            for r, helper in zip(ready, helpers, strict=True):
                while not r.is_set():
                    if not helper.is_alive():
                        raise RuntimeError(f"helper process exited ({helper.exitcode})")
                    await asyncio.sleep(0.05)
            async with super().running(workers=workers):
                yield
        finally:
            stop.set()
            for helper in helpers:
                helper.join(30)

    async def wait_done(self, limit: float) -> None:
        # Works run in four processes: add up their counts.
        deadline = time.perf_counter() + limit
        while self.tracker.count + self._shared.value < self.tracker.expected:
            if time.perf_counter() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.002)


def _pg_helper(url: str, shared: Any, ready: Any, stop: Any) -> None:
    """Another process sharing the database: runs works, counts them in ``shared``."""

    async def main() -> None:
        manager = wm.WorkManager(url, max_concurrency=MAX_CONCURRENCY)

        @manager.worker("job")
        async def job(ctx: wm.WorkContext) -> None:
            with shared.get_lock():
                shared.value += 1

        async with manager:
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110  (another process's event)
                await asyncio.sleep(0.05)

    asyncio.run(main())


def _file_mb(directory: Path) -> float:
    files = [directory / name for name in ("bench.db", "bench.db-wal")]
    return sum(os.path.getsize(f) for f in files if f.exists()) / 2**20
