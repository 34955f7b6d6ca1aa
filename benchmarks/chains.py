"""Chains: what a chained step costs next to an independent one-time work.

Two workloads, on the memory and SQLite stores, in interleaved rounds:

- sequential: a chain of N steps (``begin_with(w0).then(w1)…``), each step unblocked by
  the one before, against N independent works run one at a time (max_concurrency=1:
  the same serial schedule without the dependency bookkeeping);
- fan-out/fan-in: one root, W parallel works, and one sink that merges all their
  outputs (ArrayCreatingInputMerger), against W + 2 independent works at the same
  concurrency.

Each figure is enqueue-to-last-SUCCEEDED time per work (median of the rounds, with the
range); "ratio" is chained / independent (the target is at most 2).

Also the time to build a sequential chain (``then`` after ``then``, no store involved)
of 1,000 and 10,000 steps: it blocks the event loop of the app that builds it.

    python -m benchmarks.chains [--steps 1000] [--width 10000] [--rounds 3]
        [--build 1000,10000]
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Awaitable, Callable

import anyio

import wm_async as wm
from benchmarks._common import summary, table, temp_sqlite_url

Run = Callable[[str], Awaitable[float]]


def _manager(store: str, concurrency: int) -> wm.WorkManager:
    manager = wm.WorkManager(store, max_concurrency=concurrency)

    @manager.worker("step")
    async def step(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"o": 1})  # merged by each next step (the sink: 10,000)

    return manager


async def _timed(
    manager: wm.WorkManager,
    enqueue: Callable[[], Awaitable[None]],
    last: wm.OneTimeWorkRequest,
    expected: int,
) -> float:
    async with manager:
        start = time.perf_counter()
        await enqueue()
        info = await manager.wait(last.id)
        elapsed = time.perf_counter() - start
        assert info.state is wm.WorkState.SUCCEEDED, (info.state, info.error)
        done = await manager.get_work_infos(wm.WorkQuery(states={wm.WorkState.SUCCEEDED}))
        assert len(done) == expected, f"{len(done)} of {expected} succeeded"
    return elapsed / expected


def sequential_chain(steps: int) -> Run:
    async def run(store: str) -> float:
        manager = _manager(store, 20)
        requests = [wm.OneTimeWorkRequest("step", input={"i": i}) for i in range(steps)]
        chain = manager.begin_with(requests[0])
        for request in requests[1:]:
            chain = chain.then(request)
        return await _timed(manager, chain.enqueue, requests[-1], steps)

    return run


def sequential_independent(steps: int) -> Run:
    async def run(store: str) -> float:
        manager = _manager(store, 1)
        requests = [wm.OneTimeWorkRequest("step", input={"i": i}) for i in range(steps)]
        return await _timed(manager, lambda: manager.enqueue(*requests), requests[-1], steps)

    return run


def fan_chain(width: int, concurrency: int) -> Run:
    async def run(store: str) -> float:
        manager = _manager(store, concurrency)
        root = wm.OneTimeWorkRequest("step")
        middle = [wm.OneTimeWorkRequest("step", input={"i": i}) for i in range(width)]
        sink = wm.OneTimeWorkRequest("step", input_merger=wm.ArrayCreatingInputMerger)
        chain = manager.begin_with(root).then(*middle).then(sink)
        elapsed = await _timed(manager, chain.enqueue, sink, width + 2)
        return elapsed

    return run


def fan_independent(width: int, concurrency: int) -> Run:
    async def run(store: str) -> float:
        manager = _manager(store, concurrency)
        requests = [wm.OneTimeWorkRequest("step", input={"i": i}) for i in range(width + 2)]
        # The last one is enqueued last: when it is done, nearly all are.
        return await _timed(manager, lambda: manager.enqueue(*requests), requests[-1], width + 2)

    return run


def build_time(steps: int) -> float:
    """Seconds to build a chain of ``steps`` one-time works, one ``then`` per step."""
    manager = wm.WorkManager("memory://")
    requests = [wm.OneTimeWorkRequest("step", input={"i": i}) for i in range(steps)]
    start = time.perf_counter()
    chain = manager.begin_with(requests[0])
    for request in requests[1:]:
        chain = chain.then(request)
    return time.perf_counter() - start


def _ms(figures: tuple[float, float, float]) -> str:
    median, low, high = (f * 1e3 for f in figures)
    return f"{median:.1f} ({low:.1f}-{high:.1f})"


def _us(figures: tuple[float, float, float]) -> str:
    median, low, high = (f * 1e6 for f in figures)
    return f"{median:.0f} ({low:.0f}-{high:.0f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="length of the chain")
    parser.add_argument("--width", type=int, default=10_000, help="fan-out width")
    parser.add_argument("--concurrency", type=int, default=100, help="for the fan-out")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--build", default="1000,10000", help="chain lengths to time the building of"
    )
    args = parser.parse_args()

    lengths = [int(n) for n in args.build.split(",") if n]
    built = {n: summary([build_time(n) for _ in range(args.rounds)]) for n in lengths}
    print(f"Building a chain, ms (median of {args.rounds} rounds, range)")
    build_rows = [[f"{n:,} steps", _ms(built[n])] for n in lengths]
    print(table(["chain", "build"], build_rows))
    print()

    workloads: dict[str, tuple[Run, Run]] = {
        f"sequential {args.steps}": (
            sequential_chain(args.steps),
            sequential_independent(args.steps),
        ),
        f"fan-out/in {args.width}": (
            fan_chain(args.width, args.concurrency),
            fan_independent(args.width, args.concurrency),
        ),
    }
    stores = ("memory", "sqlite")
    results: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, (chained, independent) in workloads.items():
            for store in stores:
                for kind, run in (("chained", chained), ("independent", independent)):
                    url, directory = (
                        ("memory://", None) if store == "memory" else temp_sqlite_url("chains")
                    )
                    try:
                        per_work = await run(url)
                    finally:
                        if directory is not None:
                            shutil.rmtree(directory, ignore_errors=True)
                    results.setdefault((name, store, kind), []).append(per_work)

    rows = []
    for name in workloads:
        for store in stores:
            chained_s = summary(results[(name, store, "chained")])
            independent_s = summary(results[(name, store, "independent")])
            ratio = f"{chained_s[0] / independent_s[0]:.2f}"
            rows.append([name, store, _us(chained_s), _us(independent_s), ratio])
    print(f"Per-work time, µs (median of {args.rounds} rounds, range), enqueue to last SUCCEEDED")
    print(table(["workload", "store", "chained", "independent", "ratio"], rows))


if __name__ == "__main__":
    anyio.run(main)
