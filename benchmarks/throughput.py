"""Throughput: enqueue N trivial one-time works and run them all to SUCCEEDED.

Compares the memory and SQLite stores with a raw-asyncio baseline (the same no-op
coroutine via create_task + gather), in interleaved rounds, and prints jobs/s (median of
the rounds, with the range) and the ratio to the baseline.

    python -m benchmarks.throughput [--n 20000] [--rounds 3] [--concurrency 500]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time

import anyio

import wm_async as wm
from benchmarks._common import summary, table, temp_sqlite_url


async def noop(ctx: wm.WorkContext | None = None) -> None:
    return None


async def raw_asyncio(n: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(*[asyncio.create_task(noop()) for _ in range(n)])
    return n / (time.perf_counter() - start)


async def run_manager(store: str, n: int, concurrency: int, batch: int) -> float:
    manager = wm.WorkManager(store, max_concurrency=concurrency)
    done = anyio.Event()
    remaining = n

    @manager.worker("noop")
    async def work(ctx: wm.WorkContext) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            done.set()

    requests = [wm.OneTimeWorkRequest("noop") for _ in range(n)]
    async with manager:
        start = time.perf_counter()
        for i in range(0, n, batch):
            await manager.enqueue(*requests[i : i + batch])
        await done.wait()
        # The last transition is committed before its run's bookkeeping returns; wait
        # for it so the figure counts durable SUCCEEDED states, not just worker calls.
        await manager.wait(requests[-1].id)
        elapsed = time.perf_counter() - start
        check = await manager.get_work_infos(wm.WorkQuery(states={wm.WorkState.SUCCEEDED}))
        assert len(check) == n, f"only {len(check)} of {n} succeeded"
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1000, help="requests per enqueue() call")
    args = parser.parse_args()

    results: dict[str, list[float]] = {"raw asyncio": [], "memory": [], "sqlite": []}
    for _ in range(args.rounds):  # interleaved: A B C A B C ...
        results["raw asyncio"].append(await raw_asyncio(args.n))
        results["memory"].append(
            await run_manager("memory://", args.n, args.concurrency, args.batch)
        )
        url, directory = temp_sqlite_url("throughput")
        try:
            results["sqlite"].append(await run_manager(url, args.n, args.concurrency, args.batch))
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    baseline = summary(results["raw asyncio"])[0]
    rows = []
    for name, values in results.items():
        med, lo, hi = summary(values)
        rows.append([name, med, lo, hi, f"{med / baseline:.1%}"])
    print(
        f"throughput: {args.n:,} trivial works, max_concurrency={args.concurrency}, "
        f"enqueue batches of {args.batch}, {args.rounds} interleaved rounds"
    )
    print(table(["store", "jobs/s (median)", "min", "max", "vs raw asyncio"], rows))


if __name__ == "__main__":
    asyncio.run(main())
