"""SQLiteStore: works in one SQLite file, through aiosqlite (the default store).

- One writer and one read-only reader connection (``PRAGMA query_only``), WAL journal,
  ``BEGIN IMMEDIATE`` transactions; the schema is versioned by ``PRAGMA user_version``
  (migrations in ``_sql/sqlite/NNN_name.sql``) and marked by ``PRAGMA application_id``.
- Group commit: write operations of concurrent tasks are queued and run together in one
  transaction by whichever caller found no batch in progress (the leader); every caller
  returns only after that COMMIT. There is no background task.
- Claims and next-due lookups read only the partial index ``wm_work_due``.
- The file is known by its identity (see ``_sqlite_file``): one scheduling manager per
  file whatever path leads to it, and writes stop (:class:`StoreGoneError`) once the path
  no longer leads to the file opened.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import count
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import aiosqlite
import anyio
import attrs

from .._core.errors import (
    InvalidRequestError,
    StoreCorruptError,
    StoreError,
    StoreGoneError,
)
from .._core.lifecycle import resolve_new
from .._core.model import Constraints
from . import _codec as codec
from . import _sqlite_errors as errors
from . import _sqlite_file
from . import _sqlite_sql as sql
from ._base import (
    Claimed,
    ClaimParams,
    Store,
)
from ._group_commit import (
    GroupCommit,
    Op,
)
from ._propagation import propagate

if TYPE_CHECKING:
    from .._core.data import Data
    from .._core.lifecycle import (
        Change,
        UniquePlan,
    )
    from .._core.model import WorkQuery
    from .._core.record import WorkRecord
    from ._base import UniquePlanner

#: The direct prerequisites of new works, by work id, in order.
_Links = Mapping[str, Sequence[str]]

__all__ = ["SQLiteStore"]

logger = logging.getLogger("wm_async.store")

#: Rows written between WAL checkpoints (a few MB of WAL at typical row sizes).
_CHECKPOINT_ROWS: Final = 4000
#: WAL frames (pages) past which the writer completes a checkpoint (~16 MB at 4 KiB).
_WAL_RESET_FRAMES: Final = 4000

# -- group commit --------------------------------------------------------------------------


class _Kind(enum.Enum):
    INSERT = 1
    APPLY = 2
    CLAIM = 3
    PRUNE = 4
    RESPEC = 5
    UNIQUE = 6
    QUARANTINE = 7


@attrs.define(eq=False)
class _Op(Op):
    """One caller's write, queued for the next batch (see _group_commit)."""

    kind: _Kind = attrs.field(kw_only=True)
    prepared: Any = None


def _rows_written(op: _Op) -> int:
    """About how many rows a committed op wrote (it paces the WAL checkpoints)."""
    if op.kind is _Kind.INSERT:
        return len(op.arg[0])
    if op.kind is _Kind.APPLY:
        return len(op.arg)
    if op.kind is _Kind.CLAIM:
        return len(op.result[0]) if op.result is not None else 0
    if op.kind is _Kind.PRUNE:
        return int(op.result or 0)
    return 1


class _Closable(Protocol):
    async def close(self) -> None: ...


class _DB(Protocol):
    """What a transaction uses of a connection: aiosqlite's connection, or _InThread."""

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Iterable[Any]: ...

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Closable: ...


class _Cursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def close(self) -> None:
        self._cursor.close()


