"""WAL checkpoints of a SQLite store, off the commit path: a connection of their own
checkpoints every few thousand rows written; the writer completes one right after a
commit only once the WAL has grown long."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import aiosqlite
import attrs

logger = logging.getLogger("wm_async.store")

#: Rows written between WAL checkpoints (a few MB of WAL at typical row sizes).
CHECKPOINT_ROWS: Final = 4000
#: WAL frames (pages) past which the writer completes a checkpoint (~16 MB at 4 KiB).
WAL_RESET_FRAMES: Final = 4000


@attrs.define(eq=False)
class Checkpoints:
    """The checkpoints of one store's file.

    :ivar path: the database file (for log lines)
    :ivar connection: the checkpointer's own connection (``None`` once closed)
    """

    path: str
    connection: aiosqlite.Connection | None = None
    _task: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    _written: int = attrs.field(default=0, init=False)  # rows written since the last one
    _reset_wal: bool = attrs.field(default=False, init=False)

    async def committed(self, rows: int, writer: aiosqlite.Connection) -> None:
        """After a commit of ``rows`` rows on ``writer``: start a checkpoint on the
        checkpointer's connection every :data:`CHECKPOINT_ROWS` rows, without holding up
        the commit. PASSIVE: it copies what it can without waiting for (or blocking) the
        writer, and the next one catches up."""
        self._written += rows
        if self._written >= CHECKPOINT_ROWS and self._task is None:
            self._written = 0
            self._task = asyncio.get_running_loop().create_task(self._checkpoint())
        if self._reset_wal:
            # While the writer keeps writing, a checkpoint on another connection never
            # catches up with the end of the WAL, so the WAL never starts over and the
            # file grows. Once it is long, the writer finishes the checkpoint itself right
            # after a commit: only the last frames are left to copy by then.
            self._reset_wal = False
            await self._run(writer)

    async def _checkpoint(self) -> None:
        try:
            if self.connection is not None:
                frames = await self._run(self.connection)
                self._reset_wal = frames >= WAL_RESET_FRAMES
        finally:
            self._task = None

    async def _run(self, db: aiosqlite.Connection) -> int:
        """One PASSIVE checkpoint on ``db``; the WAL's length in frames (0 if it failed:
        the next checkpoint retries, nothing is lost)."""
        try:
            rows = await db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except aiosqlite.Error as exc:
            logger.debug("WAL checkpoint of %s failed: %s", self.path, exc)
            return 0
        _, frames, _ = next(iter(rows))
        return int(frames)

    async def close(self) -> aiosqlite.Connection | None:
        """Wait for a checkpoint in progress; return the connection (to be closed)."""
        if self._task is not None:
            await self._task
        connection, self.connection = self.connection, None
        return connection
