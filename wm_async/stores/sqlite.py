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

import json
import logging
import os
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from itertools import count
from typing import TYPE_CHECKING, Any, Literal

import aiosqlite
import anyio
import attrs

from .._core.errors import (
    StoreCorruptError,
    StoreError,
    StoreGoneError,
)
from .._core.model import Constraints
from . import _codec as codec
from . import _sqlite_errors as errors
from . import _sqlite_file
from . import _sqlite_options as options
from . import _sqlite_sql as sqlite_sql
from ._base import Claimed, ClaimParams, Store, StoreListener
from ._group_commit import GroupCommit
from ._sqlite_browse import SQLiteBrowse
from ._sqlite_counts import WorkCounts
from ._sqlite_ops import (
    BatchError,
    Kind,
    WriteOp,
    prepare,
    rows_written,
    transact,
)
from ._sqlite_peers import Notifier, Statements, data_version, load_peers
from ._sqlite_setup import initialise
from ._sqlite_wal import Checkpoints

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from .._core.lifecycle import (
        Change,
        UniquePlan,
    )
    from .._core.model import WorkQuery
    from .._core.record import WorkRecord
    from ._base import UniquePlanner

__all__ = ["SQLiteStore"]

logger = logging.getLogger("wm_async.store")


@attrs.define(eq=False, repr=False)
class SQLiteStore(SQLiteBrowse, WorkCounts, Store):
    """A store in a SQLite database file: works survive restarts of the process.

    ``SQLiteStore("wm_async.db")``; ``open_store("sqlite:///wm_async.db")`` makes the same.
    A new file is created readable by its owner only. Concurrent writes are committed
    together (group commit), so throughput comes from batching, not from weaker durability.
    A file with several hard links is refused (SQLite keeps the WAL by name), and writes
    fail with :class:`StoreGoneError` once the file is deleted or moved away. Arguments:

    - ``path``: the database file; created if missing
    - ``synchronous``: ``"NORMAL"`` (a commit survives a process crash) or ``"FULL"``
      (it survives power loss too, at a cost per commit)
    - ``busy_timeout``: seconds to wait for another process's lock before retrying
    - ``poll_interval``: while following the file (:meth:`follow`), seconds between
      checks for writes of other processes that no notification announced

    :raises InvalidRequestError: for an invalid argument
    """

    _path: str = attrs.field(converter=options.to_path)
    _synchronous: Literal["NORMAL", "FULL"] = attrs.field(
        default="NORMAL", kw_only=True, validator=options.check_synchronous
    )
    _busy_timeout: float = attrs.field(
        default=5.0, kw_only=True, validator=options.check_busy_timeout
    )
    _poll_interval: float = attrs.field(
        default=1.0, kw_only=True, validator=options.check_poll_interval
    )
    _writer: aiosqlite.Connection | None = attrs.field(init=False, default=None)
    _reader: aiosqlite.Connection | None = attrs.field(init=False, default=None)
    _lock: anyio.Lock | None = attrs.field(init=False, default=None)
    _accepting: bool = attrs.field(init=False, default=False)
    _group: GroupCommit[WriteOp] = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: GroupCommit(self._run_batch), takes_self=True),
    )
    _commits: int = attrs.field(init=False, default=0)  # transactions committed (for tests)
    # WAL checkpoints run on a connection of their own, off the commit path (see open).
    _checkpoints: Checkpoints = attrs.field(
        init=False, default=attrs.Factory(lambda self: Checkpoints(self._path), takes_self=True)
    )
    # The database file, held open from open() until after close() closed the connections.
    _file: _sqlite_file.DBFile | None = attrs.field(init=False, default=None)
    _scheduling: bool = attrs.field(init=False, default=False)  # holds the scheduler lock
    _absolute: str = attrs.field(init=False, default="")  # the path, at open time
    _gone: bool = attrs.field(init=False, default=False)  # the path lost the file: no writes
    # Tells the other processes following the file what each commit wrote (see follow).
    _notifier: Notifier = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: Notifier(lambda ns: load_peers(self._reader, ns), self._write_peers),
            takes_self=True,
        ),
    )

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
            if sqlite3.sqlite_version_info < sqlite_sql.MIN_SQLITE:
                raise StoreError(f"SQLiteStore needs SQLite 3.35+, not {sqlite3.sqlite_version}")
            migrations = await anyio.to_thread.run_sync(sqlite_sql.migrations)
            # Before the connections: its descriptor must outlive them (see _sqlite_file).
            with anyio.CancelScope(shield=True):  # quick; and a file taken is let go
                await anyio.to_thread.run_sync(self._take_file)
            conns: list[aiosqlite.Connection] = []
            try:
                writer = await self._connect(conns)
                await initialise(
                    writer,
                    self._path,
                    migrations,
                    synchronous=self._synchronous,
                    busy_timeout=self._busy_timeout,
                )
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
            self._checkpoints.connection = checkpointer

    async def _connect(self, conns: list[aiosqlite.Connection]) -> aiosqlite.Connection:
        # check_same_thread: a small insert may run on the loop's thread (see transact)
        db = await aiosqlite.connect(self._path, isolation_level=None, check_same_thread=False)
        conns.append(db)
        await db.execute_fetchall(f"PRAGMA busy_timeout = {round(self._busy_timeout * 1000)}")
        return db

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def data_path(self) -> str:
        """The database file (its disk is the one ``storage_not_low`` watches)."""
        return self._path

    async def lock_for_scheduler(self, owner: str) -> None:
        """Take the one-scheduler-per-file lock, or raise (see
        :meth:`try_lock_for_scheduler`).

        :raises StoreError: if another manager, of this process or another, holds it
        """
        file = self._file
        if file is None or self._writer is None:
            raise self._not_open()
        if not self._scheduling:
            holder = file.lock_scheduler(owner)
            if holder is not None:
                raise self._refused(file, holder)
            self._scheduling = True

    async def try_lock_for_scheduler(self, owner: str) -> bool:
        """Take the one-scheduler-per-file lock if it is free: a lock on the database
        file itself, which a manager opening the file by another path (a symlink, a hard
        link) meets too. No lock file is made. Any number of processes may use the file
        at once; the one holding this lock schedules and runs the works.

        Held until :meth:`close` has closed the connections; the OS drops it when the
        process dies, so a crash never leaves it stale and a standby takes over.

        :raises StoreError: if the store is not open, or the OS cannot lock the file
        """
        file = self._file
        if file is None or self._writer is None:
            raise self._not_open()
        if not self._scheduling:
            if file.lock_scheduler(owner) is not None:
                return False
            self._scheduling = True
        return True

    def _refused(self, file: _sqlite_file.DBFile, holder: str) -> StoreError:
        return StoreError(
            f"another WorkManager schedules the works of "
            f"{_sqlite_file.describe(self._path, file.fd)}: the scheduler lock on the file "
            f"is held by {holder} (whatever path leads to it)"
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
                await self._notifier.settle()  # a dead peer found is still unlisted
                self._accepting = False
                await self._group.idle()
                await self._notifier.settle()
                self._writer = self._reader = None
                checkpointer = await self._checkpoints.close()
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

    # -- other processes' writes -----------------------------------------------------------

    async def follow(
        self,
        listener: StoreListener,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tell ``listener`` what other processes (and other stores of this one) write to
        the file, until cancelled: on Linux, each writer's commits are announced to this
        store's socket at once; everywhere, a poll every ``poll_interval`` (real time,
        whatever the listener's clock: it only prompts re-reads) catches writes no
        announcement told of (``changed(None)``). See ``_sqlite_peers``.

        :raises StoreError: if the store is not open
        """
        file = self._file
        if file is None or self._writer is None:
            raise self._not_open()
        dev, ino = file.identity
        await self._notifier.follow(
            listener,
            prefix=f"wm_async/{dev}:{ino}",
            poll_interval=self._poll_interval,
            data_version=lambda: data_version(self._writer),
            task_status=task_status,
        )

    async def _write_peers(self, statements: Statements) -> None:
        await self._submit(Kind.PEERS, statements)

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
                Kind.INSERT, (list(records), prerequisites or None)
            )
            return stored
        if not self._accepting:
            raise self._not_open()
        return []

    async def claim_due(self, params: ClaimParams) -> Claimed:
        """Claim due unparked works, expedited first, in one transaction.

        :raises StoreError: if the database fails
        """
        rows, next_due, held = await self._submit(Kind.CLAIM, params)
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
            await self._submit(Kind.QUARANTINE, unreadable)
        return Claimed(records=records, next_due=next_due, held=held)

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        """Apply guarded changes; return the records written.

        :raises StoreError: if the database fails
        """
        if not changes:
            if not self._accepting:
                raise self._not_open()
            return []
        written: list[WorkRecord] = await self._submit(Kind.APPLY, list(changes))
        return written

    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """Read the works under ``name``, decide with ``plan`` and carry it out, in one
        transaction of the writer (see :meth:`Store.enqueue_unique`).

        :raises StoreError: if the database fails
        """
        result: tuple[UniquePlan, list[WorkRecord]] = await self._submit(Kind.UNIQUE, (name, plan))
        return result

    async def update_spec(self, change: Change) -> WorkRecord | None:
        """Replace a work's spec and due time (compare-and-set on state, attempts and
        generation), in one transaction with its tags.

        :raises StoreError: if the database fails
        """
        result: WorkRecord | None = await self._submit(Kind.UPDATE_SPEC, change)
        return result

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished works older than the given time; return how many.

        :raises StoreError: if the database fails
        """
        deleted: int = await self._submit(Kind.PRUNE, finished_before)
        return deleted

    async def get(self, ids: Collection[str]) -> list[WorkRecord]:
        """Records by id (unknown ids are skipped).

        :raises StoreError: if the database fails
        """
        if not ids:
            if self._reader is None:
                raise self._not_open()
            return []
        return await self._read(sqlite_sql.GET, (json.dumps(list(ids)),))

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
        text = f"SELECT {sqlite_sql.SELECT} FROM wm_work WHERE {' AND '.join(where)}"
        return await self._read(text + " ORDER BY enqueued_at, rowid", args)

    async def pause_worker(self, name: str, *, now: float) -> None:
        """Pause ``name`` (a row of ``wm_paused``); the peers re-read the paused names."""
        await self._submit(Kind.PAUSE, [(sqlite_sql.PAUSE, (name, now))])

    async def resume_worker(self, name: str) -> None:
        """Resume ``name``; the peers re-read the paused names."""
        await self._submit(Kind.PAUSE, [(sqlite_sql.RESUME, (name,))])

    async def paused_workers(self) -> frozenset[str]:
        """The paused worker names (``wm_paused``)."""
        if self._reader is None:
            raise self._not_open()
        try:
            rows = await self._reader.execute_fetchall(sqlite_sql.PAUSED, ())
        except aiosqlite.Error as exc:
            raise self._error(exc, "reading") from exc
        return frozenset(row[0] for row in rows)

    async def signals_in_use(self) -> frozenset[str]:
        """The signal names unfinished works need (one DISTINCT query).

        :raises StoreError: if the database fails
        """
        if self._reader is None:
            raise self._not_open()
        try:
            rows = await self._reader.execute_fetchall(sqlite_sql.SIGNALS_IN_USE, ())
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

    async def _submit(self, kind: Kind, arg: Any) -> Any:
        if not self._accepting:
            raise self._not_open()
        if self._gone:
            self._check_file()
        # A claim starts its batch at once: the dispatcher issues it right after handing
        # the last claim's works to runners, and letting their results join would keep
        # the writer idle while they run. They make the next batch, which the writer
        # runs while the loop starts the works just claimed.
        return await self._group.submit(WriteOp(arg, kind=kind), gather=kind is not Kind.CLAIM)

    @property
    def _queue(self) -> list[WriteOp]:
        """The writes waiting for the next batch (for tests)."""
        return self._group.queue

    @property
    def _busy(self) -> bool:
        """Whether a batch runs or waits to (for tests)."""
        return self._group.busy

    async def _run_batch(self, batch: list[WriteOp]) -> None:
        ready = []
        for op in batch:
            try:  # serialising is pure Python: its errors belong to their caller alone
                op.prepared = prepare(op)
                ready.append(op)
            except Exception as exc:  # noqa: BLE001  # the caller's own error, raised there
                op.error = exc
        try:
            await self._transact(ready)
        except BatchError as exc:
            if exc.transient or len(ready) == 1:
                for op in ready:
                    op.error = exc.error
                return
            # Find whose op failed: run each alone, so only its caller sees the error.
            for op in ready:
                try:
                    await self._transact([op])
                except BatchError as single:
                    op.error = single.error

    async def _transact(self, ops: list[WriteOp]) -> None:
        """Run ``ops`` in one transaction, retrying while the database is locked."""
        if not ops:
            return
        db = self._writer
        assert db is not None  # close() waits for the batch in progress
        for attempt in count():
            try:
                outcomes = await transact(
                    db,
                    ops,
                    check=self._check_file,
                    inline=self._synchronous == "NORMAL",
                    busy_timeout=self._busy_timeout,
                )
            except StoreGoneError as exc:  # every op of the batch: none was written
                raise BatchError(exc, transient=True) from exc
            except (aiosqlite.Error, OverflowError) as exc:  # OverflowError: int > 2**63 - 1
                delay = errors.retry_delay(exc, attempt)
                if delay is None:
                    error = self._error(exc, "writing")
                    error.__cause__ = exc
                    raise BatchError(error, transient=errors.is_transient(exc)) from exc
            except Exception as exc:
                raise BatchError(exc, transient=False) from exc
            else:
                self._commits += 1
                for op in ops:
                    op.result, op.error = outcomes[op]
                self._notifier.committed(ops)
                await self._checkpoints.committed(sum(rows_written(op) for op in ops), db)
                return
            await anyio.sleep(delay)
