"""Parked work: 10,000 due works waiting on one Flag.

Prints the CPU used while parked (no per-work wake-ups: it should be near zero), the time
from ``flag.set()`` to the first start and to the last SUCCEEDED, and the same 10,000
works with no constraint for comparison.

    python -m benchmarks.signals [--n 10000] [--parked 5] [--store memory://]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import anyio

import wm_async as wm
from benchmarks._common import table
from wm_async.signals import Flag


async def run(store: str, n: int, parked_for: float, constrained: bool) -> dict[str, float]:
    manager = wm.WorkManager(store, max_concurrency=500)
    gate = Flag(False)
    manager.register_signal("gate", gate)
    first = anyio.Event()
    done = anyio.Event()
    started_at: list[float] = []
    remaining = n

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        nonlocal remaining
        if not started_at:
            started_at.append(time.perf_counter())
            first.set()
        remaining -= 1
        if remaining == 0:
            done.set()

    constraints = wm.Constraints(signals={"gate"}) if constrained else wm.Constraints()
    requests = [wm.OneTimeWorkRequest("w", constraints=constraints) for _ in range(n)]
    async with manager:
        if constrained:
            await manager.enqueue(*requests)
            await anyio.sleep(0.5)  # let the dispatcher park everything
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await anyio.sleep(parked_for)
            cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            assert not started_at, "parked work must not run"
            t0 = time.perf_counter()
            gate.set()
        else:
            cpu_share = float("nan")
            t0 = time.perf_counter()
            await manager.enqueue(*requests)
        with anyio.fail_after(120):
            await done.wait()
        total = time.perf_counter() - t0
        await manager.wait(requests[-1].id)
    return {"cpu": cpu_share, "first": started_at[0] - t0, "total": total}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--parked", type=float, default=5.0)
    parser.add_argument("--store", default="memory://")
    args = parser.parse_args()
    parked = await run(args.store, args.n, args.parked, constrained=True)
    free = await run(args.store, args.n, args.parked, constrained=False)
    print(f"signals: {args.n:,} due works parked on one Flag for {args.parked}s ({args.store})")
    print(
        table(
            ["case", "CPU while parked", "first start ms", "all done s", "vs unconstrained"],
            [
                [
                    "parked, then set()",
                    f"{parked['cpu']:.2%}",
                    parked["first"] * 1000,
                    parked["total"],
                    f"{parked['total'] / free['total']:.2f}x",
                ],
                ["no constraint", "-", free["first"] * 1000, free["total"], "1.00x"],
            ],
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
