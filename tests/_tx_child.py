"""An app process of ``test_transactional.py`` (not a test module): it runs a manager,
opens a transaction on a connection of its own, enqueues a work and a unique work in
it, prints ``enqueued`` and waits, never committing, until it is killed."""

from __future__ import annotations

import argparse
import sys
import uuid

import anyio
import asyncpg

import wm_async as wm
from wm_async.stores.postgres import PostgresStore


async def main(args: argparse.Namespace) -> None:
    manager = wm.WorkManager(PostgresStore(args.url, pool_size=2), shutdown_grace=0)

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        return None

    async with manager:
        conn = await asyncpg.connect(args.dsn)
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(f'INSERT INTO "{args.schema}".orders (id) VALUES ($1)', args.work)
        await manager.enqueue(
            wm.OneTimeWorkRequest("job", id=uuid.UUID(args.work)), connection=conn
        )
        unique = wm.OneTimeWorkRequest("job", id=uuid.UUID(args.unique_work))
        assert await manager.enqueue_unique_work(args.name, "KEEP", unique, connection=conn)
        sys.stdout.write("enqueued\n")
        sys.stdout.flush()
        await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for option in ("--url", "--dsn", "--schema", "--work", "--unique-work", "--name"):
        parser.add_argument(option, required=True)
    anyio.run(main, parser.parse_args())
