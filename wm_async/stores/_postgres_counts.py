"""PostgresStore's count of works by worker and state (one ``GROUP BY`` query)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._core.model import WorkState

if TYPE_CHECKING:
    from ._postgres_ops import Transactions

_T = TypeVar("_T")
_STATES = {s.value: s for s in WorkState}


class WorkCounts:
    """``count_works`` of :class:`~wm_async.stores.PostgresStore` (which is one)."""

    if TYPE_CHECKING:
        _ops: Transactions

        async def _run(
            self, doing: str, fn: Callable[[Any], Awaitable[_T]], *, transaction: bool = True
        ) -> _T: ...

    async def count_works(self) -> dict[tuple[str, WorkState], int]:
        """How many works each worker has in each state (one scan of the table).

        :raises StoreError: if the database fails
        """
        q = self._ops.sql.quoted

        async def read(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(
                f"SELECT worker, state, count(*) FROM {q}.wm_work GROUP BY worker, state"
            )
            return rows

        rows = await self._run("counting works", read, transaction=False)
        return {(row[0], _STATES[row[1]]): row[2] for row in rows}
