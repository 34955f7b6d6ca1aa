"""The baseline: the same trivial coroutine run with plain asyncio, no queue, no store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from benchmarks._common import settle_memory
from benchmarks.systems._base import System


class RawAsyncio(System):
    name = "raw-asyncio"
    label = "raw asyncio (baseline)"
    kind = "baseline"
    unsupported = {"enqueue": "no queue: create_task is already the run"}  # noqa: RUF012
    settings = "loop.create_task per job, loop.call_at per timer; nothing persisted"

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        self._tasks: list[asyncio.Task[None]] = []
        self._handles: list[asyncio.TimerHandle] = []
        yield
        for handle in self._handles:
            handle.cancel()

    async def _job(self, key: str) -> None:
        self.tracker.record(key)

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        loop = asyncio.get_running_loop()
        job = self._job
        self._tasks.extend([loop.create_task(job(key)) for key in keys])

    async def settle(self) -> None:
        await asyncio.gather(*self._tasks)
        self._tasks.clear()

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        offset = loop.time() - time.time()  # wall time -> loop time
        record = self.tracker.record
        self._handles.extend(loop.call_at(due + offset, record, key) for key, due in items)
        return dict(items)

    async def scale(self, n: int, *, batch: int) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        before = settle_memory()
        start = time.perf_counter()
        record = self.tracker.record
        for i in range(0, n, batch):
            self._handles.extend(
                loop.call_later(3600, record, str(k)) for k in range(i, min(n, i + batch))
            )
        enqueue_s = time.perf_counter() - start
        after = settle_memory()
        self.tracker.arm(1)
        start = time.perf_counter()
        await self.submit(["first"], batch=1)
        await self.tracker.wait(30)
        first = time.perf_counter() - start
        return {
            "enqueue_s": enqueue_s,
            "bytes_per_work": (after - before) / n,
            "first_dispatch_ms": first * 1000,
        }
