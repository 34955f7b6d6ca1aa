"""PostgresStore's transactions: the statements each operation runs on one connection,
inside the transaction (and retries) the store runs it in, with the write tokens that
let a retry recognise what an earlier attempt, whose answer was lost, committed.
The statements are in ``_postgres_sql``."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from itertools import count
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._core.errors import (
    InvalidRequestError,
    StoreCorruptError,
    StoreError,
)
from .._core.lifecycle import (
    recover,
    resolve_new,
)
from . import _postgres_sql as pg_sql
from ._codec import (
    COLUMNS,
    N_SPEC,
    data_text,
    insert_params,
    outputs_in_order,
    record_from_row,
    runtime_params,
)
from ._propagation import propagate

if TYPE_CHECKING:
    from .._core.data import Data
    from .._core.lifecycle import (
        Change,
        UniquePlan,
    )
    from .._core.record import WorkRecord
    from ._base import (
        ClaimParams,
        UniquePlanner,
    )

logger = logging.getLogger("wm_async.stores.postgres")

_Conn = Any  # asyncpg.Connection (asyncpg ships no type information)
#: Expired leases re-enqueued per transaction.
RESCUE_BATCH: Final = 500


async def keep_session(conn: _Conn) -> None:
    """The pool's reset of a connection given back: nothing to send. asyncpg's default
    sends a query on every release (unlock session advisory locks, close cursors,
    UNLISTEN, RESET ALL), a round trip per store call; the store's connections take no
    session state (its locks are transaction locks, its settings SET LOCAL, LISTEN has a
    connection of its own). An open transaction is still rolled back by asyncpg first."""


#: The pool's options besides its size.
POOL_OPTIONS: Final[dict[str, Any]] = {"min_size": 1, "timeout": 10, "reset": keep_session}


@attrs.define(eq=False)
class Write:
    """One logical write (a store call): the token its statements stamp on the rows
    they write, the same on every retry, and whether an earlier attempt may have
    committed (its connection was lost before the answer came)."""

    token: str
    uncertain: bool = False


@attrs.define(eq=False)
class Transactions:
    """The statements of PostgresStore's operations for one schema, on a connection the
    store hands over (in a transaction, or autocommitting), and what it keeps between
    them: the write tokens, and the claims whose answer was lost.

    :ivar sql: the statements
    :ivar sender: this store's name in notifications
    :ivar lease: how long a claim's lease lasts, in seconds
    """

    sql: pg_sql.Schema
    sender: str
    lease: float
    _tokens: Iterator[int] = attrs.field(init=False, factory=count)
    #: Claims whose answer was lost: token -> (owner, until when to look for its works).
    lost_claims: dict[str, tuple[str, float]] = attrs.field(init=False, factory=dict)
    #: Limited workers' rows of wm_limits as last seen: worker -> (tokens, at, version).
    limit_rows: dict[str, tuple[Any, Any, int]] = attrs.field(init=False, factory=dict)

    def new_write(self) -> Write:
        """A new logical write, with a token of its own."""
        return Write(f"{self.sender}.{next(self._tokens):x}")

    def notify_args(self) -> dict[str, object]:
        """The arguments of the NOTIFY every write statement sends."""
        return {"channel": self.sql.channel, "sender": self.sender}

    async def insert(self, conn: _Conn, records: Sequence[WorkRecord], token: str) -> None:
        """Insert works without prerequisites (their ids are free), stamped with
        ``token``, in one statement."""
        rows = [insert_params(r) for r in records]
        columns = {f"c{i}": list(col) for i, col in enumerate(zip(*rows, strict=True))}
        statement = self.sql.insert
        await conn.fetch(
            statement.text, *statement.args(**columns, token=token, **self.notify_args())
        )

    async def as_stored(self, conn: _Conn, ids: Sequence[str]) -> list[WorkRecord]:
        """The records of ``ids`` as stored now, in that order (missing ones skipped)."""
        rows = await conn.fetch(self.sql.get.text, ids)
        found = {row[1]: record_from_row(tuple(row)) for row in rows}  # row[1]: id
        return [found[i] for i in ids if i in found]

    async def insert_new(
        self,
        conn: _Conn,
        records: Sequence[WorkRecord],
        links: Mapping[str, Sequence[str]],
        *,
        token: str,
        skip: Collection[str] = (),
    ) -> list[WorkRecord]:
        """Insert works (their ids are free), chained ones in the state their
        prerequisites give them; prerequisites in ``skip`` are being deleted. The rows
        are stamped with ``token``."""
        sql = self.sql
        new = {r.id for r in records}
        wanted = sorted({p for ps in links.values() for p in ps if p not in new and p not in skip})
        known: dict[str, WorkRecord] = {}
        if wanted:
            rows = await conn.fetch(sql.get_for_share.text, wanted)
            known = {row[1]: record_from_row(tuple(row)) for row in rows}
        stored, waiting, edges = resolve_new(records, links, known)
        rows_in = [insert_params(r) for r in stored]
        columns = {f"c{i}": list(col) for i, col in enumerate(zip(*rows_in, strict=True))}
        statement = sql.insert_chained
        await conn.fetch(
            statement.text,
            *statement.args(**columns, waiting=waiting, token=token, **self.notify_args()),
        )
        if edges:
            p, w, n = (list(col) for col in zip(*edges, strict=True))
            await conn.execute(sql.insert_edges.text, *sql.insert_edges.args(p=p, w=w, n=n))
        return stored

    async def claim_statement(
        self, conn: _Conn, statement: pg_sql.Statement, owner: str, values: dict[str, object]
    ) -> list[Any]:
        """Run a statement that gives ``owner`` works, with a token of its own; if its
        answer does not come, keep the token: the statement may have taken effect."""
        token = values["token"] = self.new_write().token
        try:
            rows: list[Any] = await conn.fetch(statement.text, *statement.args(**values))
        except BaseException:
            # Found by the next claims for a lease; after that, a work it took has been
            # (or can be) rescued like any other whose lease expired.
            self.lost_claims[token] = (owner, time.monotonic() + self.lease)
            raise
        return rows

    async def adopt(
        self, conn: _Conn, params: ClaimParams, limit: int, *, base: float | None
    ) -> list[WorkRecord]:
        """Take over (renewing their lease from ``base``, the time SQL compares with) up
        to ``limit`` works that claims of ``params.owner`` whose answer was lost gave it."""
        now = time.monotonic()
        for token, (_, until) in list(self.lost_claims.items()):
            if until <= now:
                del self.lost_claims[token]
        tokens = [t for t, (owner, _) in self.lost_claims.items() if owner == params.owner]
        if not tokens:
            return []
        values: dict[str, object] = {
            "base": base,
            "lease": self.lease,
            "lease_until": params.lease_until,
            "owner": params.owner,
            "tokens": tokens,
            "limit": limit,
        }
        # Stamped with a new token, so that no later claim takes them over again.
        rows = await self.claim_statement(conn, self.sql.adopt, params.owner, values)
        if rows:
            logger.warning(
                "took over %d work(s) claimed by a claim whose answer was lost", len(rows)
            )
        return [record_from_row(tuple(row)) for row in rows]

    async def write(
        self, conn: _Conn, changes: Sequence[Change], token: str
    ) -> list[WorkRecord | None]:
        """Apply ``changes`` on ``conn`` (compare-and-set), stamping ``token``; the
        record written for each, or ``None`` where its guard failed."""
        out: list[WorkRecord | None] = [None] * len(changes)
        # A work changed twice goes into successive statements, so the second change is
        # checked against the first one's write, as if applied one by one.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, change in enumerate(changes):
            n = seen[change.before.id] = seen.get(change.before.id, -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(i)
        statement = self.sql.apply
        for indexes in rounds:
            rows = [
                (c.before.id, c.before.state.value, c.before.run_attempt_count, c.before.owner,
                 *runtime_params(c.after))
                for c in (changes[i] for i in indexes)
            ]  # fmt: skip
            arrays = {f"a{k}": list(col) for k, col in enumerate(zip(*rows, strict=True))}
            by_id = {changes[i].before.id: i for i in indexes}
            stale = []
            for work_id, generation in await conn.fetch(
                statement.text, *statement.args(**arrays, token=token, **self.notify_args())
            ):
                i = by_id[work_id]
                if generation == changes[i].after.generation:
                    out[i] = changes[i].after
                else:  # the spec was updated meanwhile: it was kept, so read it back
                    stale.append(work_id)
            if stale:
                for row in await conn.fetch(self.sql.get.text, stale):
                    out[by_id[row[1]]] = record_from_row(tuple(row))
        return out

    async def write_and_propagate(
        self, conn: _Conn, changes: Sequence[Change], write: Write
    ) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
        """:meth:`_write`, then resolve the dependents of the works it finished, in the
        same transaction; the second list pairs each dependent written with the index of
        the change that resolved it.

        After an attempt whose answer was lost, the changes it committed fail their
        guards now: they are recognised by the write's token (:meth:`_recognise`).
        Writing first and recognising after (rather than before) also catches an
        earlier attempt whose COMMIT landed while this one ran: this one's writes
        waited for its row locks, then failed their guards."""
        written = await self.write(conn, changes, write.token)
        ended = {
            r.id: (r, i) for i, r in enumerate(written) if r is not None and r.state.is_finished
        }
        resolved = await self.propagate(conn, ended, write.token) if ended else []
        if write.uncertain:
            return await self.recognise(conn, changes, write.token, written, resolved)
        return written, resolved

    async def recognise(
        self,
        conn: _Conn,
        changes: Sequence[Change],
        token: str,
        written: list[WorkRecord | None],
        resolved: list[tuple[int, WorkRecord]],
    ) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
        """``written`` and ``resolved`` (what this attempt wrote), completed with what
        an earlier attempt of the same write committed: the works of ``changes`` this
        attempt did not write whose rows carry ``token`` (nothing else wrote them
        since: reported as written, as stored), and the dependents that attempt
        resolved from them.

        A work changed again by another process since (a re-enqueued work claimed
        again) carries that write's token and is reported as not written; a finished
        work keeps ours until it is pruned."""
        mine = {r.id for r in written if r is not None} | {r.id for _, r in resolved}
        last: dict[str, int] = {}  # each work's last change (a batch may change one twice)
        for i, change in enumerate(changes):
            if written[i] is None and change.before.id not in mine:
                last[change.before.id] = i
        if not last:
            return written, resolved
        rows = await conn.fetch(self.sql.written.text, list(last), token)
        found = {row[1]: record_from_row(tuple(row)) for row in rows}  # row[1]: id
        if not found:
            return written, resolved
        written = list(written)
        for i, change in enumerate(changes):
            work_id = change.before.id
            if written[i] is None and work_id in found and work_id in last:
                # The last change of a work wrote what is stored; an earlier one of the
                # same batch was written before it.
                written[i] = found[work_id] if last[work_id] == i else change.after
        ended = [r.id for r in found.values() if r.state.is_finished]
        if not ended:
            return written, resolved
        seen = mine | set(found)
        more: dict[str, tuple[int, WorkRecord]] = {}
        for row in await conn.fetch(self.sql.resolved_by.text, ended, token):
            record = record_from_row(tuple(row[1:]))
            origin = last[row[0]]
            if record.id not in seen and (record.id not in more or origin < more[record.id][0]):
                more[record.id] = (origin, record)
        return written, [*resolved, *more.values()]

    async def propagate(
        self, conn: _Conn, ended: dict[str, tuple[WorkRecord, int]], token: str
    ) -> list[tuple[int, WorkRecord]]:
        """Resolve the BLOCKED dependents of the ``ended`` works, level by level (semantics
        19 and 29). Each step is a statement of its own, so under READ COMMITTED it sees
        the edges and outputs that concurrent transactions committed before it."""
        return await propagate(_Dependents(self, conn, token), ended)

    async def write_resolved(self, conn: _Conn, records: Sequence[WorkRecord], token: str) -> None:
        if not records:
            return
        rows = [(r.id, data_text(r.input), *runtime_params(r)) for r in records]
        arrays = {f"r{k}": list(col) for k, col in enumerate(zip(*rows, strict=True))}
        statement = self.sql.write_resolved
        await conn.fetch(
            statement.text, *statement.args(**arrays, token=token, **self.notify_args())
        )

    async def recognise_unique(
        self, conn: _Conn, decided: UniquePlan, token: str
    ) -> list[WorkRecord] | None:
        """What an attempt that carried out ``decided`` wrote, if it committed (its
        inserted works are there, with its token, or with their worker and enqueue time
        where a claim has stamped another token since); ``None`` if it did not."""
        if not decided.inserts:
            return None  # it wrote nothing, or only deleted finished works: plan again
        ids = [r.id for r in decided.inserts]
        planned = {r.id: (r.worker, r.enqueued_at) for r in decided.inserts}
        rows = await conn.fetch(self.sql.existing_rows.text, ids)
        if not any(row[3] == token or (row[1], row[2]) == planned[row[0]] for row in rows):
            return None
        # The cancelled works were deleted by the same transaction (REPLACE deletes every
        # work under the name): what it wrote for them was the cancellation. (One whose
        # guard had failed, its run finishing meanwhile, was deleted all the same.)
        gone = set(decided.deletes)
        written = [c.after for c in decided.cancels if c.before.id in gone]
        seen = {r.id for r in written} | set(ids)
        times = sorted({t for c in decided.cancels if (t := c.after.finished_at) is not None})
        if times:
            # The rest it finished (cancelled works it kept, and the dependents it
            # cancelled, all at the cancellations' time), through the finished_at index.
            for row in await conn.fetch(self.sql.finished_by.text, times, token):
                record = record_from_row(tuple(row))
                if record.id not in seen:
                    seen.add(record.id)
                    written.append(record)
        return written + await self.as_stored(conn, ids)

    async def migrate(self, conn: _Conn, migrations: tuple[tuple[int, str], ...]) -> None:
        """Create the schema or migrate it to the last of ``migrations``, under an
        advisory lock (processes starting together do not race).

        :raises StoreCorruptError: if the schema was written by a newer wm_async
        """
        q, name = self.sql.quoted, self.sql.name
        latest = migrations[-1][0]
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", pg_sql.LOCK_CLASS, name
        )
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q}.wm_schema (version integer NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {q}.wm_schema")
        if version > latest:
            raise StoreCorruptError(
                f"schema {name} was written by a newer wm_async (version {version}, this "
                f"version knows up to {latest}); upgrade wm_async. Nothing was changed"
            )
        for number, script in migrations:
            if number > version:
                await conn.execute(f"SET LOCAL search_path TO {q}")
                await conn.execute(script)
                await conn.execute(f"INSERT INTO {q}.wm_schema (version) VALUES ($1)", number)

    async def insert_chained(
        self,
        conn: _Conn,
        records: Sequence[WorkRecord],
        links: Mapping[str, Sequence[str]],
        write: Write,
    ) -> list[WorkRecord]:
        """Insert works with prerequisites (see :meth:`insert_new`), or report those an
        earlier attempt of ``write`` inserted.

        :raises InvalidRequestError: if an id is taken
        """
        ids = [r.id for r in records]
        taken = await conn.fetch(self.sql.existing_rows.text, ids)
        if taken:
            if write.uncertain and all_ours(taken, records):
                # An earlier attempt committed (its answer was lost): report its works.
                return await self.as_stored(conn, ids)
            raise InvalidRequestError("id", taken[0][0], "a work with this id already exists")
        return await self.insert_new(conn, records, links, token=write.token)

    async def rescue(
        self,
        conn: _Conn,
        *,
        now: float,
        base: float | None,
        write: Write,
        tried: dict[str, Change],
    ) -> tuple[int, list[WorkRecord]]:
        """Re-enqueue a batch of works whose lease expired (by ``base``, the time SQL
        compares with); return how many were found and the records written. ``tried``
        holds what earlier attempts of the same ``write`` re-enqueued, and gets this
        one's."""
        statement = self.sql.expired
        rows = await conn.fetch(
            statement.text,
            *statement.args(base=base, limit=RESCUE_BATCH),
        )
        changes = [recover(record_from_row(tuple(row)), now=now) for row in rows]
        done, resolved = await self.write_and_propagate(conn, changes, write)
        out = [*(r for r in done if r is not None), *(r for _, r in resolved)]
        # Works an earlier attempt (its answer lost) re-enqueued have no expired
        # lease any more: recognise them, never re-apply them (a lease renewed
        # meanwhile would pass the guard).
        earlier = [c for i, c in tried.items() if i not in {c.before.id for c in changes}]
        if write.uncertain and earlier:
            done, resolved = await self.recognise(
                conn, earlier, write.token, [None] * len(earlier), []
            )
            seen = {r.id for r in out}
            out += [r for r in done if r is not None and r.id not in seen]
            out += [r for _, r in resolved if r.id not in seen]
        tried.update((c.before.id, c) for c in changes)
        return len(rows), out

    async def update_spec(self, conn: _Conn, change: Change, write: Write) -> bool:
        """Write the spec and due time of ``change.after`` (compare-and-set on state,
        attempts and generation); whether it was written, by this attempt or by an
        earlier one of ``write`` whose answer was lost (its guard fails now: the
        generation moved on)."""
        before, after = change.before, change.after
        params = insert_params(after)
        statement = self.sql.update_spec
        args = statement.args(
            **dict(zip(COLUMNS[1:N_SPEC], params[1:N_SPEC], strict=True)),
            next_run_at=after.next_run_at,
            signals=params[-1],
            id=before.id,
            exp_state=before.state.value,
            exp_attempts=before.run_attempt_count,
            exp_generation=before.generation,
            token=write.token,
            **self.notify_args(),
        )
        if await conn.fetch(statement.text, *args):
            return True
        return write.uncertain and bool(
            await conn.fetch(self.sql.written.text, [before.id], write.token)
        )

    async def unique(
        self,
        conn: _Conn,
        name: str,
        plan: UniquePlanner,
        write: Write,
        planned: list[UniquePlan],
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """One attempt of :meth:`PostgresStore.enqueue_unique`; ``planned`` holds the
        plans of the attempts before it, and gets this one's."""
        sql = self.sql
        key = f"{sql.name}:{name}"
        await conn.execute(sql.unique_lock.text, pg_sql.LOCK_CLASS + 1, key)
        if write.uncertain and planned:
            found = await self.recognise_unique(conn, planned[-1], write.token)
            if found is not None:
                return planned[-1], found
        rows = await conn.fetch(sql.by_unique_name.text, name)
        existing = [record_from_row(tuple(row)) for row in rows]
        leaves = existing
        if existing:
            inner = {
                row[0]
                for row in await conn.fetch(sql.have_dependents.text, [r.id for r in existing])
            }
            leaves = [r for r in existing if r.id not in inner]
        decided = plan(existing, leaves)
        planned.append(decided)
        gone = set(decided.deletes)
        fresh = [r.id for r in decided.inserts if r.id not in gone]
        if fresh:
            taken = [row[0] for row in await conn.fetch(sql.existing.text, fresh)]
            if taken:
                raise InvalidRequestError("id", taken, "a work with this id already exists")
        written: list[WorkRecord] = []
        if decided.cancels:
            # Certain: an earlier attempt was recognised or found not committed above.
            cancelled, resolved = await self.write_and_propagate(
                conn, decided.cancels, Write(write.token)
            )
            written += [r for r in cancelled if r is not None]
            written += [r for _, r in resolved]
        if decided.deletes:
            await conn.execute(sql.delete_edges.text, list(decided.deletes))
            await conn.execute(sql.delete.text, list(decided.deletes))
            # The deleted works' ids are announced by the cancels (if unfinished);
            # finished ones changed nothing a process could be waiting on.
        if decided.inserts:
            written += await self.insert_new(
                conn, decided.inserts, decided.prerequisites, token=write.token, skip=gone
            )
        return decided, written


@attrs.define(eq=False)
class _Dependents:
    """The propagation walk's reads and writes in a PostgreSQL transaction (see
    _propagation), each a statement of its own."""

    ops: Transactions
    conn: _Conn
    token: str

    async def stopped(self, ids: list[str]) -> list[tuple[str, WorkRecord]]:
        rows = await self.conn.fetch(self.ops.sql.dependents.text, ids)
        return [(row[0], record_from_row(tuple(row[1:]))) for row in rows]

    async def count(self, ids: list[str]) -> list[tuple[int, WorkRecord]]:
        rows = await self.conn.fetch(self.ops.sql.unblock.text, ids)
        return [(row[0], record_from_row(tuple(row[1:]))) for row in rows]

    async def outputs(self, ready: list[WorkRecord]) -> list[list[Data]]:
        found: dict[str, list[tuple[int, str]]] = {}
        statement = self.ops.sql.prerequisite_outputs
        for work_id, position, output in await self.conn.fetch(
            statement.text, [r.id for r in ready]
        ):
            found.setdefault(work_id, []).append((position, output))
        return [outputs_in_order(found.get(r.id, [])) for r in ready]

    async def write(self, records: list[WorkRecord]) -> None:
        await self.ops.write_resolved(self.conn, records, self.token)


def all_ours(rows: Sequence[Any], records: Sequence[WorkRecord]) -> bool:
    """Whether the stored ``(id, worker, enqueued_at, …)`` rows are exactly ``records``
    (distinct ids): what an earlier attempt of their insert committed."""
    ours = {r.id: (r.worker, r.enqueued_at) for r in records}
    return len(ours) == len(records) and {row[0]: (row[1], row[2]) for row in rows} == ours


def duplicate_error(
    rows: Sequence[Any], records: Sequence[WorkRecord], *, retried: bool
) -> Exception | None:
    """What an insert of ``records`` that met existing ids (``rows``: ``(id, worker,
    enqueued_at, …)`` of those stored now) raises: ``None`` when a retry met the rows
    its own earlier attempt committed (the commit's answer was lost)."""
    if retried and all_ours(rows, records):
        return None
    found = {row[0] for row in rows}
    seen: set[str] = set()
    for r in records:
        if r.id in found or r.id in seen:
            return InvalidRequestError("id", r.id, "a work with this id already exists")
        seen.add(r.id)
    return StoreError("inserting failed on a unique index, but no id is taken now")
