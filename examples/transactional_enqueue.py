"""Enqueue a work in the app's own PostgreSQL transaction (README, "Transactional
enqueue"): the order row and its work commit together, or neither exists.

    WM_ASYNC_PG_DSN=postgresql://postgres@127.0.0.1:5432/test python examples/transactional_enqueue.py

Uses a schema of its own (dropped at the end) in the database the DSN names.
"""

from __future__ import annotations

import os
import uuid

import anyio
import asyncpg

import wm_async as wm
from wm_async.stores.postgres import PostgresStore

DSN = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = f"wm_example_{uuid.uuid4().hex[:8]}"
manager = wm.WorkManager(store=PostgresStore(DSN, schema=SCHEMA), shutdown_grace=1)


@manager.worker("send_receipt")
async def send_receipt(ctx: wm.WorkContext) -> wm.Result:
    return wm.Result.success({"sent_for": ctx.input["order"]})


async def place_order(pool: asyncpg.Pool, order_id: str, total: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO orders (id, total) VALUES ($1, $2)", order_id, total)
        await manager.enqueue(
            wm.OneTimeWorkRequest("send_receipt", input={"order": order_id}), connection=conn
        )
    # committed: the order and its work exist, and the workers are woken now


async def main() -> None:
    pool = await asyncpg.create_pool(DSN, server_settings={"search_path": SCHEMA})
    try:
        async with manager:
            await pool.execute(f"CREATE TABLE {SCHEMA}.orders (id text PRIMARY KEY, total int)")
            await place_order(pool, "order-1", 42)
            (work,) = await manager.get_work_infos(wm.WorkQuery(tags={"send_receipt"}))
            done = await manager.wait(work.id)
            print(done.state.value, dict(done.output))
            assert done.state is wm.WorkState.SUCCEEDED
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await pool.close()


if __name__ == "__main__":
    anyio.run(main)
