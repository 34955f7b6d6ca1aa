"""What every benchmarked system provides, and the completion tracker its jobs report to.

A system adapter is created and used inside one child process (``benchmarks._child``):
``check()`` and ``prepare()`` run before the event loop starts (they may block: pinging a
service, dropping a database), then ``async with system.running(workers=…)`` starts the
system's producer side and, if asked, its consumers in this same process.
"""

from __future__ import annotations

import abc
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeVar

import anyio

WORKLOADS = ("throughput", "enqueue", "timers", "scale", "idle")
#: Redis database the Redis-backed peers use; it is flushed before each measurement.
REDIS_DB = 11
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
#: PostgreSQL server; each system gets its own freshly created database on it.
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_URL = "postgresql://postgres@127.0.0.1:5432/{db}"


class Skip(Exception):
    """The system cannot run here (a missing package or service); the text says why."""


class Tracker:
    """Counts job completions, from the event loop or from a consumer's threads.

    ``record(key)`` is what each benchmark job calls when it runs. With ``keep_times``
    the wall time of each call is kept, by key, for lateness.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._main_thread = threading.get_ident()
        self.expected = 0
        self.count = 0
        self.keep_times = False
        self.times: dict[str, float] = {}
        self.first_at: float | None = None
        self._event: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, expected: int, *, keep_times: bool = False) -> None:
        """Expect ``expected`` more completions (call from the event loop)."""
        with self._lock:
            self.expected = self.count + expected
            self.keep_times = keep_times
            self._event = anyio.Event()
            self._loop = asyncio.get_running_loop()

    def record(self, key: str) -> None:
        now = time.time()
        with self._lock:
            self.count += 1
            if self.first_at is None:
                self.first_at = now
            if self.keep_times:
                self.times[key] = now
            finished = self.count == self.expected
        if finished and self._event is not None:
            if threading.get_ident() == self._main_thread:
                self._event.set()
            else:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, limit: float) -> None:
        """Until the armed count is reached; TimeoutError after ``limit`` seconds."""
        assert self._event is not None, "arm() first"
        with anyio.fail_after(limit):
            await self._event.wait()


class System(abc.ABC):
    """One benchmarked system: a scheduler/queue with one store, or the raw baseline."""

    #: short id used on the command line and in results (``wm-memory``, ``huey-sqlite``)
    name: ClassVar[str]
    #: what the table shows
    label: ClassVar[str]
    #: "baseline", "memory" or "durable": which targets compare against it
    kind: ClassVar[str]
    #: workloads this system does not do, with the reason shown in the report
    unsupported: ClassVar[dict[str, str]] = {}
    #: the configuration used, for the README (documented defaults unless stated)
    settings: ClassVar[str] = ""
    #: whether ``submit_batch`` is a real batch API (one call, many jobs)
    has_batch_api: ClassVar[bool] = False

    def __init__(self, tracker: Tracker, params: dict[str, Any]) -> None:
        self.tracker = tracker
        self.params = params

    def check(self) -> None:  # noqa: B027  (optional hook)
        """Raise :class:`Skip` if a package or service is missing (may block)."""

    def prepare(self) -> None:  # noqa: B027  (optional hook)
        """Make a clean store: flush, drop, create (may block; no loop yet)."""

    def cleanup(self) -> None:  # noqa: B027  (optional hook)
        """Remove what ``prepare`` made (temp files)."""

    @abc.abstractmethod
    def running(self, *, workers: bool) -> Any:  # an async context manager
        """Open the producer side and, when ``workers``, start consuming in this process."""

    @abc.abstractmethod
    async def submit(self, keys: Sequence[str], *, batch: int) -> None:
        """Enqueue one immediately due job per key, the fastest documented way."""

    async def submit_single(self, keys: Sequence[str]) -> None:
        """One enqueue call per job, each awaited before the next."""
        for key in keys:
            await self.submit([key], batch=1)

    async def submit_batch(self, keys: Sequence[str], *, batch: int) -> None:
        """Many jobs per enqueue call; only where the system has such an API."""
        raise NotImplementedError

    async def enqueue_only(self, keys: Sequence[str], *, batch: int | None) -> None:
        """Enqueue without anything running them (``batch=None``: single calls).

        Systems that must be running to accept work override this to enqueue
        works that are not due yet instead.
        """
        if batch is None:
            await self.submit_single(keys)
        else:
            await self.submit_batch(keys, batch=batch)

    async def schedule(
        self, items: Sequence[tuple[str, float]], *, batch: int
    ) -> dict[str, float]:
        """Enqueue jobs due at the given wall times; return each key's due time as stored."""
        raise NotImplementedError

    async def wait_done(self, limit: float) -> None:
        """Until every job the tracker was armed for has run (at most ``limit`` s)."""
        await self.tracker.wait(limit)

    async def settle(self) -> None:  # noqa: B027  (optional hook)
        """After the last job ran: wait until its outcome is recorded, where that lags."""

    async def scale(self, n: int, *, batch: int) -> dict[str, float]:
        """The scale workload, for systems that do it."""
        raise NotImplementedError


@asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield


_T = TypeVar("_T")


def chunks(keys: Sequence[_T], size: int) -> list[Sequence[_T]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]
