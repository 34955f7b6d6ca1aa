"""Resident memory per pending delayed work in the memory store.

python -m benchmarks.memory [--n 100000]
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

import wm_async as wm
from benchmarks._common import settle_memory, table


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    manager = wm.WorkManager("memory://")

    @manager.worker("later")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    async with manager:
        before = settle_memory()
        for _ in range(args.n // 1000):
            # Requests are built and dropped in batches: only what the store keeps counts.
            batch = [
                wm.OneTimeWorkRequest("later", initial_delay=timedelta(hours=1))
                for _ in range(1000)
            ]
            await manager.enqueue(*batch)
        del batch
        after = settle_memory()
    per_work = (after - before) / args.n
    print(f"memory: {args.n:,} pending delayed works in the memory store")
    print(
        table(
            ["RSS before MB", "RSS after MB", "bytes per pending work"],
            [[before / 2**20, after / 2**20, per_work]],
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
