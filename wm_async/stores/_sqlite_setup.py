"""SQLiteStore's setup of a new writer connection's file: the checks that the file is
ours to use, WAL, and the schema created or migrated."""

from __future__ import annotations

from itertools import count

import aiosqlite
import anyio

from .._core.errors import (
    StoreCorruptError,
    StoreError,
)
from . import _sqlite_errors as errors
from . import _sqlite_sql as sqlite_sql
from ._sqlite_ops import rollback


async def header(db: aiosqlite.Connection, path: str) -> tuple[int, int]:
    """``(version, latest)``: the schema version of the file at ``path`` and the latest
    this version of wm_async knows; raise if the file is not ours to use."""
    rows = await db.execute_fetchall(
        "SELECT (SELECT application_id FROM pragma_application_id), "
        "(SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_schema)"
    )
    app_id, version, objects = next(iter(rows))
    if app_id != sqlite_sql.APPLICATION_ID:
        if app_id != 0 or objects:
            raise StoreCorruptError(
                f"{path} is not a wm_async database (application_id {app_id:#x}, "
                f"{objects} schema objects); wm_async left it untouched"
            )
        version = 0  # an empty database: ours to set up
    latest = sqlite_sql.migrations()[-1][0]
    if version > latest:
        raise StoreCorruptError(
            f"{path} was written by a newer wm_async (schema version {version}, this "
            f"version knows up to {latest}); upgrade wm_async. The file was left untouched"
        )
    return version, latest


async def initialise(
    db: aiosqlite.Connection,
    path: str,
    migrations: tuple[tuple[int, tuple[str, ...]], ...],
    *,
    synchronous: str,
    busy_timeout: float,
) -> None:
    """Set up the writer connection ``db`` to the file at ``path``: WAL journal, no
    automatic checkpoints, and the schema created or migrated.

    :raises StoreCorruptError: if the file is not ours to use (left untouched)
    """
    version, latest = await header(db, path)  # before anything writes to the file
    for attempt in count():
        # Switching to WAL returns SQLITE_BUSY at once, without waiting for the lock,
        # while another process sets up the same new file: retry for busy_timeout.
        try:
            rows = await db.execute_fetchall("PRAGMA journal_mode = WAL")
            break
        except aiosqlite.Error as exc:
            if not errors.is_transient(exc) or attempt * 0.02 >= busy_timeout:
                raise
        await anyio.sleep(0.02)
    if str(next(iter(rows))[0]).lower() != "wal":
        raise StoreError(f"cannot use WAL mode for {path} (a network filesystem?)")
    await db.execute_fetchall(f"PRAGMA synchronous = {synchronous}")
    # SQLite checkpoints the WAL inside whichever COMMIT crosses 1000 pages, which
    # stalls that writer for milliseconds (a timer's work starts late). The writer
    # leaves it to the checkpointer connection instead (see SQLiteStore._checkpoint_soon).
    await db.execute_fetchall("PRAGMA wal_autocheckpoint = 0")
    if version == latest:
        return
    # Another process may be migrating too: re-read the version inside the transaction.
    await db.execute_fetchall("BEGIN IMMEDIATE")
    try:
        version, _ = await header(db, path)
        for number, statements in migrations:
            if number > version:
                for statement in statements:
                    await db.execute_fetchall(statement)
                await db.execute_fetchall(f"PRAGMA user_version = {number}")
        await db.execute_fetchall(f"PRAGMA application_id = {sqlite_sql.APPLICATION_ID}")
        await db.execute_fetchall("COMMIT")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await rollback(db)
        raise
