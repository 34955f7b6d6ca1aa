"""SQLiteStore's dashboard reads (:meth:`Store.browse`, :meth:`Store.overview`,
:meth:`Store.edges`), on the reader connection, from the indexes of migration 008: a
page is one index range read newest first after its keyset cursor, and the overview's
aggregates read the unfinished works and the window's finished works from indexes
alone."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Final

from . import _sqlite_sql as sqlite_sql
from ._browse import MAX_LISTED, BrowseFilter, Overview, Tally, WorkPage

if TYPE_CHECKING:
    import aiosqlite

    from .._core.errors import StoreError
    from .._core.record import WorkRecord

_S: Final = sqlite_sql.SELECT
_UNFINISHED: Final = "state IN ('BLOCKED', 'ENQUEUED', 'RUNNING')"
_FINISHED: Final = "state IN ('CANCELLED', 'FAILED', 'SUCCEEDED')"

#: From the state index alone (which holds the worker), never a scan of all works.
COUNTS: Final = (
    "SELECT worker, state, count(*) FROM wm_work INDEXED BY wm_work_browse_state "
    f"WHERE {_UNFINISHED} GROUP BY 1, 2"
)
TAG_COUNTS: Final = (
    "SELECT j.value, w.state, count(*) FROM wm_work AS w INDEXED BY wm_work_browse_state, "
    f"json_each(w.tags) AS j WHERE w.{_UNFINISHED} GROUP BY 1, 2"
)
#: The window's finished works by bucket, state and worker (the index alone).
FINISHED: Final = (
    "SELECT CAST((finished_at - ?1) / ?2 AS INTEGER), state, worker, tags, count(*), "
    "count(CASE WHEN state != 'CANCELLED' THEN started_at END), "
    "total(CASE WHEN state != 'CANCELLED' THEN finished_at - started_at END), "
    "count(late), total(late), max(late) "
    f"FROM wm_work WHERE finished_at IS NOT NULL AND finished_at >= ?1 AND {_FINISHED} "
    "GROUP BY 1, 2, 3, 4"
)
DUE: Final = (
    f"SELECT {_S} FROM wm_work WHERE state = 'ENQUEUED' AND next_run_at <= ? "
    f"ORDER BY next_run_at, id LIMIT {MAX_LISTED}"
)
DUE_COUNT: Final = "SELECT count(*) FROM wm_work WHERE state = 'ENQUEUED' AND next_run_at <= ?"
RUNNING: Final = (
    f"SELECT {_S} FROM wm_work WHERE state = 'RUNNING' ORDER BY started_at, id LIMIT {MAX_LISTED}"
)
EDGES: Final = (
    "SELECT prerequisite_id, work_id FROM wm_dependency "
    "WHERE prerequisite_id IN (SELECT value FROM json_each(?1)) UNION "
    "SELECT prerequisite_id, work_id FROM wm_dependency "
    "WHERE work_id IN (SELECT value FROM json_each(?1))"
)


#: Below this many works with the filter's tag, a page reads them all through the tag
#: table and sorts them; from it on, it reads the newest works until it has a page (a
#: common tag is met soon; a rare one would cost a read of every work).
RARE_TAG: Final = 5_000
TAG_COUNT: Final = (
    f"SELECT count(*) FROM (SELECT 1 FROM wm_work_tag WHERE tag = ? LIMIT {RARE_TAG})"
)


def browse_sql(flt: BrowseFilter, *, rare_tag: bool = False) -> tuple[str, list[object]]:
    """The statement and arguments of a page (one row more than the limit: whether more
    follow); ``rare_tag``: fewer than :data:`RARE_TAG` works have the filter's tag."""
    where: list[str] = []
    args: list[object] = []
    if flt.states:
        # Enum values are our constants: literals let the state index apply.
        states = sorted(f"'{s.value}'" for s in flt.states)
        where.append(f"state IN ({', '.join(states)})")
    if flt.worker is not None:
        where.append("worker = ?")
        args.append(flt.worker)
    if flt.tag is not None:
        if rare_tag:
            where.append("id IN (SELECT work_id FROM wm_work_tag WHERE tag = ?)")
        else:
            where.append(
                "EXISTS (SELECT 1 FROM wm_work_tag WHERE tag = ? AND work_id = wm_work.id)"
            )
        args.append(flt.tag)
    if flt.unique_name is not None:
        where.append("unique_name = ?")
        args.append(flt.unique_name)
    if flt.id_prefix is not None:
        where.append("id >= ? AND id < ?")  # BINARY collation: a range of the primary key
        args += [flt.id_prefix, flt.id_prefix + "~"]
    if flt.since is not None:
        where.append("enqueued_at >= ?")
        args.append(flt.since)
    if flt.until is not None:
        where.append("enqueued_at < ?")
        args.append(flt.until)
    if flt.before is not None:
        where.append("(enqueued_at, id) < (?, ?)")
        args += list(flt.before)
    text = f"SELECT {_S} FROM wm_work"
    if where:
        text += " WHERE " + " AND ".join(where)
    args.append(flt.limit + 1)
    return text + " ORDER BY enqueued_at DESC, id DESC LIMIT ?", args


class SQLiteBrowse:
    """The dashboard reads of :class:`~wm_async.stores.SQLiteStore` (which is one)."""

    if TYPE_CHECKING:
        _reader: aiosqlite.Connection | None

        async def _read(self, statement: str, args: Sequence[object]) -> list[WorkRecord]: ...
        def _not_open(self) -> StoreError: ...
        def _error(self, exc: BaseException, doing: str) -> StoreError: ...

    async def _rows(self, statement: str, args: Sequence[object]) -> list[Any]:
        import aiosqlite

        if self._reader is None:
            raise self._not_open()
        try:
            return list(await self._reader.execute_fetchall(statement, args))
        except aiosqlite.Error as exc:
            raise self._error(exc, "reading") from exc

    async def browse(self, flt: BrowseFilter) -> WorkPage:
        """A page of works, newest first, from one index range (see ``_browse``).

        :raises StoreError: if the database fails
        """
        rare = False
        if flt.tag is not None:
            (found,) = (await self._rows(TAG_COUNT, (flt.tag,)))[0]
            rare = found < RARE_TAG
        text, args = browse_sql(flt, rare_tag=rare)
        records = await self._read(text, args)
        return WorkPage(records=records[: flt.limit], more=len(records) > flt.limit)

    async def overview(self, *, now: float, since: float, bucket: float) -> Overview:
        """The overview's aggregates (see :meth:`Store.overview`).

        :raises InvalidRequestError: for an empty window or too many buckets
        :raises StoreError: if the database fails
        """
        tally = Tally(now, since, bucket)
        tally.add_rows(
            await self._rows(COUNTS, ()),
            await self._rows(TAG_COUNTS, ()),
            await self._rows(FINISHED, (since, bucket)),
        )
        due = await self._read(DUE, (now,))
        (due_count,) = (await self._rows(DUE_COUNT, (now,)))[0]
        running = await self._read(RUNNING, ())
        return tally.overview(due, due_count, running)

    async def edges(self, ids: Collection[str]) -> list[tuple[str, str]]:
        """The chain edges touching ``ids``.

        :raises StoreError: if the database fails
        """
        if not ids:
            return []
        return [(p, w) for p, w in await self._rows(EDGES, (json.dumps(list(ids)),))]
