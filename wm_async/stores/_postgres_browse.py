"""PostgresStore's dashboard reads (:meth:`Store.browse`, :meth:`Store.overview`,
:meth:`Store.edges`), from the indexes of migration 008: a page is one index range read
newest first after its keyset cursor, and the overview's aggregates read the unfinished
works and the window's finished works from indexes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._browse import MAX_LISTED, BrowseFilter, Overview, Tally, WorkPage
from ._codec import record_from_row
from ._postgres_sql import SELECT_COLUMNS, Statement

if TYPE_CHECKING:
    from ._postgres_ops import Transactions

_T = TypeVar("_T")
_UNFINISHED: Final = "state IN ('BLOCKED', 'ENQUEUED', 'RUNNING')"
_FINISHED: Final = "state IN ('CANCELLED', 'FAILED', 'SUCCEEDED')"


class _Statements:
    """The dashboard's statements for one schema."""

    def __init__(self, quoted: str) -> None:
        t = f"{quoted}.wm_work"
        d = f"{quoted}.wm_dependency"
        self.table = t
        s = self.select = ", ".join(SELECT_COLUMNS)
        self.counts = Statement(
            f"SELECT worker, state, count(*) FROM {t} WHERE {_UNFINISHED} GROUP BY 1, 2"
        )
        self.tag_counts = Statement(
            "SELECT j.tag, w.state, count(*) FROM "
            f"{t} AS w, jsonb_array_elements_text(w.tags::jsonb) AS j(tag) "
            f"WHERE w.{_UNFINISHED} GROUP BY 1, 2"
        )
        self.finished = Statement(
            "SELECT floor((finished_at - :since::float8) / :bucket::float8)::int8, state, "
            "worker, tags, count(*), "
            "count(CASE WHEN state <> 'CANCELLED' THEN started_at END), "
            "coalesce(sum(CASE WHEN state <> 'CANCELLED' THEN finished_at - started_at END), 0), "
            "count(late), coalesce(sum(late), 0), max(late) "
            f"FROM {t} WHERE finished_at IS NOT NULL AND finished_at >= :since::float8 "
            f"AND {_FINISHED} GROUP BY 1, 2, 3, 4"
        )
        self.due = Statement(
            f"SELECT {s} FROM {t} WHERE state = 'ENQUEUED' AND next_run_at <= :now::float8 "
            f"ORDER BY next_run_at, id LIMIT {MAX_LISTED}"
        )
        self.due_count = Statement(
            f"SELECT count(*) FROM {t} WHERE state = 'ENQUEUED' AND next_run_at <= :now::float8"
        )
        self.running = Statement(
            f"SELECT {s} FROM {t} WHERE state = 'RUNNING' ORDER BY started_at, id "
            f"LIMIT {MAX_LISTED}"
        )
        self.edges = Statement(
            f"SELECT prerequisite_id, work_id FROM {d} WHERE prerequisite_id = ANY(:ids::text[]) "
            f"UNION SELECT prerequisite_id, work_id FROM {d} WHERE work_id = ANY(:ids::text[])"
        )

    def browse(self, flt: BrowseFilter) -> tuple[str, list[object]]:
        """The statement and arguments of a page (one row more than the limit)."""
        where: list[str] = []
        args: list[object] = []

        def arg(value: object, cast: str) -> str:
            args.append(value)
            return f"${len(args)}::{cast}"

        if flt.states:
            states = sorted(f"'{s.value}'" for s in flt.states)  # our constants
            where.append(f"state IN ({', '.join(states)})")
        if flt.worker is not None:
            where.append(f"worker = {arg(flt.worker, 'text')}")
        if flt.tag is not None:
            where.append(f"tags::jsonb ? {arg(flt.tag, 'text')}")
        if flt.unique_name is not None:
            where.append(f"unique_name = {arg(flt.unique_name, 'text')}")
        if flt.id_prefix is not None:
            # Hex digits and dashes only (checked), all before "~" in byte order.
            lo, hi = arg(flt.id_prefix, "text"), arg(flt.id_prefix + "~", "text")
            where.append(f'id COLLATE "C" >= {lo} AND id COLLATE "C" < {hi}')
        if flt.since is not None:
            where.append(f"enqueued_at >= {arg(flt.since, 'float8')}")
        if flt.until is not None:
            where.append(f"enqueued_at < {arg(flt.until, 'float8')}")
        if flt.before is not None:
            at, wid = flt.before
            where.append(f"(enqueued_at, id) < ({arg(at, 'float8')}, {arg(wid, 'text')})")
        text = f"SELECT {self.select} FROM {self.table}"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += f" ORDER BY enqueued_at DESC, id DESC LIMIT {arg(flt.limit + 1, 'int8')}"
        return text, args


class PostgresBrowse:
    """The dashboard reads of :class:`~wm_async.stores.PostgresStore` (which is one)."""

    if TYPE_CHECKING:
        _ops: Transactions

        async def _run(
            self, doing: str, fn: Callable[[Any], Awaitable[_T]], *, transaction: bool = True
        ) -> _T: ...

    def _browse_sql(self) -> _Statements:
        cached: _Statements | None = vars(self).get("_wm_browse")
        if cached is None:
            cached = _Statements(self._ops.sql.quoted)
            vars(self)["_wm_browse"] = cached
        return cached

    async def _rows(self, statement: Statement, **values: object) -> list[Any]:
        args = statement.args(**values)

        async def read(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(statement.text, *args)
            return rows

        return await self._run("reading", read, transaction=False)

    async def browse(self, flt: BrowseFilter) -> WorkPage:
        """A page of works, newest first, from one index range (see ``_browse``).

        :raises StoreError: if the database fails
        """
        text, args = self._browse_sql().browse(flt)

        async def read(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(text, *args)
            return rows

        rows = await self._run("reading", read, transaction=False)
        records = [record_from_row(tuple(row)) for row in rows]
        return WorkPage(records=records[: flt.limit], more=len(records) > flt.limit)

    async def overview(self, *, now: float, since: float, bucket: float) -> Overview:
        """The overview's aggregates (see :meth:`Store.overview`).

        :raises InvalidRequestError: for an empty window or too many buckets
        :raises StoreError: if the database fails
        """
        tally = Tally(now, since, bucket)
        sql = self._browse_sql()

        async def read(conn: Any) -> tuple[list[Any], ...]:
            async def rows(statement: Statement, **values: object) -> list[Any]:
                found: list[Any] = await conn.fetch(statement.text, *statement.args(**values))
                return found

            return (
                await rows(sql.counts),
                await rows(sql.tag_counts),
                await rows(sql.finished, since=since, bucket=bucket),
                await rows(sql.due, now=now),
                await rows(sql.due_count, now=now),
                await rows(sql.running),
            )

        counts, tags, finished, due, due_count, running = await self._run("reading", read)
        tally.add_rows(counts, tags, finished)
        return tally.overview(
            [record_from_row(tuple(r)) for r in due],
            due_count[0][0],
            [record_from_row(tuple(r)) for r in running],
        )

    async def edges(self, ids: Collection[str]) -> list[tuple[str, str]]:
        """The chain edges touching ``ids``.

        :raises StoreError: if the database fails
        """
        if not ids:
            return []
        rows = await self._rows(self._browse_sql().edges, ids=list(ids))
        return [(row[0], row[1]) for row in rows]
