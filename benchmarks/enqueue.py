"""One producer enqueueing one work at a time, as a web request does: works/s and the
latency of each ``await manager.enqueue(OneTimeWorkRequest("w", input=...))``.

Each call is durable: it returns once its work is committed (on SQLite, the COMMIT of
the transaction holding it; on PostgreSQL, the server's commit). Nothing runs the
works while they are enqueued: the manager is a producer (``run_work=False`` where the
constructor takes it; otherwise each work is delayed by a day, so the dispatcher never
claims one). Building the request is counted in the figures, as an app builds one per
call. The memory store and PostgreSQL are measured beside SQLite for context.

Each round opens a fresh store (a new SQLite file in a temp directory, a new
PostgreSQL schema), enqueues a few hundred works to warm up, then N works one call
after another; rounds are interleaved (memory, SQLite, PostgreSQL, memory, …) and the
table shows the median of the rounds with their range.

    python -m benchmarks.enqueue [--n 20000] [--rounds 3] [--stores memory,sqlite,postgres]
        [--dsn postgresql://postgres@127.0.0.1:5432/test] [--profile sqlite]

``--profile STORE`` runs one round under cProfile and prints where the time goes.

Where a SQLite call's time went (2 vCPU, CPython 3.11, SQLite 3.40; cProfile for the
split, perf_counter stamps around the thread hand-overs for the waits; p50 about 195 µs
a call, the mean 230-300 µs with the tails):

- building the request and its record: about 15 µs (the input's JSON is checked and
  copied); the manager's checks, publishing and waking the scheduler: about 10 µs;
- the store on the loop: group commit, the row's parameters: about 20 µs;
- handing the transaction to aiosqlite's thread: about 15 µs (the OS wakes the thread);
- the transaction there: about 55 µs, of which SQLite about 40 (BEGIN IMMEDIATE, the
  SELECT of ids already taken, the work's row, its tag row, and the COMMIT appending
  four pages to the WAL: no fsync with synchronous=NORMAL);
- handing the result back: 25-35 µs (the OS wakes the loop's thread, then two turns of
  the loop), and about 8 µs on the loop after;
- and, with the works delayed, each enqueue woke the dispatcher, whose claim (a second
  transaction, often in the next call's batch) took a third of the time.

So half of a call was two threads waiting for each other, more on a loaded machine
(each hand-over waits for a CPU). Now a small insert alone in its batch commits on the
loop's thread (SQLiteStore, ``_sqlite_ops.transact``: never waiting for a lock there,
and only with synchronous=NORMAL, where COMMIT does not wait for the disk), and a new
delayed work no longer wakes a dispatcher that will claim before it is due: p50 about
100 µs. The figures are in benchmarks/README.md ("enqueue").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import os
import pstats
import shutil
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

import wm_async as wm
from benchmarks._common import summary, table, temp_sqlite_url

DEFAULT_DSN = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
#: Works enqueued before the clock starts (connections, statement caches, the JIT of
#: nothing: CPython, but the allocator and the file's first pages).
WARM_UP = 300
#: Whether this version's WorkManager takes run_work (a producer that runs nothing).
PRODUCER = "run_work" in inspect.signature(wm.WorkManager).parameters
#: Without run_work: works due in a day, so the dispatcher never claims one.
DELAY = timedelta(days=1)


def _manager(store: str) -> wm.WorkManager:
    kwargs: dict[str, Any] = {"run_work": False} if PRODUCER else {}
    manager = wm.WorkManager(store, **kwargs)

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        raise AssertionError("a producer's benchmark ran a work")

    return manager


def _request(i: int) -> wm.OneTimeWorkRequest:
    if PRODUCER:
        return wm.OneTimeWorkRequest("w", input={"order": i, "user": "u-42"})
    return wm.OneTimeWorkRequest("w", input={"order": i, "user": "u-42"}, initial_delay=DELAY)


async def one_round(store: str, n: int) -> dict[str, float]:
    """Enqueue ``n`` works one call at a time on a fresh ``store``; the figures."""
    manager = _manager(store)
    latencies = [0.0] * n
    clock = time.perf_counter
    async with manager:
        for i in range(WARM_UP):
            await manager.enqueue(_request(-i))
        start = clock()
        for i in range(n):
            before = clock()
            await manager.enqueue(_request(i))
            latencies[i] = clock() - before
        elapsed = clock() - start
        infos = await manager.get_work_infos(wm.WorkQuery(states={wm.WorkState.ENQUEUED}))
        assert len(infos) == n + WARM_UP, f"{len(infos)} of {n + WARM_UP} stored"
    latencies.sort()
    return {
        "per_s": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, n * 99 // 100)] * 1000,
        "mean_us": statistics.fmean(latencies) * 1e6,
    }


class _Target:
    """A fresh store URL per round, and its clean-up."""

    def __init__(self, kind: str, dsn: str) -> None:
        self.kind = kind
        self._dsn = dsn
        self._cleanup: list[Any] = []

    async def url(self) -> str:
        if self.kind == "memory":
            return "memory://"
        if self.kind == "sqlite":
            url, directory = temp_sqlite_url("enqueue")
            self._cleanup.append(lambda: shutil.rmtree(directory, ignore_errors=True))
            return url
        schema = f"wm_bench_enq_{uuid.uuid4().hex[:10]}"
        self._cleanup.append(schema)
        return f"{self._dsn}{'&' if '?' in self._dsn else '?'}schema={schema}"

    async def clean(self) -> None:
        for item in self._cleanup:
            if callable(item):
                item()
            else:
                import asyncpg

                conn = await asyncpg.connect(self._dsn)
                try:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{item}" CASCADE')
                finally:
                    await conn.close()
        self._cleanup.clear()


LABELS = {"memory": "memory", "sqlite": "SQLite", "postgres": "PostgreSQL"}


async def profile(kind: str, n: int, dsn: str) -> None:
    target = _Target(kind, dsn)
    url = await target.url()
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        figures = await one_round(url, n)
        profiler.disable()
    finally:
        await target.clean()
    print(f"{LABELS[kind]}: {figures['per_s']:,.0f} works/s under cProfile")
    stats = pstats.Stats(profiler).strip_dirs().sort_stats("tottime")
    stats.print_stats(25)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite,postgres")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--profile", choices=sorted(LABELS))
    args = parser.parse_args()
    if args.profile:
        await profile(args.profile, args.n, args.dsn)
        return
    kinds = [k for k in args.stores.split(",") if k]
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    errors: dict[str, str] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            if kind in errors:
                continue
            target = _Target(kind, args.dsn)
            try:
                results[kind].append(await one_round(await target.url(), args.n))
            except (OSError, wm.StoreError) as exc:  # PostgreSQL not running: say so
                errors[kind] = f"{type(exc).__name__}: {exc}"
            finally:
                await target.clean()
    rows = []
    for kind in kinds:
        rounds = results[kind]
        if not rounds:
            continue
        row: list[object] = [LABELS[kind]]
        for metric in ("per_s", "p50_ms", "p99_ms"):
            med, lo, hi = summary([r[metric] for r in rounds])
            row.append(f"{_fmt(med)} ({_fmt(lo)}-{_fmt(hi)})")
        rows.append(row)
    mode = "run_work=False" if PRODUCER else "works delayed by a day"
    print(
        f"enqueue: {args.n:,} works, one durable enqueue call at a time, one producer "
        f"({mode}); median (min-max) of {args.rounds} rounds"
    )
    print(table(["store", "works/s", "p50 ms", "p99 ms"], rows))
    for kind, error in errors.items():
        print(f"  not measured: {LABELS[kind]}: {error}")
    sqlite = results.get("sqlite")
    if sqlite:
        med = statistics.median(r["per_s"] for r in sqlite)
        verdict = "PASS" if med >= 5000 else "MISS"
        print(f"target: SQLite >= 5,000 works/s: {med:,.0f} {verdict}")


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


if __name__ == "__main__":
    asyncio.run(main())
