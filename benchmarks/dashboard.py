"""Dashboard page times with a million works, SQLite and PostgreSQL side by side.

The works are loaded with one bulk ``INSERT … SELECT`` per store matching the schema
(not through ``enqueue``): finished over the last 24 hours (97 % succeeded, 1 % failed,
0.5 % cancelled), the rest ENQUEUED, RUNNING or BLOCKED, across 10 workers and 20 tags.
Each page is fetched through the dashboard's ASGI app (in process, so the figures are
the store's queries and the rendering, not a network), a few times; the median is shown.

    python -m benchmarks.dashboard                  # 1,000,000 works
    python -m benchmarks.dashboard --works 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid

import httpx

import wm_async as wm
from wm_async.dashboard import Dashboard

PG_DSN = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TOKEN = "benchmark-token-0123456789"


def _columns(n: str, now: str, mod: str, idiv: str, hexid: str, tags: str) -> str:
    """The SELECT list of a generated work numbered ``n`` (SQL shared by both stores:
    ``mod``/``idiv`` spell integer modulo and division, ``hexid`` the id, ``tags`` the
    tags' JSON)."""
    state = (
        f"CASE WHEN {mod}({n}, 1000) < 970 THEN 'SUCCEEDED' WHEN {mod}({n}, 1000) < 980 "
        f"THEN 'FAILED' WHEN {mod}({n}, 1000) < 985 THEN 'CANCELLED' WHEN {mod}({n}, 1000) "
        f"< 995 THEN 'ENQUEUED' WHEN {mod}({n}, 1000) < 998 THEN 'RUNNING' ELSE 'BLOCKED' END"
    )
    enq = f"({now} - 86400.0 + {n} * 86400.0 / :total)"
    fin = f"CASE WHEN {mod}({n}, 1000) < 985 THEN {enq} + 1.5 END"
    started = f"CASE WHEN {mod}({n}, 1000) < 985 OR {mod}({n}, 1000) BETWEEN 995 AND 997 THEN {enq} + 0.5 END"
    due = f"CASE WHEN {mod}({n}, 1000) BETWEEN 985 AND 994 THEN {enq} + {mod}({n}, 7) * 3600.0 END"
    return (
        f"{hexid}, 'worker' || {mod}({n}, 10), '', {tags}, '', 0.0, 'EXPONENTIAL', 30.0, "
        f"18000.0, NULL, NULL, 0, 'overwriting', NULL, 0, {enq}, {state}, "
        f"CASE WHEN {mod}({n}, 1000) < 985 THEN 1 ELSE 0 END, {due}, {enq}, {started}, {fin}, "
        f"'', '', CASE WHEN {mod}({n}, 1000) BETWEEN 980 AND 984 THEN 'CANCELLED_BY_APP' "
        "ELSE 'NOT_STOPPED' END, "
        f"CASE WHEN {mod}({n}, 1000) BETWEEN 970 AND 979 THEN 'ValueError' END, "
        f"CASE WHEN {mod}({n}, 1000) BETWEEN 970 AND 979 THEN 'boom' END, 0, NULL, '', '', 0, 0, "
        f"CASE WHEN {started} IS NOT NULL THEN {mod}({n}, 50) / 100.0 END"
    )


COLS = (
    "id, worker, input, tags, constraints, initial_delay, backoff_policy, backoff_delay, "
    "backoff_max_delay, timeout, max_attempts, expedited, input_merger, unique_name, "
    "generation, enqueued_at, state, run_attempt_count, next_run_at, last_enqueue_time, "
    "started_at, finished_at, output, progress, stop_reason, error_type, error_message, "
    "period_count, owner, signals, periodic, waiting, priority, late"
)


async def load_sqlite(path: str, total: int, now: float) -> None:
    import sqlite3

    from wm_async.stores.sqlite import SQLiteStore

    async with SQLiteStore(path):
        pass  # the schema
    db = sqlite3.connect(path)
    select = _columns(
        "n",
        repr(now),
        "mod",
        "",
        "printf('01a00000-0000-7000-8000-%012x', n)",
        "json_array('tag' || mod(n, 20), 'worker' || mod(n, 10))",
    ).replace(":total", str(total))
    # SQLite's mod() is the math function (a REAL): the integer remainder is %.
    select = re.sub(r"mod\((\w+), (\d+)\)", r"(\1 % \2)", select)
    db.execute("PRAGMA journal_mode = WAL")
    with db:
        db.execute(
            f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {total}) "
            f"INSERT INTO wm_work ({COLS}) SELECT {select} FROM s"
        )
        db.execute(
            "INSERT INTO wm_work_tag (tag, work_id) SELECT j.value, w.id FROM wm_work AS w, "
            "json_each(w.tags) AS j"
        )
    db.execute("ANALYZE")
    db.close()


