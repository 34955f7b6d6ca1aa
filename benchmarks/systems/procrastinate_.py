"""procrastinate on PostgreSQL: ``defer_async``/``batch_defer_async`` and an in-process
worker (``run_worker_async``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import procrastinate

from benchmarks.systems._base import PG_BENCH_URL, System, chunks
from benchmarks.systems._services import pg_ping, pg_recreate

if TYPE_CHECKING:
    from procrastinate.types import JSONDict

DB = "wm_async_bench_procrastinate"
CONCURRENCY = 10


class Procrastinate(System):
    name = "procrastinate-pg"
    label = "procrastinate PostgreSQL"
    kind = "durable"
    has_batch_api = True
    unsupported = {  # noqa: RUF012
        "scale": "not run for peers (1,000,000 enqueues at peer rates take minutes to hours)"
    }
    settings = (
        f"PsycopgConnector, worker concurrency={CONCURRENCY} (default 1), other worker options "
        "at their defaults (LISTEN/NOTIFY, 5 s polling); batch_defer_async in batches of 1,000"
    )

    def check(self) -> None:
        pg_ping()

    def prepare(self) -> None:
        pg_recreate(DB)

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        connector = procrastinate.PsycopgConnector(conninfo=PG_BENCH_URL.format(db=DB))
        app = procrastinate.App(connector=connector)
        record = self.tracker.record

        @app.task(name="job")
        async def job(key: str) -> None:
            record(key)

        self.job = job
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            task = None
            if workers:
                task = asyncio.create_task(
                    app.run_worker_async(concurrency=CONCURRENCY, install_signal_handlers=False)
                )
            try:
                yield
            finally:
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        await self.submit_batch(keys, batch=batch)

    async def submit_single(self, keys: Sequence[str]) -> None:
        defer = self.job.defer_async
        for key in keys:
            await defer(key=key)

    async def submit_batch(self, keys: Sequence[str], *, batch: int) -> None:
        for part in chunks(keys, batch):
            task_kwargs: list[JSONDict] = [{"key": key} for key in part]
            await self.job.batch_defer_async(*task_kwargs)

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        for key, at in items:
            deferrer = self.job.configure(schedule_at=datetime.fromtimestamp(at, UTC))
            await deferrer.defer_async(key=key)
        return dict(items)
