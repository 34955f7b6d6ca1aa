"""Flow control: what a worker's ``max_running`` and ``rate_limit`` cost.

Prints, per store (SQLite, and PostgreSQL when reachable), side by side:

- throughput of N trivial works already enqueued (median of ``--rounds``), unlimited, with
  ``max_running`` equal to ``max_concurrency`` (never the binding limit), and with a
  ``rate_limit`` far above what the workload needs: each should be at most 10 % below
  the unlimited figure;
- the latency from a slot freeing (a run returning) to the next waiting work starting,
  p50 and p99, for a worker with ``max_running=1`` (the run's outcome is written, the
  slot freed, the claim made), beside the same chain held by ``max_concurrency=1``;
  on PostgreSQL also with two managers (two stores: as two processes), split by whether
  the next work started in the manager whose run ended or in the other one.

    python -m benchmarks.flow_control [--n 3000] [--rounds 3] [--chain 300]
        [--concurrency 64] [--stores sqlite,postgres]
        [--pg postgresql://postgres@127.0.0.1:5432/test | --pg none]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import time
import uuid

import anyio

import wm_async as wm
from benchmarks._common import table, temp_sqlite_url

DEFAULT_DSN = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CASES = ("unlimited", "max_running", "rate_limit")


def _limits(case: str, concurrency: int) -> dict[str, object]:
    if case == "max_running":
        return {"max_running": concurrency}
    if case == "rate_limit":  # a million starts a second: far above any store's rate
        return {"rate_limit": wm.RateLimit(1_000_000, per=1, burst=1_000_000)}
    return {}


async def throughput(
    url: str, n: int, concurrency: int, case: str, analyze: tuple[str, str] | None = None
) -> float:
    """Works per second: ``n`` trivial works enqueued beforehand, run to the last. On
    PostgreSQL (``analyze``: the DSN and schema) the loaded table is analysed first, as
    a live one is (a fresh table's missing statistics make the planner sort every due
    work in each claim, limited or not)."""
    async with wm.WorkManager(url, run_work=False) as producer:
        await producer.enqueue(*(wm.OneTimeWorkRequest("w") for _ in range(n)))
    if analyze is not None:
        import asyncpg

        conn = await asyncpg.connect(analyze[0])
        try:
            await conn.execute(f'ANALYZE "{analyze[1]}".wm_work')
        finally:
            await conn.close()
    manager = wm.WorkManager(url, max_concurrency=concurrency)
    done = anyio.Event()
    remaining = n

    async def work(ctx: wm.WorkContext) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            done.set()

    manager.register_worker("w", work, **_limits(case, concurrency))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    async with manager:
        with anyio.fail_after(600):
            await done.wait()
        elapsed = time.perf_counter() - t0
    return n / elapsed


async def slot_latency(url: str, chain: int, capped: bool) -> list[float]:
    """Seconds from each run returning to the next waiting work's start."""
    manager = wm.WorkManager(url, max_concurrency=64 if capped else 1)
    ends: list[float] = []
    starts: list[float] = []
    done = anyio.Event()

    async def work(ctx: wm.WorkContext) -> None:
        starts.append(time.perf_counter())
        await anyio.sleep(0.001)  # a run that lasts: the others are held meanwhile
        if len(starts) == chain:
            done.set()
        ends.append(time.perf_counter())

    manager.register_worker("w", work, **({"max_running": 1} if capped else {}))  # type: ignore[arg-type]
    async with manager:
        await manager.enqueue(*(wm.OneTimeWorkRequest("w") for _ in range(chain)))
        with anyio.fail_after(600):
            await done.wait()
    return [s - e for e, s in zip(ends, starts[1:], strict=False)]


