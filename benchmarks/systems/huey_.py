"""huey: its consumer (worker threads) in this process; tasks are plain functions."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from huey import Huey, MemoryHuey, SqliteHuey

from benchmarks.systems._base import System

WORKERS = 4


class _Huey(System):
    unsupported = {  # noqa: RUF012
        "scale": "not run for peers (1,000,000 enqueues at peer rates take minutes to hours)"
    }
    settings = (
        f"consumer with {WORKERS} worker threads (-w {WORKERS} -k thread), other consumer "
        "options at their defaults (polling back-off 0.1 s x1.15 up to 10 s, scheduler "
        "every 1 s); one call per job (no batch API)"
    )

    def make_huey(self) -> Huey:
        raise NotImplementedError

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        self.huey = self.make_huey()
        record = self.tracker.record

        @self.huey.task()  # type: ignore[untyped-decorator]  # huey ships no type hints
        def job(key: str) -> None:
            record(key)

        self.job = job
        consumer = None
        if workers:
            consumer = self.huey.create_consumer(
                workers=WORKERS, worker_type="thread", periodic=False
            )
            consumer.start()
        try:
            yield
        finally:
            if consumer is not None:
                consumer.stop(graceful=True)

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        job = self.job
        for key in keys:
            job(key)

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        schedule = self.job.schedule
        for key, at in items:
            schedule(args=(key,), eta=datetime.fromtimestamp(at, UTC))
        return dict(items)


class HueyMemory(_Huey):
    name = "huey-memory"
    label = "huey memory"
    kind = "memory"

    def make_huey(self) -> Huey:
        return MemoryHuey("wm_async_bench")


class HueySQLite(_Huey):
    name = "huey-sqlite"
    label = "huey SQLite"
    kind = "durable"
    settings = _Huey.settings + "; SqliteHuey defaults (WAL, fsync=False)"

    def prepare(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wm_async_bench_huey_"))

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def make_huey(self) -> Huey:
        return SqliteHuey("wm_async_bench", filename=str(self._dir / "huey.db"))
