"""PostgresStore's writes inside an app's own transaction (``enqueue(...,
connection=conn)``): the statements of an insert or a unique enqueue run on the app's
asyncpg connection, in its open transaction, so the works are stored if, and only if,
the app commits.

- The connection is checked first (an asyncpg connection, in a transaction that has
  not failed and may write, to the store's database, where the store's schema is),
  before anything is written.
- The statements run inside a savepoint: a write that fails (a taken id, say) or is
  cancelled (an app's timeout, maybe between two statements) leaves the app's
  transaction as it was; a failure raises what the store's own write raises.
- Unique work needs READ COMMITTED or SERIALIZABLE isolation: a REPEATABLE READ
  snapshot, taken before the name's lock was granted, could miss another enqueue under
  the name.
- Nothing is retried: a lost connection is the app's to handle (its transaction is
  gone), and as the app commits, no lost COMMIT answer has to be recognised.
- The statements NOTIFY as every write does, so the announcement is delivered at the
  app's COMMIT, never before, and never after a ROLLBACK; with a sender of their own,
  so that this process's change feed (which skips the store's own announcements,
  published at once) hears it too, and publishes the works and wakes the dispatcher
  then.
- The unique-name advisory lock is a transaction lock: it is held until the app's
  transaction ends.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import asyncpg
import attrs

from .._core.errors import (
    InvalidRequestError,
    StoreError,
)
from ._base import JoinedTransaction
from ._postgres_ops import (
    Transactions,
    duplicate_error,
)

if TYPE_CHECKING:
    from .._core.lifecycle import UniquePlan
    from .._core.record import WorkRecord
    from ._base import UniquePlanner

__all__ = ("AppTransaction", "join")

logger = logging.getLogger("wm_async.stores.postgres")

_T = TypeVar("_T")
_Conn = Any  # asyncpg.Connection or a pool's proxy of one (asyncpg ships no types)
#: The StoreError a driver error met while doing something becomes.
ToError = Callable[[BaseException, str], StoreError]

#: What a connection is: its database, the store's table there (NULL: not there, or not
#: visible to its role), and its transaction's isolation level and access mode.
_IDENTITY: Final = (
    "SELECT current_database(), to_regclass($1)::oid, "
    "current_setting('transaction_isolation'), current_setting('transaction_read_only')"
)
_SAVEPOINT: Final = "wm_async_enqueue"
#: Bound on undoing a failed write (rolling back to the savepoint).
_UNDO_TIMEOUT: Final = 5.0


def _refuse(connection: object, reason: str) -> InvalidRequestError:
    return InvalidRequestError("connection", connection, reason)


#: The identity of each store's database and table (its ``Transactions``), once read:
#: what apps' connections are checked against.
_identities = weakref.WeakKeyDictionary[Transactions, tuple[str, int]]()


async def join(
    ops: Transactions, connection: object, *, pool: Any, error: ToError
) -> AppTransaction:
    """``connection``, checked, as the writes of an enqueue in its transaction.

    :param ops: the store's statements
    :param pool: the store's pool (``None``: the store is not open)
    :param error: the StoreError for a driver error
    :raises InvalidRequestError: naming ``connection``, if it is not an asyncpg
        connection in a transaction that may write, on the store's database
    :raises StoreError: if the store is not open, or the database fails
    """
    if pool is None:
        raise StoreError("store is not open (use 'async with store:')")
    if not isinstance(connection, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
        raise _refuse(connection, "expected an asyncpg connection (asyncpg.connect, pool.acquire)")
    table = ops.sql.table
    try:
        if not connection.is_in_transaction():
            raise _refuse(
                connection,
                "it is not in a transaction; enqueue inside 'async with conn.transaction():', "
                "so the works commit with the app's",
            )
        row = await connection.fetchrow(_IDENTITY, table)
    except asyncpg.InFailedSQLTransactionError:
        raise _refuse(
            connection, "its transaction has failed (an earlier statement raised); roll it back"
        ) from None
    except asyncpg.InterfaceError as exc:  # closed, or released to its pool
        raise _refuse(connection, f"it cannot be used: {exc}") from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise error(exc, "checking the app's connection") from exc
    database, oid, isolation, read_only = row
    if read_only == "on":
        raise _refuse(connection, "its transaction is read-only")
    if oid is None:
        raise _refuse(
            connection,
            f"its database {database!r} has no table {table} (the store's schema is not "
            "there, or this role cannot see it)",
        )
    if (database, oid) != _identities.get(ops):
        # Read (again: the schema may have been made anew since) through the store's pool.
        try:
            found = await pool.fetchrow(_IDENTITY, table)
        except Exception as exc:
            raise error(exc, "checking the app's connection") from exc
        _identities[ops] = mine = (found[0], found[1])
        if database != mine[0]:
            raise _refuse(connection, f"its database is {database!r}, the store's {mine[0]!r}")
        if oid != mine[1]:
            raise _refuse(
                connection,
                f"its database {database!r} is not the store's (another server, or the "
                "store's schema was created anew)",
            )
    # A sender of its own (hexadecimal, as the store's; the 't' keeps it apart from
    # every store's): this process's change feed then hears the announcement too.
    app_ops = Transactions(ops.sql, f"{uuid.uuid4().hex[:12]}t", ops.lease)
    return AppTransaction(app_ops, connection, error, isolation)


@attrs.define(eq=False)
class AppTransaction(JoinedTransaction):
    """The writes of an enqueue on an app's connection, in its transaction (see the
    module's docstring).

    :ivar ops: the statements
    :ivar conn: the app's connection
    :ivar error: the StoreError for a driver error
    :ivar isolation: the transaction's isolation level (``current_setting``)
    """

    ops: Transactions
    conn: _Conn
    error: ToError
    isolation: str

    async def insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None = None,
    ) -> list[WorkRecord]:
        """Insert works, chained ones resolved against their prerequisites, in the app's
        transaction; return them as it stores them.

        :raises InvalidRequestError: if a work with one of the ids already exists (in
            the app's transaction, or committed), or a prerequisite does not
        :raises StoreError: if the database fails
        """
        if not records:
            return []
        write = self.ops.new_write()

        async def run(conn: _Conn) -> list[WorkRecord]:
            if prerequisites:
                return await self.ops.insert_chained(conn, records, prerequisites, write)
            await self.ops.insert(conn, records, write.token)
            return list(records)

        try:
            return await self._in_savepoint("inserting", run)
        except StoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
        # The ids met works another transaction committed meanwhile: name one.
        try:
            rows = await self.conn.fetch(self.ops.sql.existing_rows.text, [r.id for r in records])
        except Exception as exc:
            raise self.error(exc, "reading") from exc
        error = duplicate_error(rows, records, retried=False)
        assert error is not None  # None only for a retry
        raise error

    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """Read the works under ``name``, decide with ``plan`` and carry it out, in the
        app's transaction, holding the name's advisory lock until the app's transaction
        ends (another enqueue under the name waits for it).

        :raises InvalidRequestError: if an inserted id exists outside the name, or the
            transaction is REPEATABLE READ (its snapshot, older than the lock, could
            miss the works another enqueue under the name committed meanwhile)
        :raises StoreError: if the database fails
        """
        if self.isolation == "repeatable read":
            raise _refuse(
                self.conn,
                "unique work needs READ COMMITTED or SERIALIZABLE isolation: a REPEATABLE "
                "READ transaction's snapshot can miss a concurrent enqueue under the name",
            )
        write = self.ops.new_write()

        async def run(conn: _Conn) -> tuple[UniquePlan, list[WorkRecord]]:
            return await self.ops.unique(conn, name, plan, write, [])

        return await self._in_savepoint("enqueueing unique work", run)

    async def _in_savepoint(self, doing: str, fn: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """Run ``fn`` on the app's connection inside a savepoint; on an error, undo its
        writes (the app's transaction goes on as before) and raise it (a driver error
        as StoreError)."""
        conn = self.conn
        try:
            await conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        except Exception as exc:
            raise self.error(exc, doing) from exc
        try:
            result = await fn(conn)
            await conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        except (InvalidRequestError, StoreError):
            await self._undo()
            raise
        except Exception as exc:
            await self._undo()
            raise self.error(exc, doing) from exc
        except BaseException:
            # Cancelled (a timeout of the app's, say), maybe between two statements: the
            # app may go on and commit, which must not store half a chain.
            await self._undo()
            raise
        return result

    async def _undo(self) -> None:
        """Roll the app's transaction back to the savepoint (shielded from the caller's
        cancellation; bounded: a dead connection must not hang the call)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_UNDO_TIMEOUT):
            try:
                await self.conn.execute(
                    f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}"
                )
            except Exception as exc:  # noqa: BLE001  # the connection is lost: the app's error
                logger.debug("undoing a failed write in the app's transaction failed: %r", exc)