async def load_postgres(url: str, schema: str, total: int, now: float) -> None:
    import asyncpg

    from wm_async.stores.postgres import PostgresStore

    async with PostgresStore(url):
        pass
    conn = await asyncpg.connect(PG_DSN)
    select = _columns(
        "n",
        f"{now!r}::float8",
        "mod",
        "",
        "'01a00000-0000-7000-8000-' || lpad(to_hex(n), 12, '0')",
        "'[\"tag' || mod(n, 20) || '\",\"worker' || mod(n, 10) || '\"]'",
    ).replace(":total", f"{total}.0")
    await conn.execute(
        f'INSERT INTO "{schema}".wm_work ({COLS}) SELECT {select} FROM generate_series(1, {total}) AS n'
    )
    await conn.execute(f'VACUUM ANALYZE "{schema}".wm_work')
    await conn.close()


async def time_pages(url: str, rounds: int) -> dict[str, float]:
    manager = wm.WorkManager(store=url, run_work=False)
    dashboard = Dashboard(manager, token=TOKEN)
    transport = httpx.ASGITransport(app=dashboard, client=("127.0.0.1", 1))
    out: dict[str, float] = {}
    async with manager, httpx.AsyncClient(transport=transport, base_url="http://b") as c:
        await c.get(f"/login?token={TOKEN}")
        first = await c.get("/works?limit=50")
        marker = first.text.split('id="next" href="')[1].split('"')[0].replace("&amp;", "&")
        pages = {
            "overview (1h window)": "/",
            "overview (24h window)": "/?window=24h",
            "list, newest 50": "/works",
            "list, page 2 (cursor)": marker,
            "list, FAILED": "/works?state=FAILED",
            "list, one worker": "/works?worker=worker3",
            "list, one tag": "/works?tag=tag7",
            "list, worker + FAILED": "/works?worker=worker3&state=FAILED",
            "list, id prefix": "/works?q=01a00000-0000-7000-8000-00000000a",
            "a work": "/works/01a00000-0000-7000-8000-000000000abc",
        }
        for name, path in pages.items():
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                r = await c.get(path)
                times.append(time.perf_counter() - start)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
            out[name] = statistics.median(times) * 1000
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    now = time.time()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wm.db")
        t0 = time.perf_counter()
        await load_sqlite(path, args.works, now)
        print(
            f"SQLite: {args.works:,} works loaded in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        results["SQLite"] = await time_pages(f"sqlite:///{path}", args.rounds)
    if not args.skip_postgres:
        import asyncpg

        schema = f"wm_bench_{uuid.uuid4().hex[:8]}"
        sep = "&" if "?" in PG_DSN else "?"
        url = f"{PG_DSN}{sep}schema={schema}"
        t0 = time.perf_counter()
        try:
            await load_postgres(url, schema, args.works, now)
            print(f"PostgreSQL: loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            results["PostgreSQL"] = await time_pages(url, args.rounds)
        finally:
            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    stores = list(results)
    print(f"\nDashboard pages with {args.works:,} works (median of {args.rounds}, ms)\n")
    print(f"{'page':<26}" + "".join(f"{s:>12}" for s in stores))
    for page in results[stores[0]]:
        print(f"{page:<26}" + "".join(f"{results[s][page]:>12.1f}" for s in stores))


def run() -> None:
    """Entry point."""
    asyncio.run(main())


if __name__ == "__main__":
    run()
