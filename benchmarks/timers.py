"""Timer accuracy: works with random initial delays; how late does each start?

Lateness = actual start (wall clock) - due time (enqueue time + initial delay).

    python -m benchmarks.timers [--n 10000] [--spread 2.0] [--store memory://]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import time
from datetime import timedelta

import anyio

import wm_async as wm
from benchmarks._common import table, temp_sqlite_url


async def measure(store: str, n: int, spread: float) -> list[float]:
    manager = wm.WorkManager(store, max_concurrency=100)
    started: dict[str, float] = {}
    done = anyio.Event()

    @manager.worker("timer")
    async def work(ctx: wm.WorkContext) -> None:
        started[str(ctx.id)] = time.time()
        if len(started) == n:
            done.set()

    async with manager:
        requests = [
            # +0.5 s so that enqueueing finishes before the first work is due
            wm.OneTimeWorkRequest(
                "timer", initial_delay=timedelta(seconds=0.5 + random.random() * spread)
            )
            for _ in range(n)
        ]
        await manager.enqueue(*requests)
        # The due time is what the store holds: enqueue time + initial delay.
        infos = await manager.get_work_infos(wm.WorkQuery(ids={r.id for r in requests}))
        due = {
            str(i.id): i.next_schedule_time.timestamp()
            for i in infos
            if i.next_schedule_time is not None
        }
        assert len(due) == n, "every work must still be pending after enqueue"
        with anyio.fail_after(spread + 30):
            await done.wait()
    return [started[k] - due[k] for k in due]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=2.0)
    args = parser.parse_args()
    rows = []
    for name in ("memory", "sqlite"):
        if name == "memory":
            values = await measure("memory://", args.n, args.spread)
        else:
            url, directory = temp_sqlite_url("timers")
            try:
                values = await measure(url, args.n, args.spread)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        ms = [v * 1000 for v in values]
        rows.append([name, statistics.median(ms), quantile(ms, 0.99), max(ms)])
    print(f"timer lateness: {args.n:,} works due at random times over {args.spread}s")
    print(table(["store", "p50 ms", "p99 ms", "max ms"], rows))


if __name__ == "__main__":
    asyncio.run(main())
