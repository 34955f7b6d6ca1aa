"""PostgreSQL scale-out: N trivial works drained by 1, 2 and 4 processes sharing one
database, each process a WorkManager on PostgresStore; and a raw baseline: the same
SKIP LOCKED batch claim and a completing UPDATE, straight through asyncpg, with no
library (no records, lifecycle, leases renewal, notifications or events).

The works are inserted first, due at a common start time a few seconds ahead (so
process start-up is not timed); the figure is N / (last finished_at - start).

    python -m benchmarks.postgres [--n 20000] [--procs 1,2,4] [--rounds 3]
        [--concurrency 200] [--dsn postgresql://postgres@127.0.0.1:5432/test]

Rounds are interleaved (library, raw, library, raw, …); the table shows medians and the
range of the library's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid

import asyncpg

import wm_async as wm
from benchmarks._common import summary, table
from wm_async._core.record import WorkRecord
from wm_async.stores.postgres import PostgresStore

DEFAULT_DSN = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
#: Seconds between inserting the works and their common due time (process start-up).
LEAD = 4.0

RAW_CLAIM = """
WITH due AS MATERIALIZED (
    SELECT id FROM {t} WHERE state = 'ENQUEUED' AND next_run_at <= $1
    ORDER BY expedited DESC, next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE {t} AS w SET state = 'RUNNING', run_attempt_count = w.run_attempt_count + 1,
    started_at = $1, owner = $3, lease_until = $1 + 30
FROM due WHERE w.id = due.id RETURNING w.id
"""
RAW_COMPLETE = """
UPDATE {t} SET state = 'SUCCEEDED', finished_at = $1, owner = NULL, lease_until = NULL
WHERE id = ANY($2::text[]) AND state = 'RUNNING' AND owner = $3
"""


def url_for(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


async def prepare(dsn: str, schema: str, n: int, start: float) -> None:
    async with PostgresStore(url_for(dsn, schema)) as store:
        requests = [wm.OneTimeWorkRequest("noop") for _ in range(n)]
        records = [WorkRecord.from_request(r, now=start) for r in requests]
        for i in range(0, n, 2000):
            await store.insert(records[i : i + 2000])
    # As autovacuum would soon after a bulk load: the planner then knows the table (both
    # sides drain the same analysed table).
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'ANALYZE "{schema}".wm_work')
    finally:
        await conn.close()


async def child_library(dsn: str, schema: str, concurrency: int) -> None:
    manager = wm.WorkManager(url_for(dsn, schema), max_concurrency=concurrency)

    @manager.worker("noop")
    async def noop(ctx: wm.WorkContext) -> None:
        return None

    conn = await asyncpg.connect(dsn)
    try:
        async with manager:
            left = f"SELECT count(*) FROM \"{schema}\".wm_work WHERE state <> 'SUCCEEDED'"
            while True:  # a poll: this process cannot know when the others are done
                if not await conn.fetchval(left):
                    break
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def child_raw(dsn: str, schema: str, concurrency: int) -> None:
    table_name = f'"{schema}".wm_work'
    claim, complete = RAW_CLAIM.format(t=table_name), RAW_COMPLETE.format(t=table_name)
    owner = uuid.uuid4().hex
    # One connection of its own, used one statement at a time (the loop never has two
    # in flight): no pool, so no reset query on each release (the library's pool does
    # not send one either).
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            now = time.time()
            ids = [row[0] for row in await conn.fetch(claim, now, concurrency, owner)]
            if ids:
                await conn.execute(complete, time.time(), ids, owner)
                continue
            left = await conn.fetchval(
                f"SELECT count(*) FROM {table_name} WHERE state <> 'SUCCEEDED'"
            )
            if not left:
                return
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def spawn(mode: str, schema: str, dsn: str, concurrency: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.postgres", "--child", mode, "--schema", schema,
         "--dsn", dsn, "--concurrency", str(concurrency)]
    )  # fmt: skip


async def run(dsn: str, mode: str, n: int, procs: int, concurrency: int) -> float:
    schema = f"wm_bench_{uuid.uuid4().hex[:10]}"
    start = time.time() + LEAD
    await prepare(dsn, schema, n, start)
    children = [spawn(mode, schema, dsn, concurrency) for _ in range(procs)]
    try:
        for child in children:
            await asyncio.to_thread(child.wait)
        assert all(c.returncode == 0 for c in children), "a benchmark process failed"
        conn = await asyncpg.connect(dsn)
        done: int
        last: float  # max(finished_at): double precision, epoch seconds
        try:
            done, last = await conn.fetchrow(
                f'SELECT count(*), max(finished_at) FROM "{schema}".wm_work '
                "WHERE state = 'SUCCEEDED'"
            )
        finally:
            await conn.close()
        assert done == n, f"only {done} of {n} succeeded"
        if time.time() < start:
            raise AssertionError("start-up took longer than the lead time")
        return n / (last - start)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--procs", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--child", choices=["library", "raw"])
    parser.add_argument("--schema")
    args = parser.parse_args()
    if args.child == "library":
        await child_library(args.dsn, args.schema, args.concurrency)
        return
    if args.child == "raw":
        await child_raw(args.dsn, args.schema, args.concurrency)
        return

    rows = []
    for procs in (int(p) for p in args.procs.split(",")):
        library: list[float] = []
        raw: list[float] = []
        for _ in range(args.rounds):
            library.append(await run(args.dsn, "library", args.n, procs, args.concurrency))
            raw.append(await run(args.dsn, "raw", args.n, procs, args.concurrency))
        (lib, lo, hi), (base, _, _) = summary(library), summary(raw)
        rows.append([procs, lib, lo, hi, base, f"{lib / base:.0%}"])
    print(
        f"postgres: {args.n:,} trivial works drained by N processes, max_concurrency="
        f"{args.concurrency} per process (raw: SKIP LOCKED batch claim + one completing "
        f"UPDATE per batch, no library); medians of {args.rounds} rounds"
    )
    print(
        table(
            ["processes", "wm_async jobs/s", "min", "max", "raw SQL jobs/s", "wm_async / raw"],
            rows,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
