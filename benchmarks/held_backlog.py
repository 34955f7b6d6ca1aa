"""A held backlog: what a large backlog of due works that a pause or a flow limit holds
back (semantics 47, 50) costs the claims of other works, and what a limited worker's
claim costs behind a backlog of other works.

Per store (SQLite, and PostgreSQL when reachable), the median time of ``Store.claim_due``
taking 10 works (from the store directly, no manager), side by side:

- ``alone``: the 1,000 due works of the worker ``free``, nothing else;
- ``paused``: the same, behind ``--held`` due works (due earlier) of a paused worker;
- ``capped``: the same, behind ``--held`` due works of a worker at its ``max_running=1``;
- ``big backlog``: ``--held`` + 1,000 due works of ``free``, no limit anywhere;
- ``big backlog, idle limited worker``: the same, with a limited worker (``max_running``)
  that has no work: each claim first looks for that worker's works;
- ``limited worker behind a backlog``: 1,000 due works of a limited worker
  (``max_running=10,000``), behind ``--held`` due works of ``free`` (unlimited), due
  earlier: the claim takes the limited worker's works first.

    python -m benchmarks.held_backlog [--held 50000] [--claims 50] [--stores sqlite,postgres]
        [--pg postgresql://postgres@127.0.0.1:5432/test | --pg none]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import wm_async as wm
from benchmarks._common import table, temp_sqlite_url
from wm_async._core.limits import WorkerLimits
from wm_async._core.record import WorkRecord
from wm_async.stores import ClaimParams, Store

DEFAULT_DSN = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
OTHER = 1_000
TAKE = 10


def records(worker: str, n: int, at: float) -> list[WorkRecord]:
    return [WorkRecord.from_request(wm.OneTimeWorkRequest(worker), now=at) for _ in range(n)]


async def load(store: Store, batch: list[WorkRecord]) -> None:
    for start in range(0, len(batch), 5_000):
        await store.insert(batch[start : start + 5_000])


async def median_claim(
    store: Store,
    now: float,
    claims: int,
    *,
    paused: frozenset[str] = frozenset(),
    limits: Mapping[str, WorkerLimits] | None = None,
    expect: str,
) -> float:
    """The median milliseconds of ``claims`` claims of TAKE works (all of ``expect``)."""
    times = []
    for _ in range(claims):
        params = ClaimParams(
            now=now, limit=TAKE, owner="bench", paused_workers=paused, limits=limits or {}
        )
        t0 = time.perf_counter()
        claimed = await store.claim_due(params)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(claimed.records) == TAKE, len(claimed.records)
        assert {r.worker for r in claimed.records} == {expect}
    return statistics.median(times)


async def scenario(open_store: object, case: str, held: int, claims: int) -> float:
    store = await open_store()  # type: ignore[operator]
    try:
        now = time.time()
        limits: dict[str, WorkerLimits] = {}
        paused: frozenset[str] = frozenset()
        expect = "free"
        if case in ("paused", "capped"):
            await load(store, records("held", held, now - 100))
        if case == "paused":
            paused = frozenset({"held"})
        if case == "capped":
            limits = {"held": WorkerLimits(max_running=1)}
            first = await store.claim_due(ClaimParams(now=now, limit=1, owner="bench"))
            assert [r.worker for r in first.records] == ["held"]
        if case.startswith("big backlog"):
            await load(store, records("free", held, now - 100))
        if case == "big backlog, idle limited worker":
            limits = {"idle": WorkerLimits(max_running=5)}
        if case == "limited worker behind a backlog":
            await load(store, records("free", held, now - 100))
            await load(store, records("limited", OTHER, now - 50))
            limits = {"limited": WorkerLimits(max_running=10_000)}
            expect = "limited"
        else:
            await load(store, records("free", OTHER, now - 50))
        await analyse(store)
        return await median_claim(store, now, claims, paused=paused, limits=limits, expect=expect)
    finally:
        await store.close()


async def analyse(store: Store) -> None:
    """PostgreSQL: statistics for the loaded table, as a live one has them."""
    pool = getattr(store, "_pool", None)
    schema = getattr(store, "schema", None)
    if pool is None or schema is None:
        return
    async with pool.acquire() as conn:
        await conn.execute(f'ANALYZE "{schema}".wm_work')


CASES = (
    "alone",
    "paused",
    "capped",
    "big backlog",
    "big backlog, idle limited worker",
    "limited worker behind a backlog",
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=50_000)
    parser.add_argument("--claims", type=int, default=50)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--pg", default=DEFAULT_DSN, help="a PostgreSQL DSN, or 'none'")
    args = parser.parse_args()
    kinds = args.stores.split(",")
    rows = []
    for kind in kinds:
        for case in CASES:
            if kind == "sqlite":
                url, directory = temp_sqlite_url("held")
                from wm_async.stores.sqlite import SQLiteStore

                async def open_sqlite(path: str = url.removeprefix("sqlite:///")) -> Store:
                    store = SQLiteStore(Path(path))
                    await store.open()
                    return store

                try:
                    ms = await scenario(open_sqlite, case, args.held, args.claims)
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
            else:
                if args.pg == "none":
                    continue
                import asyncpg

                from wm_async.stores.postgres import PostgresStore

                schema = f"wm_bench_held_{uuid.uuid4().hex[:8]}"
                sep = "&" if "?" in args.pg else "?"

                async def open_pg(url: str = f"{args.pg}{sep}schema={schema}") -> Store:
                    store = PostgresStore(url)
                    await store.open()
                    return store

                try:
                    ms = await scenario(open_pg, case, args.held, args.claims)
                finally:
                    conn = await asyncpg.connect(args.pg)
                    try:
                        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                    finally:
                        await conn.close()
            rows.append((kind, case, ms))
            print(f"{kind:8} {case:34} {ms:8.3f} ms", flush=True)
    print()
    print(
        f"median claim of {TAKE} works ({args.claims} claims), "
        f"backlog of {args.held:,} due works where named"
    )
    print(table(["store", "case", "claim ms"], rows))


if __name__ == "__main__":
    asyncio.run(main())