class _InThread:
    """The writer's sqlite3 connection, called from inside its own thread through the
    two aiosqlite methods transactions use. These coroutines never suspend, so a whole
    transaction runs there to its end in one trip, driven by ``send(None)``.

    With aiosqlite, each statement is a trip: the thread runs it, then waits for the
    event loop to pick up the result and send the next one, and a loop busy running
    works keeps it waiting. Reaching the connection's thread needs two private names of
    aiosqlite (``Connection._execute`` and ``Connection._conn``, stable since 0.17);
    without them (:data:`_IN_THREAD` is false) transactions go statement by statement.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Iterable[Any]:
        return self._conn.execute(sql, () if parameters is None else parameters).fetchall()  # type: ignore[arg-type]

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Cursor:
        return _Cursor(self._conn.executemany(sql, parameters))  # type: ignore[arg-type]


class _Dependents:
    """The propagation walk's reads and writes in a SQLite transaction (see
    _propagation); the outputs of a ready dependent come with its count."""

    __slots__ = ("_db", "_outputs")

    def __init__(self, db: _DB) -> None:
        self._db = db
        self._outputs: dict[str, list[Data]] = {}

    async def stopped(self, ids: list[str]) -> list[tuple[str, WorkRecord]]:
        rows = await self._db.execute_fetchall(sql.DEPENDENTS, (json.dumps(ids),))
        return [(row[0], codec.record_from_row(row[2:])) for row in rows]

    async def count(self, ids: list[str]) -> list[tuple[int, WorkRecord]]:
        counted = []
        for row in await self._db.execute_fetchall(sql.UNBLOCK, (json.dumps(ids),)):
            child = codec.record_from_row(row[2:])
            if row[0] <= 0:
                self._outputs[child.id] = codec.outputs_in_order(json.loads(row[1]))
            counted.append((row[0], child))
        return counted

    async def outputs(self, ready: list[WorkRecord]) -> list[list[Data]]:
        return [self._outputs.pop(r.id) for r in ready]

    async def write(self, records: list[WorkRecord]) -> None:
        await self._db.executemany(sql.WRITE_RESOLVED, [sql.resolved_params(r) for r in records])


_IN_THREAD: Final = callable(getattr(aiosqlite.Connection, "_execute", None)) and isinstance(
    getattr(aiosqlite.Connection, "_conn", None), property
)


class _BatchError(Exception):
    def __init__(self, error: BaseException, *, transient: bool) -> None:
        self.error = error
        self.transient = transient


_Outcomes = dict[_Op, tuple[Any, BaseException | None]]


def _to_path(value: str | os.PathLike[str]) -> str:
    try:
        path: object = os.fspath(value)
    except TypeError:
        path = None
    if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("file:"):
        raise InvalidRequestError(
            "path", value, "expected a file path (use MemoryStore for works in memory)"
        )
    return path


def _check_synchronous(instance: object, attribute: object, value: object) -> None:
    if value not in ("NORMAL", "FULL"):
        raise InvalidRequestError("synchronous", value, "expected 'NORMAL' or 'FULL'")


def _check_busy_timeout(instance: object, attribute: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
        raise InvalidRequestError("busy_timeout", value, "expected seconds, 0 to 1e6")


@attrs.define(eq=False, repr=False)
class SQLiteStore(Store):
    """A store in a SQLite database file: works survive restarts of the process.

    ``SQLiteStore("wm_async.db")``; ``open_store("sqlite:///wm_async.db")`` makes the same.
    A new file is created readable by its owner only. Concurrent writes are committed
    together (group commit), so throughput comes from batching, not from weaker durability.
    A file with several hard links is refused (SQLite keeps the WAL by name), and writes
    fail with :class:`StoreGoneError` once the file is deleted or moved away.

    :param path: the database file; created if missing
    :param synchronous: ``"NORMAL"`` (a commit survives a process crash) or ``"FULL"``
        (it survives power loss too, at a cost per commit)
    :param busy_timeout: seconds to wait for another process's lock before retrying
    :raises InvalidRequestError: for an invalid argument
    """

    _path: str = attrs.field(converter=_to_path)
    _synchronous: Literal["NORMAL", "FULL"] = attrs.field(
        default="NORMAL", kw_only=True, validator=_check_synchronous
    )
    _busy_timeout: float = attrs.field(default=5.0, kw_only=True, validator=_check_busy_timeout)
    _writer: aiosqlite.Connection | None = attrs.field(init=False, default=None)
    _reader: aiosqlite.Connection | None = attrs.field(init=False, default=None)
    _lock: anyio.Lock | None = attrs.field(init=False, default=None)
    _accepting: bool = attrs.field(init=False, default=False)
    _group: GroupCommit[_Op] = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: GroupCommit(self._run_batch), takes_self=True),
    )
    _commits: int = attrs.field(init=False, default=0)  # transactions committed (for tests)
    # WAL checkpoints run on a connection of their own, off the commit path (see open).
    _checkpointer: aiosqlite.Connection | None = attrs.field(init=False, default=None)
    _checkpointing: asyncio.Task[None] | None = attrs.field(init=False, default=None)
    _written: int = attrs.field(init=False, default=0)  # rows written since the last one
    _reset_wal: bool = attrs.field(init=False, default=False)
    # The database file, held open from open() until after close() closed the connections.
    _file: _sqlite_file.DBFile | None = attrs.field(init=False, default=None)
    _scheduling: bool = attrs.field(init=False, default=False)  # holds the scheduler lock
    _absolute: str = attrs.field(init=False, default="")  # the path, at open time
    _gone: bool = attrs.field(init=False, default=False)  # the path lost the file: no writes

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- lifetime --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file, creating or migrating the schema. Idempotent.

        :raises StoreCorruptError: if the file is not a wm_async database, or was written
            by a newer wm_async; the file is left untouched
        :raises StoreError: if the file cannot be opened
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._writer is not None:
                return
            if sqlite3.sqlite_version_info < sql.MIN_SQLITE:
                raise StoreError(f"SQLiteStore needs SQLite 3.35+, not {sqlite3.sqlite_version}")
            migrations = await anyio.to_thread.run_sync(sql.migrations)
            # Before the connections: its descriptor must outlive them (see _sqlite_file).
            with anyio.CancelScope(shield=True):  # quick; and a file taken is let go
                await anyio.to_thread.run_sync(self._take_file)
            conns: list[aiosqlite.Connection] = []
            try:
                writer = await self._connect(conns)
                await self._initialise(writer, migrations)
                reader = await self._connect(conns)
                await reader.execute_fetchall("PRAGMA query_only = 1")
                checkpointer = await self._connect(conns)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    for db in conns:
                        try:
                            await db.close()
                        except aiosqlite.Error:
                            pass  # the error being raised is the one worth reporting
                self._release_file()
                if isinstance(exc, aiosqlite.Error):
                    raise self._error(exc, "opening") from exc
                raise
            self._writer, self._reader, self._accepting = writer, reader, True
            self._checkpointer = checkpointer

    async def _connect(self, conns: list[aiosqlite.Connection]) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        conns.append(db)
        await db.execute_fetchall(f"PRAGMA busy_timeout = {round(self._busy_timeout * 1000)}")
        return db

    async def _header(self, db: aiosqlite.Connection) -> tuple[int, int]:
        """``(schema version of the file, latest version known)``; raise if the file is
        not ours to use."""
        rows = await db.execute_fetchall(
            "SELECT (SELECT application_id FROM pragma_application_id), "
            "(SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_schema)"
        )
        app_id, version, objects = next(iter(rows))
        if app_id != sql.APPLICATION_ID:
            if app_id != 0 or objects:
                raise StoreCorruptError(
                    f"{self._path} is not a wm_async database (application_id {app_id:#x}, "
                    f"{objects} schema objects); wm_async left it untouched"
                )
            version = 0  # an empty database: ours to set up
        latest = sql.migrations()[-1][0]
        if version > latest:
            raise StoreCorruptError(
                f"{self._path} was written by a newer wm_async (schema version {version}, this "
                f"version knows up to {latest}); upgrade wm_async. The file was left untouched"
            )
        return version, latest

    async def _initialise(
        self, db: aiosqlite.Connection, migrations: tuple[tuple[int, tuple[str, ...]], ...]
    ) -> None:
        version, latest = await self._header(db)  # before anything writes to the file
        for attempt in count():
            # Switching to WAL returns SQLITE_BUSY at once, without waiting for the lock,
            # while another process sets up the same new file: retry for busy_timeout.
            try:
                rows = await db.execute_fetchall("PRAGMA journal_mode = WAL")
                break
            except aiosqlite.Error as exc:
                if not errors.is_transient(exc) or attempt * 0.02 >= self._busy_timeout:
                    raise
            await anyio.sleep(0.02)
        if str(next(iter(rows))[0]).lower() != "wal":
            raise StoreError(f"cannot use WAL mode for {self._path} (a network filesystem?)")
        await db.execute_fetchall(f"PRAGMA synchronous = {self._synchronous}")
        # SQLite checkpoints the WAL inside whichever COMMIT crosses 1000 pages, which
        # stalls that writer for milliseconds (a timer's work starts late). The writer
        # leaves it to the checkpointer connection instead (see _checkpoint_soon).
        await db.execute_fetchall("PRAGMA wal_autocheckpoint = 0")
        if version == latest:
            return
        # Another process may be migrating too: re-read the version inside the transaction.
        await db.execute_fetchall("BEGIN IMMEDIATE")
        try:
            version, _ = await self._header(db)
            for number, statements in migrations:
                if number > version:
                    for statement in statements:
                        await db.execute_fetchall(statement)
                    await db.execute_fetchall(f"PRAGMA user_version = {number}")
            await db.execute_fetchall(f"PRAGMA application_id = {sql.APPLICATION_ID}")
            await db.execute_fetchall("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._rollback(db)
            raise

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    async def lock_for_scheduler(self, owner: str) -> None:
        """Take the one-manager-per-file lock: a lock on the database file itself, which
        a manager opening the file by another path (a symlink, a hard link) meets too.
        No lock file is made.

        Held until :meth:`close` has closed the connections; the OS drops it when the
        process dies, so a crash never leaves it stale.

        :raises StoreError: if another manager, of this process or another, holds it
        """
        file = self._file
        if file is None or self._writer is None:
            raise self._not_open()
        if self._scheduling:
            return
        holder = file.lock_scheduler(owner)
        if holder is not None:
            raise self._refused(file, holder)
        self._scheduling = True

    def _refused(self, file: _sqlite_file.DBFile, holder: str) -> StoreError:
        return StoreError(
            f"another WorkManager already runs on {_sqlite_file.describe(self._path, file.fd)}: "
            f"the lock on the file is held by {holder}; run one manager per SQLite file "
            "(whatever path leads to it), or use PostgreSQL for several processes"
        )

    def _take_file(self) -> None:
        """Open the database file (blocking). SQLite resolves the path when it opens the
        file, so the check that it still leads there does too: a chdir changes nothing."""
        self._file = _sqlite_file.acquire(self._path)
        self._absolute = os.path.abspath(self._path)
        self._gone = False

    def _release_file(self) -> None:
        """Unlock and let go of the database file, once no connection of this store has
        it open."""
        file, self._file = self._file, None
        if file is not None:
            if self._scheduling:
                self._scheduling = False
                file.unlock_scheduler()
            file.release()

    async def close(self) -> None:
        """Finish queued writes and close both connections. Idempotent."""
        if self._lock is None:
            return
        with anyio.CancelScope(shield=True):  # bounded: waits for one batch at most
            async with self._lock:
                writer, reader = self._writer, self._reader
                if writer is None or reader is None:
                    return
                self._accepting = False
                await self._group.idle()
                self._writer = self._reader = None
                if self._checkpointing is not None:
                    await self._checkpointing
                checkpointer, self._checkpointer = self._checkpointer, None
                failure: aiosqlite.Error | None = None
                try:
                    for db in (reader, checkpointer, writer):
                        if db is None:
                            continue
                        try:
                            await db.close()
                        except aiosqlite.Error as exc:
                            failure = failure or exc
                finally:
                    # Last: a second manager may start once the writes are done, and the
                    # file's descriptor is closed only once its connections are.
                    self._release_file()
                if failure is not None:
                    raise self._error(failure, "closing") from failure

    def _checkpoint_soon(self) -> None:
        """Checkpoint the WAL on the checkpointer's thread, without holding up the
        commit that asked for it. PASSIVE: it copies what it can without waiting for (or
        blocking) the writer, and the next one catches up."""
        self._written = 0
        self._checkpointing = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            if self._checkpointer is not None:
                rows = await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
                _, frames, _ = next(iter(rows))
                # While the writer keeps writing, a checkpoint on another connection never
                # catches up with the end of the WAL, so the WAL never starts over and the
                # file grows. Once it is long, the writer finishes the checkpoint itself
                # right after a commit: only the last frames are left to copy by then.
                self._reset_wal = frames >= _WAL_RESET_FRAMES
        except aiosqlite.Error as exc:  # the next checkpoint retries; nothing is lost
            logger.debug("WAL checkpoint of %s failed: %s", self._path, exc)
        finally:
            self._checkpointing = None

    async def _finish_checkpoint(self, db: aiosqlite.Connection) -> None:
        self._reset_wal = False
        try:
            await db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except aiosqlite.Error as exc:
            logger.debug("WAL checkpoint of %s failed: %s", self._path, exc)

    def _error(self, exc: BaseException, doing: str) -> StoreError:
        return errors.store_error(exc, self._path, doing)

    def _not_open(self) -> StoreError:
        return StoreError(f"store is not open: {self._path} (use 'async with store:')")

    def _check_file(self) -> None:
        """Raise :class:`StoreGoneError` if the path no longer leads to the file the store
        opened (deleted, moved away or replaced): SQLite would go on writing to that file,
        and the writes would be lost to the next start. Run before every write transaction
        (a stat, a microsecond or two, in the writer's thread)."""
        if not self._gone:
            file = self._file
            assert file is not None  # close() waits for the batch in progress
            try:
                if _sqlite_file.identity_at(self._absolute) == file.identity:
                    return
            except OSError:
                return  # cannot tell (a directory made unsearchable): SQLite reports its own
            self._gone = True
        raise StoreGoneError(
            f"SQLite store {self._path}: the database file was deleted, moved away or replaced "
            "while in use; nothing was written, and the store takes no more writes (they "
            "would be lost). Put the file back and restart"
        )

    # -- the Store operations --------------------------------------------------------------

    async def insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None = None,
    ) -> list[WorkRecord]:
        """Insert new works, all or none, resolving chained ones; return them as stored.

        :raises InvalidRequestError: if a work with one of the ids already exists, or a
            prerequisite does not
        :raises StoreError: if the database fails
        """
        if records:
            stored: list[WorkRecord] = await self._submit(
                _Kind.INSERT, (list(records), prerequisites or None)
            )
            return stored
        if not self._accepting:
            raise self._not_open()
        return []

    async def claim_due(self, params: ClaimParams) -> Claimed:
        """Claim due unparked works, expedited first, in one transaction.

        :raises StoreError: if the database fails
        """
        rows, next_due = await self._submit(_Kind.CLAIM, params)
        # The rows are decoded here, on the loop, not in the transaction: the writer
        # thread is the busier one.
        records: list[WorkRecord] = []
        unreadable: list[tuple[float, str, int]] = []
        for row in rows:
            try:
                records.append(codec.record_from_row(row))
            except StoreCorruptError as exc:
                # Failing the whole claim would stop the dispatcher and retry the row
                # forever; fail this work alone instead.
                logger.error("%s; marked FAILED", exc)
                unreadable.append((params.now, str(exc), row[0]))
        if unreadable:
            await self._submit(_Kind.QUARANTINE, unreadable)
        return Claimed(records=records, next_due=next_due)

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        """Apply guarded changes; return the records written.

        :raises StoreError: if the database fails
        """
        if not changes:
            if not self._accepting:
                raise self._not_open()
            return []
        written: list[WorkRecord] = await self._submit(_Kind.APPLY, list(changes))
        return written

    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """Read the works under ``name``, decide with ``plan`` and carry it out, in one
        transaction of the writer (see :meth:`Store.enqueue_unique`).

        :raises StoreError: if the database fails
        """
        result: tuple[UniquePlan, list[WorkRecord]] = await self._submit(
            _Kind.UNIQUE, (name, plan)
        )
        return result

    async def respec(self, change: Change) -> WorkRecord | None:
        """Replace a work's spec and due time (compare-and-set on state, attempts and
        generation), in one transaction with its tags.

        :raises StoreError: if the database fails
        """
        result: WorkRecord | None = await self._submit(_Kind.RESPEC, change)
        return result

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished works older than the given time; return how many.

        :raises StoreError: if the database fails
        """
        deleted: int = await self._submit(_Kind.PRUNE, finished_before)
        return deleted

    async def get(self, ids: Collection[str]) -> list[WorkRecord]:
        """Records by id (unknown ids are skipped).

        :raises StoreError: if the database fails
        """
        if not ids:
            if self._reader is None:
                raise self._not_open()
            return []
        return await self._read(sql.GET, (json.dumps(list(ids)),))

    async def query(self, query: WorkQuery) -> list[WorkRecord]:
        """Records matching the query, oldest enqueue first.

        :raises StoreError: if the database fails
        """
        where: list[str] = []
        args: list[str] = []
        if query.ids:
            where.append("id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(query.id_keys)))
        if query.tags:
            where.append(
                "id IN (SELECT work_id FROM wm_work_tag WHERE tag IN "
                "(SELECT value FROM json_each(?)))"
            )
            args.append(json.dumps(list(query.tags)))
        if query.unique_names:
            where.append("unique_name IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(query.unique_names)))
        if query.states:
            # One state is written "state = 'X'" so the RUNNING / ENQUEUED indexes apply.
            states = sorted(f"'{s.value}'" for s in query.states)
            where.append(
                f"state IN ({', '.join(states)})" if len(states) > 1 else f"state = {states[0]}"
            )
        text = f"SELECT {sql.SELECT} FROM wm_work WHERE {' AND '.join(where)}"
        return await self._read(text + " ORDER BY enqueued_at, rowid", args)

    async def signals_in_use(self) -> frozenset[str]:
        """The signal names unfinished works need (one DISTINCT query).

        :raises StoreError: if the database fails
        """
        if self._reader is None:
            raise self._not_open()
        try:
            rows = await self._reader.execute_fetchall(sql.SIGNALS_IN_USE, ())
        except aiosqlite.Error as exc:
            raise self._error(exc, "reading") from exc
        names: set[str] = set()
        for (text,) in rows:
            try:
                names |= Constraints.from_json(json.loads(text)).signal_names()
            except Exception as exc:  # a malformed row: one clear error
                raise StoreCorruptError(
                    f"stored constraints {text[:80]!r} cannot be read ({exc})"
                ) from exc
        return frozenset(names)

    async def _read(self, statement: str, args: Sequence[object]) -> list[WorkRecord]:
        for attempt in count():
            if self._reader is None:
                raise self._not_open()
            try:
                rows = await self._reader.execute_fetchall(statement, args)
            except aiosqlite.Error as exc:
                delay = errors.retry_delay(exc, attempt)
                if delay is None:
                    raise self._error(exc, "reading") from exc
            else:
                return [codec.record_from_row(row) for row in rows]
            await anyio.sleep(delay)
        raise AssertionError("unreachable")

    # -- group commit: leader / follower ---------------------------------------------------

    async def _submit(self, kind: _Kind, arg: Any) -> Any:
        if not self._accepting:
            raise self._not_open()
        if self._gone:
            self._check_file()
        # A claim starts its batch at once: the dispatcher issues it right after handing
        # the last claim's works to runners, and letting their results join would keep
        # the writer idle while they run. They make the next batch, which the writer
        # runs while the loop starts the works just claimed.
        return await self._group.submit(_Op(arg, kind=kind), gather=kind is not _Kind.CLAIM)

    @property
    def _queue(self) -> list[_Op]:
        """The writes waiting for the next batch (for tests)."""
        return self._group.queue

    @property
    def _busy(self) -> bool:
        """Whether a batch runs or waits to (for tests)."""
        return self._group.busy

    async def _run_batch(self, batch: list[_Op]) -> None:
        ready = []
        for op in batch:
            try:  # serialising is pure Python: its errors belong to their caller alone
                op.prepared = self._prepare(op)
                ready.append(op)
            except Exception as exc:  # noqa: BLE001  # the caller's own error, raised there
                op.error = exc
        try:
            await self._transact(ready)
        except _BatchError as exc:
            if exc.transient or len(ready) == 1:
                for op in ready:
                    op.error = exc.error
                return
            # Find whose op failed: run each alone, so only its caller sees the error.
            for op in ready:
                try:
                    await self._transact([op])
                except _BatchError as single:
                    op.error = single.error

    def _prepare(self, op: _Op) -> Any:
        if op.kind is _Kind.INSERT:
            records, links = op.arg
            if links:
                return None  # resolved against the stored prerequisites in the transaction
            rows = [codec.insert_params(r) for r in records]
            return rows, [
                (tag, row[0]) for r, row in zip(records, rows, strict=True) for tag in r.tags
            ]
        if op.kind is _Kind.APPLY:
            return [
                (c.before.id, c.before.state._value_, c.before.run_attempt_count,
                 *codec.runtime_params(c.after))
                for c in op.arg
            ]  # fmt: skip
        return None

    async def _transact(self, ops: list[_Op]) -> None:
        """Run ``ops`` in one transaction, retrying while the database is locked."""
        if not ops:
            return
        db = self._writer
        assert db is not None  # close() waits for the batch in progress
        # A claim alone needs no explicit transaction: it writes with one statement, an
        # UPDATE … RETURNING guarded by state = 'ENQUEUED', which commits atomically by
        # itself. That saves two round trips to the connection's thread on the path
        # from a timer firing to its work starting.
        single = len(ops) == 1 and ops[0].kind is _Kind.CLAIM
        for attempt in count():
            try:
                if _IN_THREAD:
                    # The whole transaction in one trip to the connection's thread: the
                    # loop goes on running works meanwhile instead of waking up between
                    # statements (see _InThread).
                    outcomes = await db._execute(  # type: ignore[no-untyped-call]
                        self._transact_in_thread, db._conn, ops, single
                    )
                else:
                    outcomes = await self._transaction(db, ops, single)
            except StoreGoneError as exc:  # every op of the batch: none was written
                raise _BatchError(exc, transient=True) from exc
            except (aiosqlite.Error, OverflowError) as exc:  # OverflowError: int > 2**63 - 1
                delay = errors.retry_delay(exc, attempt)
                if delay is None:
                    error = self._error(exc, "writing")
                    error.__cause__ = exc
                    raise _BatchError(error, transient=errors.is_transient(exc)) from exc
            except Exception as exc:
                raise _BatchError(exc, transient=False) from exc
            else:
                self._commits += 1
                for op in ops:
                    op.result, op.error = outcomes[op]
                self._written += sum(_rows_written(op) for op in ops)
                if self._written >= _CHECKPOINT_ROWS and self._checkpointing is None:
                    self._checkpoint_soon()
                if self._reset_wal:
                    await self._finish_checkpoint(db)
                return
            await anyio.sleep(delay)

    def _transact_in_thread(
        self, conn: sqlite3.Connection, ops: list[_Op], single: bool
    ) -> _Outcomes:
        """In the writer connection's thread: run the transaction to its end."""
        transaction = self._transaction(_InThread(conn), ops, single)
        try:
            transaction.send(None)
        except StopIteration as done:
            outcomes: _Outcomes = done.value
            return outcomes
        transaction.close()
        raise RuntimeError("a transaction awaited something outside the database")

    async def _transaction(self, db: _DB, ops: list[_Op], single: bool) -> _Outcomes:
        self._check_file()  # before anything is written
        if single:
            return await self._execute(db, ops)
        await db.execute_fetchall("BEGIN IMMEDIATE")
        try:
            outcomes = await self._execute(db, ops)
            await db.execute_fetchall("COMMIT")
        except BaseException:
            await self._rollback(db)
            raise
        return outcomes

    @staticmethod
    async def _rollback(db: _DB) -> None:
        try:
            await db.execute_fetchall("ROLLBACK")
        except aiosqlite.Error:
            pass  # BEGIN had failed: there is no transaction to roll back

    async def _execute(self, db: _DB, ops: list[_Op]) -> _Outcomes:
        # Ops of one batch are concurrent, so any order is a valid serial order: inserts
        # first (their works can be claimed at once), all applies merged, then the rest.
        out: _Outcomes = {}
        inserts = [op for op in ops if op.kind is _Kind.INSERT]
        if inserts:
            await self._insert(db, inserts, out)
        applies = [op for op in ops if op.kind is _Kind.APPLY]
        if applies:
            await self._apply(db, applies, out)
        for op in ops:
            if op.kind is _Kind.CLAIM:
                out[op] = (await self._claim(db, op.arg), None)
            elif op.kind is _Kind.UNIQUE:
                out[op] = (await self._unique(db, *op.arg), None)
            elif op.kind is _Kind.QUARANTINE:
                await (await db.executemany(sql.QUARANTINE, op.arg)).close()
                out[op] = (None, None)
            elif op.kind is _Kind.RESPEC:
                out[op] = (await self._respec(db, op.arg), None)
            elif op.kind is _Kind.PRUNE:
                await db.execute_fetchall(sql.PRUNE_TAGS, (op.arg,))
                await db.execute_fetchall(sql.PRUNE_EDGES, (op.arg,))
                deleted = await db.execute_fetchall(sql.PRUNE_WORKS, (op.arg,))
                out[op] = (len(list(deleted)), None)
        return out

    async def _unique(
        self, db: _DB, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        # Inside the writer's transaction: no other write can slip between the read and
        # the plan's writes, so concurrent enqueues on one name serialise.
        rows = await db.execute_fetchall(sql.BY_UNIQUE_NAME, (name,))
        existing = [codec.record_from_row(row) for row in rows]
        leaves = existing
        if existing:
            ids = json.dumps([r.id for r in existing])
            inner = {row[0] for row in await db.execute_fetchall(sql.HAVE_DEPENDENTS, (ids,))}
            leaves = [r for r in existing if r.id not in inner]
        decided = plan(existing, leaves)
        gone = set(decided.deletes)
        fresh = [r.id for r in decided.inserts if r.id not in gone]
        if fresh:
            taken = [
                row[0] for row in await db.execute_fetchall(sql.EXISTING_IDS, (json.dumps(fresh),))
            ]
            if taken:
                raise InvalidRequestError("id", taken, "a work with this id already exists")
        written: list[WorkRecord] = []
        if decided.cancels:
            flat = [
                value
                for c in decided.cancels
                for value in (c.before.id, c.before.state.value, c.before.run_attempt_count,
                              *codec.runtime_params(c.after))
            ]  # fmt: skip
            done: dict[str, bool] = {
                work_id: bool(has_dependents)
                for work_id, _, has_dependents in await db.execute_fetchall(
                    sql.apply_sql(len(decided.cancels)), flat
                )
            }
            ended: dict[str, tuple[WorkRecord, Any]] = {}
            for c in decided.cancels:
                if c.after.id in done:
                    written.append(c.after)
                    if done[c.after.id]:
                        ended[c.after.id] = (c.after, None)
            if ended:
                written += [r for _, r in await self._propagate(db, ended)]
        if decided.deletes:
            doomed = json.dumps(list(decided.deletes))
            await db.execute_fetchall(sql.DELETE_TAGS_OF, (doomed,))
            await db.execute_fetchall(sql.DELETE_EDGES_OF, (doomed,))
            await db.execute_fetchall(sql.DELETE_WORKS, (doomed,))
        if decided.inserts:
            written += await self._insert_new(
                db, decided.inserts, decided.prerequisites, skip=gone
            )
        return decided, written

    @staticmethod
    async def _respec(db: _DB, change: Change) -> WorkRecord | None:
        before, after = change.before, change.after
        params = codec.insert_params(after)
        rows = await db.execute_fetchall(
            sql.RESPEC,
            (*params[1:codec.N_SPEC], after.next_run_at, params[-1], before.id, before.state.value,
             before.run_attempt_count, before.generation),
        )  # fmt: skip
        if not list(rows):
            return None
        await db.execute_fetchall(sql.DELETE_TAGS, (after.id,))
        await db.executemany(sql.INSERT_TAG, [(tag, after.id) for tag in after.tags])
        return after

    async def _insert(self, db: _DB, ops: list[_Op], out: _Outcomes) -> None:
        ids = [r.id for op in ops for r in op.arg[0]]
        taken = {r[0] for r in await db.execute_fetchall(sql.EXISTING_IDS, (json.dumps(ids),))}
        works: list[tuple[object, ...]] = []
        tags: list[tuple[str, object]] = []
        for op in ops:
            records, links = op.arg
            mine: set[str] = set()
            for record in records:
                if record.id in taken or record.id in mine:
                    error = InvalidRequestError(
                        "id", record.id, "a work with this id already exists"
                    )
                    out[op] = (None, error)
                    break
                mine.add(record.id)
            else:
                if links:
                    try:  # chains: resolved now, each op on its own (rare next to plain ones)
                        out[op] = (await self._insert_new(db, records, links), None)
                    except InvalidRequestError as exc:
                        out[op] = (None, exc)
                        continue
                else:
                    rows, op_tags = op.prepared
                    works += rows
                    tags += op_tags
                    out[op] = (records, None)
                taken |= mine
        if works:
            await (await db.executemany(sql.INSERT_WORK, works)).close()
        if tags:
            await (await db.executemany(sql.INSERT_TAG, tags)).close()

    async def _insert_new(
        self,
        db: _DB,
        records: Sequence[WorkRecord],
        links: _Links,
        *,
        skip: Collection[str] = (),
    ) -> list[WorkRecord]:
        """Insert works, chained ones in the state their prerequisites give them (their
        ids are free; prerequisites in ``skip`` are being deleted)."""
        if not links:
            await db.executemany(sql.INSERT_WORK, [codec.insert_params(r) for r in records])
            await db.executemany(sql.INSERT_TAG, [(t, r.id) for r in records for t in r.tags])
            return list(records)
        new = {r.id for r in records}
        wanted = {p for ps in links.values() for p in ps if p not in new and p not in skip}
        known: dict[str, WorkRecord] = {}
        if wanted:
            found = await db.execute_fetchall(sql.GET, (json.dumps(sorted(wanted)),))
            known = {row[1]: codec.record_from_row(row) for row in found}
        stored, waiting, edges = resolve_new(records, links, known)
        rows = [(*codec.insert_params(r), n) for r, n in zip(stored, waiting, strict=True)]
        await db.executemany(sql.INSERT_CHAINED, rows)
        await db.executemany(sql.INSERT_TAG, [(t, r.id) for r in stored for t in r.tags])
        await db.executemany(sql.INSERT_DEPENDENCY, edges)
        return stored

    @staticmethod
    async def _propagate(
        db: _DB, ended: dict[str, tuple[WorkRecord, Any]]
    ) -> list[tuple[Any, WorkRecord]]:
        """Resolve the BLOCKED dependents of the ``ended`` works (id → (record, origin));
        return ``(origin, record)`` for each dependent written."""
        return await propagate(_Dependents(db), ended)

    async def _apply(self, db: _DB, ops: list[_Op], out: _Outcomes) -> None:
        # A work changed twice in one batch goes into successive statements, so the second
        # change is checked against the first one's write, as if applied one by one.
        slots: list[list[WorkRecord | None]] = []
        rounds: list[list[tuple[list[WorkRecord | None], int, Change, tuple[Any, ...]]]] = []
        seen: dict[str, int] = {}
        ended: dict[str, tuple[WorkRecord, Any]] = {}  # finished works with dependents
        for op in ops:
            slot: list[WorkRecord | None] = [None] * len(op.arg)
            slots.append(slot)
            for i, (change, params) in enumerate(zip(op.arg, op.prepared, strict=True)):
                n = seen[params[0]] = seen.get(params[0], -1) + 1
                if n == len(rounds):
                    rounds.append([])
                rounds[n].append((slot, i, change, params))
        for entries in rounds:
            for start in range(0, len(entries), sql.APPLY_MAX_ROWS):
                chunk = entries[start : start + sql.APPLY_MAX_ROWS]
                # Padded to a power of two with rows that match nothing (id NULL), so a
                # few prepared statements serve every batch size.
                size = min(1 << (len(chunk) - 1).bit_length(), sql.APPLY_MAX_ROWS)
                flat = [v for entry in chunk for v in entry[3]]
                flat += [None] * (len(chunk[0][3]) * (size - len(chunk)))
                by_id = {entry[3][0]: entry for entry in chunk}
                stale = []
                for work_id, generation, has_dependents in await db.execute_fetchall(
                    sql.apply_sql(size), flat
                ):
                    slot, i, change, _ = by_id[work_id]
                    if generation == change.after.generation:
                        slot[i] = change.after
                    else:  # the spec was updated meanwhile: it was kept, so read it back
                        stale.append(work_id)
                    if has_dependents:
                        ended[work_id] = (change.after, slot)
                if stale:
                    for row in await db.execute_fetchall(sql.GET, (json.dumps(stale),)):
                        slot, i, _, _ = by_id[row[1]]
                        current = slot[i] = codec.record_from_row(row)
                        if row[1] in ended:
                            ended[row[1]] = (current, slot)
        extra: dict[int, list[WorkRecord]] = {}
        if ended:
            for slot, record in await self._propagate(db, ended):
                extra.setdefault(id(slot), []).append(record)
        for op, slot in zip(ops, slots, strict=True):
            out[op] = ([r for r in slot if r is not None] + extra.get(id(slot), []), None)

    async def _claim(self, db: _DB, params: ClaimParams) -> tuple[list[Any], float | None]:
        """Claim in the database; the caller decodes the rows (``claim_due``)."""
        limit = max(params.limit, 0)
        blocked = sorted(params.blocked_signals)
        args: dict[str, object] = {"now": params.now, "k": limit + 1}
        args.update((f"b{i}", f",{codec.signal_key(name)},") for i, name in enumerate(blocked))
        branches: tuple[list[tuple[float, int]], ...] = ([], [], [], [])
        statement = sql.claim_sql(len(blocked))
        for branch, rowid, due in await db.execute_fetchall(statement, args):
            branches[branch].append((due, rowid))
        chosen: list[int] = []
        next_due: float | None = None
        for due_now, future in ((branches[0], branches[2]), (branches[1], branches[3])):
            due_now.sort(key=itemgetter(0))  # stable: ties keep the index order
            take = min(len(due_now), limit - len(chosen))
            chosen += [rowid for _, rowid in due_now[:take]]
            rest = due_now[take:] or future
            if rest and (next_due is None or rest[0][0] < next_due):
                next_due = rest[0][0]
        if not chosen:
            return [], next_due
        rows = list(
            await db.execute_fetchall(
                sql.CLAIM_UPDATE, (params.now, params.owner, json.dumps(chosen))
            )
        )
        order = {rowid: i for i, rowid in enumerate(chosen)}
        rows.sort(key=lambda row: order[row[0]])
        return rows, next_due
