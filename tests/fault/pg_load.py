"""One manager process of the PostgreSQL fault tests (``test_pg_faults.py`` starts
several). Not a test module.

It runs the works of the test's schema, and may add traffic of its own (``--traffic``
new works per second, each with ``max_attempts=1``), until the stop file exists and no
work is unfinished. Its log gets a line per event, appended and flushed at once so that
a SIGKILL loses nothing already written:

- ``run <id> <attempt> <owner>`` when a worker starts;
- ``enq <id>`` once an enqueue of its traffic has returned (the work is durable).

The store's errors during an outage are expected: a failed enqueue of the traffic is
logged (``err``) and not retried (it was not acknowledged, so nothing was promised).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import anyio
import asyncpg

import wm_async as wm
from wm_async.stores.postgres import PostgresStore

_UNFINISHED = "('ENQUEUED', 'RUNNING', 'BLOCKED')"


class Log:
    """Lines appended to a file, each written (not buffered) before it is considered
    done."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def line(self, text: str) -> None:
        os.write(self._fd, (text + "\n").encode())


async def main(args: argparse.Namespace) -> None:
    log = Log(Path(args.log))
    store = PostgresStore(
        args.url, lease=args.lease, poll_interval=0.5, pool_size=4, retry_timeout=60
    )
    manager = wm.WorkManager(
        store, max_concurrency=args.concurrency, owner=args.owner, shutdown_grace=10
    )

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        log.line(f"run {ctx.id} {ctx.run_attempt_count} {args.owner}")
        await anyio.sleep(args.work_ms / 1000)

    stop = anyio.Path(args.stop)
    pool = await asyncpg.create_pool(args.count_dsn, min_size=1, max_size=2)

    async def traffic() -> None:
        if args.traffic <= 0:
            return
        interval = 1 / args.traffic
        next_at = time.monotonic()
        while not await stop.exists():
            request = wm.OneTimeWorkRequest("job", max_attempts=1)
            try:
                await manager.enqueue(request)
            except wm.StoreError as exc:
                log.line(f"err {type(exc).__name__}")
            else:
                log.line(f"enq {request.id}")
            next_at += interval
            await anyio.sleep(max(0.0, next_at - time.monotonic()))

    async def unfinished() -> int | None:
        try:
            value = await pool.fetchval(
                f'SELECT count(*) FROM "{args.schema}".wm_work WHERE state IN {_UNFINISHED}'
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None  # the server is restarting: ask again
        return int(value)

    try:
        async with manager, anyio.create_task_group() as tg:
            tg.start_soon(traffic)
            while True:
                await anyio.sleep(0.3)
                if await stop.exists() and await unfinished() == 0:
                    tg.cancel_scope.cancel()
                    break
    finally:
        await pool.close()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--count-dsn", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--work-ms", type=float, default=20.0)
    parser.add_argument("--traffic", type=float, default=0.0)
    return parser.parse_args()


if __name__ == "__main__":
    anyio.run(main, parse())
