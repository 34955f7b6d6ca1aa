"""APScheduler 3.x: AsyncIOScheduler (its AsyncIOExecutor runs coroutine jobs on the loop)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from benchmarks.systems._base import System, Tracker

# Jobs in a persistent store are referenced as "module:function", so the job function is a
# module-level one reporting to the tracker of the (single) system in this process.
_tracker: Tracker | None = None


async def job(key: str) -> None:
    assert _tracker is not None
    _tracker.record(key)


class _APS(System):
    unsupported = {  # noqa: RUF012
        "scale": "not run for peers (1,000,000 enqueues at peer rates take minutes to hours)"
    }
    settings = (
        "AsyncIOScheduler, AsyncIOExecutor (default), misfire_grace_time=None so late jobs "
        "still run, coalesce=False; add_job() per job (no batch API)"
    )

    def jobstore(self) -> object:
        from apscheduler.jobstores.memory import MemoryJobStore

        return MemoryJobStore()

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        global _tracker
        _tracker = self.tracker
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": self.jobstore()},
            job_defaults={"misfire_grace_time": None, "coalesce": False},
        )
        self.scheduler.start(paused=not workers)
        try:
            yield
        finally:
            self.scheduler.shutdown(wait=False)

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        add = self.scheduler.add_job
        for key in keys:
            add(job, args=(key,))

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        add = self.scheduler.add_job
        for key, at in items:
            add(job, "date", run_date=datetime.fromtimestamp(at, UTC), args=(key,))
        return dict(items)


class APSMemory(_APS):
    name = "apscheduler3-memory"
    label = "APScheduler 3 memory"
    kind = "memory"


class APSSQLite(_APS):
    name = "apscheduler3-sqlite"
    label = "APScheduler 3 SQLite"
    kind = "durable"
    settings = _APS.settings + "; SQLAlchemyJobStore on a SQLite file (SQLAlchemy defaults)"

    def prepare(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wm_async_bench_aps_"))

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def jobstore(self) -> object:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        return SQLAlchemyJobStore(url=f"sqlite:///{self._dir / 'jobs.sqlite'}")
