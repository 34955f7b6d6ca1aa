"""PostgresStore's paused workers: the table ``wm_paused`` (migration 005), written with
a NOTIFY that makes the other processes re-read it (``changed(None)``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._postgres_ops import Transactions

_T = TypeVar("_T")


class PausedWorkers:
    """The paused-worker operations of :class:`~wm_async.stores.PostgresStore` (which
    is one)."""

    if TYPE_CHECKING:
        _ops: Transactions

        async def _run(
            self, doing: str, fn: Callable[[Any], Awaitable[_T]], *, transaction: bool = True
        ) -> _T: ...

    async def _write_paused(self, doing: str, statement: str, *args: object) -> None:
        ops = self._ops
        q, notify = ops.sql.quoted, ops.notify_args()

        async def write(conn: Any) -> None:
            await conn.execute(statement.format(q=q), *args)
            # "*": anything may have changed; the followers wake and re-read.
            await conn.execute(
                "SELECT pg_notify($1, $2)", notify["channel"], f"{notify['sender']} d *"
            )

        await self._run(doing, write)

    async def pause_worker(self, name: str, *, now: float) -> None:
        """Pause ``name`` (a row of ``wm_paused``), telling every process.

        :raises StoreError: if the database fails
        """
        await self._write_paused(
            "pausing a worker",
            "INSERT INTO {q}.wm_paused (worker, since) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            name,
            now,
        )

    async def resume_worker(self, name: str) -> None:
        """Resume ``name``, telling every process.

        :raises StoreError: if the database fails
        """
        await self._write_paused(
            "resuming a worker", "DELETE FROM {q}.wm_paused WHERE worker = $1", name
        )

    async def paused_workers(self) -> frozenset[str]:
        """The paused worker names.

        :raises StoreError: if the database fails
        """
        q = self._ops.sql.quoted

        async def read(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(f"SELECT worker FROM {q}.wm_paused")
            return rows

        return frozenset(row[0] for row in await self._run("reading paused workers", read))
