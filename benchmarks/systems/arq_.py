"""arq on Redis: ``ArqRedis.enqueue_job`` and an in-process ``Worker`` (its defaults)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker, func

from benchmarks.systems._base import REDIS_DB, System, chunks
from benchmarks.systems._services import redis_fresh

#: concurrent enqueue calls in flight (arq has no batch enqueue)
IN_FLIGHT = 50


class ArqRedis(System):
    name = "arq-redis"
    label = "arq Redis"
    kind = "durable"
    unsupported = {  # noqa: RUF012
        "scale": "not run for peers (1,000,000 enqueues at peer rates take minutes to hours)"
    }
    settings = (
        "Worker defaults (max_jobs=10, poll_delay=0.5 s, keep_result=3600 s) with its own "
        f"connection; enqueue_job() per job, {IN_FLIGHT} in flight (no batch API)"
    )

    def check(self) -> None:
        redis_fresh()

    def prepare(self) -> None:
        redis_fresh()

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        settings = RedisSettings(host="127.0.0.1", port=6379, database=REDIS_DB)
        self.pool = await create_pool(settings)
        record = self.tracker.record

        async def job(ctx: dict[str, Any], key: str) -> None:
            record(key)

        worker = task = None
        if workers:
            worker = Worker(
                functions=[func(job, name="job")], redis_settings=settings, handle_signals=False
            )
            task = asyncio.create_task(worker.async_run())
        try:
            yield
        finally:
            if worker is not None and task is not None:
                # close() gathers the worker's job tasks, which it has just cancelled
                with suppress(asyncio.CancelledError):
                    await worker.close()
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await self.pool.aclose()

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        enqueue = self.pool.enqueue_job
        for part in chunks(keys, IN_FLIGHT):
            await asyncio.gather(*[enqueue("job", key) for key in part])

    async def submit_single(self, keys: Sequence[str]) -> None:
        for key in keys:
            await self.pool.enqueue_job("job", key)

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        enqueue = self.pool.enqueue_job
        for part in chunks(items, IN_FLIGHT):
            await asyncio.gather(
                *[
                    enqueue("job", key, _defer_until=datetime.fromtimestamp(at, UTC))
                    for key, at in part
                ]
            )
        return dict(items)
