"""The workloads, written once against :class:`~benchmarks.systems._base.System`.

Each takes the system and its parameters and returns flat figures (a dict of floats);
the child process prints them, the parent aggregates rounds.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from benchmarks.systems._base import System

HOUR = 3600.0


def _keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


async def throughput(system: System, p: dict[str, Any]) -> dict[str, float]:
    """N immediately due trivial jobs: from the first enqueue to the last completion."""
    n = p["n"]
    keys = _keys("j", n)
    async with system.running(workers=True):
        system.tracker.arm(n)
        start = time.perf_counter()
        await system.submit(keys, batch=p["batch"])
        await system.wait_done(p["timeout"])
        await system.settle()
        elapsed = time.perf_counter() - start
    return {"jobs_per_s": n / elapsed, "seconds": elapsed}


async def enqueue(system: System, p: dict[str, Any]) -> dict[str, float]:
    """N enqueues with nothing consuming them: one per call, then (if the system has a
    batch API) ``batch`` per call."""
    n = p["n"]
    figures: dict[str, float] = {}
    async with system.running(workers=False):
        start = time.perf_counter()
        await system.enqueue_only(_keys("s", n), batch=None)
        figures["single_per_s"] = n / (time.perf_counter() - start)
        if system.has_batch_api:
            start = time.perf_counter()
            await system.enqueue_only(_keys("b", n), batch=p["batch"])
            figures["batch_per_s"] = n / (time.perf_counter() - start)
    return figures


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timers(system: System, p: dict[str, Any]) -> dict[str, float]:
    """``pending`` works due in an hour, then ``n`` due at random times over ``spread`` s;
    lateness = when the job ran - when it was due (as the system stored it)."""
    n, spread, pending = p["n"], p["spread"], p["pending"]
    async with system.running(workers=True):
        start = time.perf_counter()
        now = time.time()
        await system.schedule([(k, now + HOUR) for k in _keys("p", pending)], batch=p["batch"])
        per_job = (time.perf_counter() - start) / max(1, pending)
        # Head start: every timed job must be enqueued before the first one is due.
        head = 0.5 + 2 * per_job * n
        base = time.time() + head
        items = [(k, base + random.random() * spread) for k in _keys("t", n)]
        system.tracker.arm(n, keep_times=True)
        due = await system.schedule(items, batch=p["batch"])
        late_start = time.time() - base
        await system.wait_done(head + spread + p["timeout"])
    times = system.tracker.times
    lateness = [(times[k] - at) * 1000 for k, at in due.items()]
    return {
        "p50_ms": statistics.median(lateness),
        "p99_ms": quantile(lateness, 0.99),
        "max_ms": max(lateness),
        "min_ms": min(lateness),
        # > 0 would mean enqueueing ran past the first due time (the head start was short)
        "enqueue_overrun_s": max(0.0, late_start),
    }


async def scale(system: System, p: dict[str, Any]) -> dict[str, float]:
    """``n`` pending delayed works: enqueue time, RSS per work, time to first dispatch
    and, where the store is a file, start-up time with them all in it."""
    async with system.running(workers=True):
        figures = await system.scale(p["n"], batch=p["batch"])
    restart = getattr(system, "restart", None)
    if restart is not None:
        figures["startup_s"] = await restart()
    return figures


async def idle(system: System, p: dict[str, Any]) -> dict[str, float]:
    """CPU this process uses over ``seconds`` with ``pending`` works due in an hour."""
    async with system.running(workers=True):
        now = time.time()
        await system.schedule(
            [(k, now + HOUR) for k in _keys("p", p["pending"])], batch=p["batch"]
        )
        await anyio.sleep(1.0)  # let the enqueue's after-effects settle
        # process_time: every thread of this process (the peers' consumer threads too),
        # at nanosecond resolution (psutil's cpu_times only has clock ticks).
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await anyio.sleep(p["seconds"])
        cpu1, wall1 = time.process_time(), time.perf_counter()
    return {"cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0)}


WORKLOADS: dict[str, Callable[[System, dict[str, Any]], Coroutine[Any, Any, dict[str, float]]]] = {
    "throughput": throughput,
    "enqueue": enqueue,
    "timers": timers,
    "scale": scale,
    "idle": idle,
}
