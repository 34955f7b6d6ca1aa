"""One manager process of the multi-process PostgreSQL tests (``test_postgres.py`` starts
several). Not a test module.

- ``drain``: run the works of the test's schema until none is unfinished; the worker
  records each execution in ``<schema>.executions`` (through a connection pool of its
  own, so ending the store's connections does not touch it).
- ``unique``: at ``--start-at`` (epoch seconds), make ``--n`` concurrent KEEP enqueues
  of one unique name, then exit.
- ``serve``: run works until killed: ``hold`` works run until cancelled, ``job`` works
  record their execution as in ``drain``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta

import anyio
import asyncpg

import wm_async as wm
from wm_async.stores.postgres import PostgresStore

_UNFINISHED = "('ENQUEUED', 'RUNNING', 'BLOCKED')"


def _manager(args: argparse.Namespace) -> wm.WorkManager:
    store = PostgresStore(
        args.url, lease=args.lease, poll_interval=args.poll_interval, pool_size=4
    )
    return wm.WorkManager(
        store, max_concurrency=args.concurrency, owner=args.owner, shutdown_grace=5
    )


async def drain(args: argparse.Namespace) -> None:
    manager = _manager(args)
    schema = args.schema
    pool = await asyncpg.create_pool(args.exec_dsn, min_size=1, max_size=4)
    insert = f'INSERT INTO "{schema}".executions (work_id, attempt, owner) VALUES ($1, $2, $3)'

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        if args.work_ms:
            await anyio.sleep(args.work_ms / 1000)
        await pool.execute(insert, str(ctx.id), ctx.run_attempt_count, args.owner)

    try:
        async with manager:
            while True:
                await anyio.sleep(0.5)
                try:
                    left = await pool.fetchval(
                        f'SELECT count(*) FROM "{schema}".wm_work WHERE state IN {_UNFINISHED}'
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    continue
                if left == 0:
                    break
    finally:
        await pool.close()


async def serve(args: argparse.Namespace) -> None:
    manager = _manager(args)
    pool = await asyncpg.create_pool(args.exec_dsn, min_size=1, max_size=2)
    insert = (
        f'INSERT INTO "{args.schema}".executions (work_id, attempt, owner) VALUES ($1, $2, $3)'
    )

    @manager.worker("hold")
    async def hold(ctx: wm.WorkContext) -> None:
        await anyio.sleep_forever()

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        await pool.execute(insert, str(ctx.id), ctx.run_attempt_count, args.owner)

    try:
        async with manager:
            await anyio.sleep_forever()
    finally:
        await pool.close()


async def unique(args: argparse.Namespace) -> None:
    manager = _manager(args)

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        return None

    async with manager:
        await anyio.sleep(max(0.0, args.start_at - time.time()))

        async def one() -> None:
            request = wm.OneTimeWorkRequest("job", initial_delay=timedelta(hours=1))
            await manager.enqueue_unique_work("the-name", wm.ExistingWorkPolicy.KEEP, request)

        async with anyio.create_task_group() as tg:
            for _ in range(args.n):
                tg.start_soon(one)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["drain", "unique", "serve"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--exec-dsn", default="")
    parser.add_argument("--owner", required=True)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--n", type=int, default=25)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    modes = {"drain": drain, "unique": unique, "serve": serve}
    asyncio.run(modes[args.mode](args))


if __name__ == "__main__":
    main()