async def slot_latency_two(url: str, chain: int) -> tuple[list[float], list[float]]:
    """Two managers on one PostgreSQL schema, each with its own store (connections,
    listener: as two processes), running a worker with ``max_running=1``: the seconds
    from each run returning to the next start, split by whether the next started in
    the same manager or in the other one (woken by the first's notification)."""
    events: list[tuple[float, str, str]] = []  # (time, "start" | "end", manager)
    done = anyio.Event()
    managers = [wm.WorkManager(url, max_concurrency=64) for _ in range(2)]
    for tag, manager in zip("ab", managers, strict=True):

        async def work(ctx: wm.WorkContext, tag: str = tag) -> None:
            events.append((time.perf_counter(), "start", tag))
            await anyio.sleep(0.001)
            if sum(1 for e in events if e[1] == "start") >= chain:
                done.set()
            events.append((time.perf_counter(), "end", tag))

        manager.register_worker("w", work, max_running=1)
    async with managers[0], managers[1]:
        await managers[0].enqueue(*(wm.OneTimeWorkRequest("w") for _ in range(chain)))
        with anyio.fail_after(600):
            await done.wait()
    same: list[float] = []
    other: list[float] = []
    ordered = sorted(events)
    for (t0, kind0, tag0), (t1, kind1, tag1) in itertools.pairwise(ordered):
        if kind0 == "end" and kind1 == "start":
            (same if tag0 == tag1 else other).append(t1 - t0)
    return same, other


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _pg_url(dsn: str) -> tuple[str, str] | None:
    try:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=5)
        await conn.close()
    except Exception:  # noqa: BLE001  # no server: the PostgreSQL figures are skipped
        return None
    schema = f"wm_bench_flow_{uuid.uuid4().hex[:8]}"
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}", schema


async def _drop(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def fresh(kind: str, dsn: str) -> tuple[str, object]:
    """A fresh store URL of ``kind`` and what to clean up."""
    if kind == "sqlite":
        return temp_sqlite_url("flow")
    found = await _pg_url(dsn)
    assert found is not None
    return found


async def cleanup(kind: str, dsn: str, token: object) -> None:
    if kind == "sqlite":
        shutil.rmtree(str(token), ignore_errors=True)
    else:
        await _drop(dsn, str(token))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pg", default=DEFAULT_DSN, help="a PostgreSQL DSN, or 'none'")
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    kinds = [k for k in ("sqlite", "postgres") if k in args.stores.split(",")]
    if "postgres" in kinds and (args.pg == "none" or await _pg_url(args.pg) is None):
        kinds.remove("postgres")
    rows: list[list[object]] = []
    latency_rows: list[list[object]] = []
    for kind in kinds:
        figures: dict[str, list[float]] = {case: [] for case in CASES}
        for r in range(args.rounds):
            # Interleaved, and each round starts with the next case: a drifting machine
            # load, and whatever the first measurement of a round pays, hit each alike.
            for case in CASES[r % len(CASES) :] + CASES[: r % len(CASES)]:
                url, token = await fresh(kind, args.pg)
                try:
                    analyze = (args.pg, str(token)) if kind == "postgres" else None
                    figures[case].append(
                        await throughput(url, args.n, args.concurrency, case, analyze)
                    )
                finally:
                    await cleanup(kind, args.pg, token)
        base = statistics.median(figures["unlimited"])
        for case in CASES:
            rate = statistics.median(figures[case])
            rows.append([kind, case, rate, f"{rate / base - 1:+.1%}"])
        for capped in (True, False):
            url, token = await fresh(kind, args.pg)
            try:
                gaps = await slot_latency(url, args.chain, capped)
            finally:
                await cleanup(kind, args.pg, token)
            label = "max_running=1" if capped else "max_concurrency=1 (reference)"
            latency_rows.append(
                [kind, label, _pct(gaps, 0.5) * 1000, _pct(gaps, 0.99) * 1000, len(gaps)]
            )
        if kind == "postgres":
            url, token = await fresh(kind, args.pg)
            try:
                same, other = await slot_latency_two(url, args.chain)
            finally:
                await cleanup(kind, args.pg, token)
            for label, gaps in (
                ("2 managers, next in the same", same),
                ("2 managers, next in the other", other),
            ):
                if gaps:
                    latency_rows.append(
                        [kind, label, _pct(gaps, 0.5) * 1000, _pct(gaps, 0.99) * 1000, len(gaps)]
                    )
    print(
        f"flow control: {args.n:,} trivial works, max_concurrency={args.concurrency}, "
        f"median of {args.rounds} rounds"
    )
    print(table(["store", "limit", "works/s", "vs unlimited"], rows))
    print()
    print(f"from a slot freeing to the next waiting work starting ({args.chain} runs)")
    print(table(["store", "held by", "p50 ms", "p99 ms", "gaps"], latency_rows))


if __name__ == "__main__":
    asyncio.run(main())
