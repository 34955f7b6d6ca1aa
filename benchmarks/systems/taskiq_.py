"""taskiq: InMemoryBroker, and ListQueueBroker (taskiq-redis) with an in-process receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

from benchmarks.systems._base import REDIS_URL, System, chunks
from benchmarks.systems._services import redis_fresh

if TYPE_CHECKING:
    from taskiq import AsyncBroker

#: concurrent kiq() calls in flight (taskiq has no batch send)
IN_FLIGHT = 50
_NO_DELAY = "delayed tasks need taskiq's separate scheduler process and a schedule source"


class _Taskiq(System):
    unsupported = {  # noqa: RUF012
        "timers": _NO_DELAY,
        "idle": _NO_DELAY,
        "scale": _NO_DELAY,
    }

    def make_broker(self) -> AsyncBroker:
        raise NotImplementedError

    @asynccontextmanager
    async def running(self, *, workers: bool) -> AsyncIterator[None]:
        self.broker = self.make_broker()
        record = self.tracker.record

        @self.broker.task(task_name="job")
        async def job(key: str) -> None:
            record(key)

        self.job = job
        await self.broker.startup()
        receiver = self.start_receiver() if workers else None
        try:
            yield
        finally:
            if receiver is not None:
                receiver.cancel()
                with suppress(asyncio.CancelledError):
                    await receiver
            await self.broker.shutdown()

    def start_receiver(self) -> asyncio.Task[Any] | None:
        return None

    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        kiq = self.job.kiq
        for part in chunks(keys, IN_FLIGHT):
            await asyncio.gather(*[kiq(key) for key in part])

    async def submit_single(self, keys: Sequence[str]) -> None:
        kiq = self.job.kiq
        for key in keys:
            await kiq(key)


class TaskiqMemory(_Taskiq):
    name = "taskiq-memory"
    label = "taskiq InMemoryBroker"
    kind = "memory"
    unsupported = {  # noqa: RUF012
        **_Taskiq.unsupported,
        "enqueue": "InMemoryBroker runs each task as it is sent: there is no queue to fill",
    }
    settings = f"InMemoryBroker defaults; kiq() per task, {IN_FLIGHT} in flight"

    def make_broker(self) -> AsyncBroker:
        from taskiq import InMemoryBroker

        return InMemoryBroker()


class TaskiqRedis(_Taskiq):
    name = "taskiq-redis"
    label = "taskiq Redis (ListQueueBroker)"
    kind = "durable"
    settings = (
        "taskiq-redis ListQueueBroker, receiver in this process with the worker defaults "
        f"(max_async_tasks=100); kiq() per task, {IN_FLIGHT} in flight; no result backend"
    )

    def check(self) -> None:
        redis_fresh()

    def prepare(self) -> None:
        redis_fresh()

    def make_broker(self) -> AsyncBroker:
        from taskiq_redis import ListQueueBroker

        return ListQueueBroker(REDIS_URL, queue_name="wm_async_bench")

    def start_receiver(self) -> asyncio.Task[Any] | None:
        from taskiq.api import run_receiver_task

        return asyncio.create_task(run_receiver_task(self.broker))
