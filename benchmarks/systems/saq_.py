"""SAQ on Redis: ``Queue.enqueue`` and an in-process ``Worker`` (its defaults)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

from saq import Queue, Worker
from saq.types import Context

from benchmarks.systems._base import REDIS_URL, System, chunks
from benchmarks.systems._services import redis_fresh

#: concurrent enqueue calls in flight (SAQ has no batch enqueue)
IN_FLIGHT = 50


class SaqRedis(System):
    name = "saq-redis"
    label = "SAQ Redis"
    kind = "durable"
    unsupported = {  # noqa: RUF012
        "scale": "not run for peers (1,000,000 enqueues at peer rates take minutes to hours)"
    }
    settings = (
        "Worker defaults (concurrency=10, scheduler timer 1 s); "
        f"enqueue() per job, {IN_FLIGHT} in flight (no batch API)"
    )

    def check(self) -> None:
        redis_fresh()

    def prepare(self) -> None:
        redis_fresh()

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        self.queue = Queue.from_url(REDIS_URL, name="wm_async_bench")
        await self.queue.connect()
        record = self.tracker.record

        async def job(ctx: Context, *, k: str) -> None:
            record(k)

        worker = task = None
        if workers:
            worker = Worker(self.queue, functions=[("job", job)])
            task = asyncio.create_task(worker.start())
        try:
            yield
        finally:
            if worker is not None and task is not None:
                await worker.stop()
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await self.queue.disconnect()

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        enqueue = self.queue.enqueue
        for part in chunks(keys, IN_FLIGHT):
            await asyncio.gather(*[enqueue("job", k=key) for key in part])

    async def submit_single(self, keys: Sequence[str]) -> None:
        for key in keys:
            await self.queue.enqueue("job", k=key)

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        enqueue = self.queue.enqueue
        for part in chunks(items, IN_FLIGHT):
            # SAQ's ``scheduled`` is whole epoch seconds: the due time is what it stores.
            await asyncio.gather(*[enqueue("job", k=key, scheduled=int(at)) for key, at in part])
        return {key: float(int(at)) for key, at in items}
