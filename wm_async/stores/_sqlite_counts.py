"""SQLiteStore's count of works by worker and state (one ``GROUP BY`` query on the
reader connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiosqlite

from .._core.model import WorkState

if TYPE_CHECKING:
    from .._core.errors import StoreError

_STATES = {s.value: s for s in WorkState}
_COUNT = "SELECT worker, state, count(*) FROM wm_work GROUP BY worker, state"


class WorkCounts:
    """``count_works`` of :class:`~wm_async.stores.SQLiteStore` (which is one)."""

    if TYPE_CHECKING:
        _reader: aiosqlite.Connection | None

        def _not_open(self) -> StoreError: ...
        def _error(self, exc: BaseException, doing: str) -> StoreError: ...

    async def count_works(self) -> dict[tuple[str, WorkState], int]:
        """How many works each worker has in each state (one scan of the table).

        :raises StoreError: if the database fails
        """
        if self._reader is None:
            raise self._not_open()
        try:
            rows = await self._reader.execute_fetchall(_COUNT, ())
        except aiosqlite.Error as exc:
            raise self._error(exc, "counting works") from exc
        return {(row[0], _STATES[row[1]]): row[2] for row in rows}
