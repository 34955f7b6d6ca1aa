"""PostgresStore's statements (for one schema), migration files and DSN options. The
transactions that run them are in ``_postgres_ops``; rows are encoded by ``_codec``, as
the SQLite store's are."""

from __future__ import annotations

import functools
import importlib.resources
import re
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._core import validators as v
from .._core.errors import (
    InvalidRequestError,
    StoreError,
)
from .._core.model import FINISHED_STATES
from .._core.redact import (
    mask_text,
    mask_url,
)
from ._codec import (
    COLUMNS,
    N_SPEC,
    PG_TYPES,
    RUNTIME_COLUMNS,
)

#: Schema names: plain identifiers, short enough that the notification channel
#: ``wm_async:<schema>`` stays within PostgreSQL's 63-byte identifier limit.
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
DEFAULT_SCHEMA: Final = "wm_async"
#: First key of every advisory lock wm_async takes ('wmas'); the second is a hash.
LOCK_CLASS: Final = 0x776D6173
#: Ids per notification: 150 ids of 36 characters stay under the 8000-byte payload limit.
NOTIFY_IDS: Final = 150
#: The select list every read uses (``seq`` stands where SQLite has ``rowid``), so
#: ``_codec.record_from_row`` reads its rows.
SELECT_COLUMNS: Final = ("seq", *COLUMNS)
#: Where a claimed row (``(due_expedited, due_at, *SELECT_COLUMNS)``) holds the priority.
CLAIMED_PRIORITY: Final = 2 + SELECT_COLUMNS.index("priority")
_FINISHED: Final = ", ".join(sorted(f"'{s.value}'" for s in FINISHED_STATES))

#: PostgreSQL types of ``insert_params`` values, in order (COLUMNS, then signals).
INSERT_TYPES: Final = (*PG_TYPES, "text")
_RUNTIME_TYPES: Final = PG_TYPES[N_SPEC:]


def check_schema(name: object) -> str:
    """``name`` if it is a valid schema name for wm_async.

    :raises InvalidRequestError: otherwise
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidRequestError(
            "schema", name, "expected an identifier: letters, digits and _, at most 48"
        )
    return name


def quote(identifier: str) -> str:
    """``identifier`` quoted for SQL (already validated: no quote can occur in it)."""
    return '"' + identifier.replace('"', '""') + '"'


def split_dsn(dsn: str) -> tuple[str, str | None]:
    """Remove wm_async's own options from a ``postgresql://`` URL (asyncpg would send
    unknown query parameters to the server as settings).

    :return: ``(dsn for asyncpg, schema option or None)``
    """
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


# -- options ----------------------------------------------------------------------------


def _seconds(field: str, value: object) -> float:
    td = v.to_timedelta(field, value)
    v.check_positive(field, td)
    return td.total_seconds()


def to_lease(value: object) -> float:
    """The ``lease`` option in seconds."""
    return _seconds("lease", value)


def to_poll_interval(value: object) -> float:
    """The ``poll_interval`` option in seconds."""
    return _seconds("poll_interval", value)


def to_retry_timeout(value: object) -> float:
    """The ``retry_timeout`` option in seconds."""
    return _seconds("retry_timeout", value)


def to_rescue_interval(value: object) -> float | None:
    """The ``rescue_interval`` option in seconds (``None``: the default)."""
    return None if value is None else _seconds("rescue_interval", value)


def check_clock(instance: object, attribute: object, value: object) -> None:
    """Validate the ``clock`` option."""
    if value not in ("auto", "database", "caller"):
        raise InvalidRequestError("clock", value, "expected 'auto', 'database' or 'caller'")


def check_pool_size(instance: object, attribute: object, value: object) -> None:
    """Validate the ``pool_size`` option."""
    v.check_int("pool_size", value, 1)


def to_dsn(value: object) -> str:
    """The ``dsn`` argument, if it is a ``postgresql://`` URL.

    :raises InvalidRequestError: otherwise (never showing a password)
    """
    if not isinstance(value, str) or not value.lower().startswith(
        ("postgresql://", "postgres://")
    ):
        shown = mask_url(value) if isinstance(value, str) else value
        raise InvalidRequestError("dsn", shown, "expected a postgresql:// URL")
    try:
        split_dsn(value)
    except ValueError as exc:  # urlsplit's message may quote the netloc: mask it
        reason = mask_text(str(exc), secrets_of=value)
        raise InvalidRequestError("dsn", mask_url(value), f"not a valid URL: {reason}") from None
    return value


def _numbered(text: str) -> tuple[str, tuple[str, ...]]:
    """Replace ``:name`` placeholders (not ``::casts``) with ``$n``; return the names."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", number, text), tuple(names)


class Statement:
    """A statement with named parameters, numbered for asyncpg."""

    __slots__ = ("names", "text")

    def __init__(self, text: str) -> None:
        self.text, self.names = _numbered(text)

    def args(self, **values: object) -> list[object]:
        """The positional arguments, from keyword values."""
        return [values[name] for name in self.names]


#: The database clock, when the caller passes no time (``:base`` NULL).
_BASE: Final = "coalesce(:base::float8, extract(epoch from statement_timestamp()))"


#: The CTE ``n`` that NOTIFYs the ids of the rows of the CTE ``w`` (see _notifying).
_NOTIFY: Final = (
    "n AS (SELECT pg_notify(:channel, :sender || ' ' || p) FROM ("
    "SELECT (CASE WHEN bool_or(state = 'ENQUEUED') THEN 'd' ELSE '-' END) || ' ' "
    "|| string_agg(id, ',') AS p "
    f"FROM (SELECT id, state, (row_number() OVER ()) / {NOTIFY_IDS} AS g FROM w) AS s "
    "GROUP BY g) AS q)"
)


def _notifying(write: str, result: str) -> str:
    """``write`` (a data-modifying CTE body returning at least ``id`` and ``state``)
    followed by a NOTIFY of the ids it wrote, in chunks, committed with it.

    The payload is ``'<sender> <d|-> id,id,…'``: ``d`` when a written work is ENQUEUED
    (idle processes should claim). Nothing is sent when nothing was written.
    """
    return (
        f"WITH w AS ({write}), {_NOTIFY} "
        f"SELECT {result} FROM w CROSS JOIN (SELECT count(*) FROM n) AS m"
    )


class Schema:
    """Every statement PostgresStore runs, for one schema."""

    def __init__(self, name: str) -> None:
        self.name = check_schema(name)
        q = quote(name)
        t = self.table = f"{q}.wm_work"
        self.quoted = q
        self.channel = f"wm_async:{name}"
        select = ", ".join(SELECT_COLUMNS)
        returning = ", ".join(f"w.{c}" for c in SELECT_COLUMNS)

        self.get = Statement(f"SELECT {select} FROM {t} WHERE id = ANY(:ids::text[])")
        self.existing = Statement(f"SELECT id FROM {t} WHERE id = ANY(:ids::text[])")
        self.existing_rows = Statement(
            f"SELECT id, worker, enqueued_at, txn FROM {t} WHERE id = ANY(:ids::text[])"
        )
        cols = ", ".join((*COLUMNS, "signals"))
        arrays = ", ".join(f":c{i}::{ty}[]" for i, ty in enumerate(INSERT_TYPES))
        self.insert = Statement(
            _notifying(
                f"INSERT INTO {t} ({cols}, txn) SELECT *, :token::text FROM unnest({arrays}) "
                "RETURNING id, state",
                "w.id",
            )
        )
        self.by_unique_name = Statement(
            f"SELECT {select} FROM {t} WHERE unique_name = :name ORDER BY seq"
        )
        self.unique_lock = Statement("SELECT pg_advisory_xact_lock(:cls, hashtext(:key))")
        self.delete = Statement(f"DELETE FROM {t} WHERE id = ANY(:ids::text[])")
        self.update_spec = Statement(
            _notifying(
                f"UPDATE {t} SET "
                + ", ".join(f"{c} = :{c}" for c in COLUMNS[1:N_SPEC])
                + ", next_run_at = :next_run_at, signals = :signals, txn = :token "
                "WHERE id = :id AND state = :exp_state AND run_attempt_count = :exp_attempts "
                "AND generation = :exp_generation RETURNING id, state",
                "w.id",
            )
        )

        v_names = ("id", "exp_state", "exp_attempts", "exp_owner", *RUNTIME_COLUMNS)
        v_types = ("text", "text", "int8", "text", *_RUNTIME_TYPES)
        unnest = ", ".join(f":a{i}::{ty}[]" for i, ty in enumerate(v_types))
        sets = ", ".join(f"{c} = v.{c}" for c in RUNTIME_COLUMNS)
        self.apply = Statement(
            _notifying(
                f"UPDATE {t} AS w SET {sets}, lease_until = CASE WHEN v.state = 'RUNNING' "
                f"THEN w.lease_until END, txn = :token "
                f"FROM unnest({unnest}) AS v({', '.join(v_names)}) "
                "WHERE w.id = ANY(:a0::text[]) AND w.id = v.id AND w.state = v.exp_state "
                "AND w.run_attempt_count = v.exp_attempts "
                "AND w.owner IS NOT DISTINCT FROM v.exp_owner "
                "RETURNING w.id, w.state, w.generation",
                "w.id, w.generation",
            )
        )
        #: The same, its NOTIFY and the check for dependents, in one round trip (see
        #: ``_postgres_apply``); ``:generations``: each work's expected generation.
        self.apply_fast = Statement(
            f"SELECT written_id, written_generation FROM {q}.wm_apply(:token::text, "
            ":channel::text, :sender::text, :generations::int8[], "
            f"{unnest})"
        )
        self.renew = Statement(
            f"UPDATE {t} SET lease_until = {_BASE} + :lease "
            "WHERE id = ANY(:ids::text[]) AND state = 'RUNNING' AND owner = :owner RETURNING id"
        )
        self.expired = Statement(
            f"SELECT {select} FROM {t} WHERE state = 'RUNNING' AND lease_until < {_BASE} "
            "ORDER BY lease_until LIMIT :limit FOR UPDATE SKIP LOCKED"
        )
        d = self.dependency = f"{q}.wm_dependency"

        def prunable(w: str) -> str:
            # Finished before the cut-off, and no unfinished work depends on it (34).
            return (
                f"{w}.finished_at < :before AND {w}.state IN ({_FINISHED}) AND NOT EXISTS ("
                f"SELECT 1 FROM {d} AS e JOIN {t} AS c ON c.id = e.work_id "
                f"WHERE e.prerequisite_id = {w}.id AND c.state NOT IN ({_FINISHED}))"
            )

        # Edges to a pruned work's prerequisites go with it; edges from its dependents
        # (finished, or it would be kept) go when they are pruned.
        self.prune = Statement(
            f"WITH gone AS (DELETE FROM {t} AS w WHERE {prunable('w')} RETURNING w.id), "
            f"edges AS (DELETE FROM {d} WHERE work_id IN (SELECT id FROM gone)) "
            "SELECT 1 FROM gone"
        )
        # -- chains
        self.insert_chained = Statement(
            _notifying(
                f"INSERT INTO {t} ({cols}, waiting, txn) SELECT *, :token::text FROM unnest("
                f"{arrays}, :waiting::int4[]) RETURNING id, state",
                "w.id",
            )
        )
        self.insert_edges = Statement(
            f"INSERT INTO {d} (prerequisite_id, work_id, position) "
            "SELECT * FROM unnest(:p::text[], :w::text[], :n::int4[])"
        )
        #: Prerequisites read at insert, locked so that one finishing concurrently
        #: waits for the new edges to commit and then sees them.
        self.get_for_share = Statement(
            f"SELECT {select} FROM {t} WHERE id = ANY(:ids::text[]) ORDER BY id FOR SHARE"
        )
        self.have_dependents = Statement(
            f"SELECT DISTINCT prerequisite_id FROM {d} WHERE prerequisite_id = ANY(:ids::text[])"
        )
        self.delete_edges = Statement(
            f"DELETE FROM {d} WHERE work_id = ANY(:ids::text[]) "
            "OR prerequisite_id = ANY(:ids::text[])"
        )
        #: The BLOCKED dependents of some works: (prerequisite id, *select).
        self.dependents = Statement(
            f"SELECT e.prerequisite_id, {returning} FROM {d} AS e JOIN {t} AS w "
            "ON w.id = e.work_id WHERE e.prerequisite_id = ANY(:ids::text[]) "
            "AND w.state = 'BLOCKED' ORDER BY w.id FOR UPDATE OF w"
        )
        #: Counts the success of some works in their BLOCKED dependents; returns
        #: (waiting, *select) for each.
        self.unblock = Statement(
            f"UPDATE {t} AS w SET waiting = w.waiting - (SELECT count(*) FROM {d} AS e "
            "WHERE e.work_id = w.id AND e.prerequisite_id = ANY(:ids::text[])) "
            f"WHERE w.state = 'BLOCKED' AND w.id IN (SELECT work_id FROM {d} "
            f"WHERE prerequisite_id = ANY(:ids::text[])) RETURNING w.waiting, {returning}"
        )
        #: The direct prerequisites' outputs of some works: (work id, position, output).
        #: A statement of its own, so it sees what other transactions committed while
        #: the UPDATE above waited for their row locks.
        self.prerequisite_outputs = Statement(
            f"SELECT e.work_id, e.position, p.output FROM {d} AS e JOIN {t} AS p "
            "ON p.id = e.prerequisite_id WHERE e.work_id = ANY(:ids::text[])"
        )
        r_names = ("id", "input", *RUNTIME_COLUMNS)
        r_types = ("text", "text", *_RUNTIME_TYPES)
        r_unnest = ", ".join(f":r{i}::{ty}[]" for i, ty in enumerate(r_types))
        r_sets = ", ".join(f"{c} = v.{c}" for c in r_names[1:])
        self.write_resolved = Statement(
            _notifying(
                f"UPDATE {t} AS w SET {r_sets}, waiting = 0, txn = :token "
                f"FROM unnest({r_unnest}) "
                f"AS v({', '.join(r_names)}) WHERE w.id = v.id AND w.state = 'BLOCKED' "
                "RETURNING w.id, w.state",
                "w.id",
            )
        )
        self.signals_in_use = Statement(
            f"SELECT DISTINCT constraints FROM {t} "
            "WHERE signals <> '' AND state IN ('ENQUEUED', 'RUNNING', 'BLOCKED')"
        )
        self.notify = Statement("SELECT pg_notify(:channel, :payload)")
        # -- recognising a write whose answer was lost (write tokens, migration 003)
        #: The works of some ids that a write with ``:token`` wrote last.
        self.written = Statement(
            f"SELECT {select} FROM {t} WHERE id = ANY(:ids::text[]) AND txn = :token"
        )
        #: The dependents that a write with ``:token`` resolved, transitively, from the
        #: works ``:ids``: (the id in ``:ids`` it was reached from, *select).
        self.resolved_by = Statement(
            "WITH RECURSIVE r(root, id) AS ("
            f"SELECT e.prerequisite_id, e.work_id FROM {d} AS e JOIN {t} AS c "
            "ON c.id = e.work_id WHERE e.prerequisite_id = ANY(:ids::text[]) AND c.txn = :token "
            f"UNION SELECT r.root, e.work_id FROM r JOIN {d} AS e ON e.prerequisite_id = r.id "
            f"JOIN {t} AS c ON c.id = e.work_id WHERE c.txn = :token) "
            f"SELECT r.root, {returning} FROM r JOIN {t} AS w ON w.id = r.id"
        )
        #: The works that a write with ``:token`` finished at one of ``:times`` (the
        #: finished_at index): the dependents a unique enqueue's cancellations cancelled.
        self.finished_by = Statement(
            f"SELECT {select} FROM {t} WHERE finished_at = ANY(:times::float8[]) AND txn = :token"
        )
        #: Take over (renew the lease, stamp ``:token``) up to ``:limit`` works that
        #: claims with ``:tokens`` gave ``:owner`` but whose answer was lost.
        self.adopt = Statement(
            f"WITH mine AS MATERIALIZED (SELECT id FROM {t} WHERE state = 'RUNNING' "
            "AND owner = :owner AND txn = ANY(:tokens::text[]) ORDER BY lease_until "
            f"LIMIT :limit FOR UPDATE) UPDATE {t} AS w SET txn = :token, "
            f"lease_until = coalesce(:lease_until::float8, {_BASE} + :lease) FROM mine "
            "WHERE w.id = mine.id AND w.state = 'RUNNING' AND w.owner = :owner "
            f"AND w.txn = ANY(:tokens::text[]) RETURNING {returning}"
        )
        self._returning = returning

    @functools.lru_cache(maxsize=8)  # noqa: B019  # a few variants per Schema, kept with it
    def claim(self, blocked: bool, paused: bool = False, limited: bool = False) -> Statement:
        """Claim up to ``:limit`` due unparked works, expedited first, then higher priority,
        then earlier due (semantics 48), locking them with
        SKIP LOCKED so concurrent claimers take disjoint batches; the attempt, owner,
        lease and write token are written by the same statement, which also finds the
        next due time: a claim is one round trip, and one atomic step.

        Always one row or more: ``(next_due, compared_with, due_expedited, due_at,
        *select)``, the last columns NULL when nothing was claimed. ``next_due`` is the
        earliest due time of the claimable ENQUEUED works left (NULL for none; in the
        past if ``:limit`` was reached), ``compared_with`` the clock the claim compared
        with (to convert between the database's clock and the caller's), then each
        claimed work's expedited flag and due time before the claim (for ordering).
        With ``limited``, see :meth:`_limited`."""
        t = self.table
        unparked = self._unparked(blocked)
        if paused:  # the workers in :paused are paused: their works stay ENQUEUED
            unparked += " AND worker <> ALL(:paused::text[])"
        limit, before, after, extra = ":limit::int8", "", "", ""
        if limited:
            unparked += " AND worker = :only"
            limit = "(SELECT k FROM kk)"
            before, after, extra = self._limited()
        # One row more than the limit is locked: if it exists, works are still due now.
        # (A limited claim takes fewer, ``k``; its ``:limit`` is a parameter here: a
        # LIMIT the planner cannot see would make it sort every due work.)
        # (The statement sees its own snapshot, in which the claimed rows are still
        # ENQUEUED: the next due time must come from rows it did not claim.) A
        # materialised CTE: the LIMIT applies before the UPDATE joins it, so a claim
        # never takes more rows than asked for. "w.id = ANY(ARRAY(…))" makes the UPDATE
        # find its rows by primary key: joined to the CTE alone, the planner hashes the
        # whole table (5 ms of a 7 ms claim with 20,000 ENQUEUED works).
        due = (
            f"due AS MATERIALIZED (SELECT id, expedited, priority, next_run_at FROM {t} "
            f"WHERE state = 'ENQUEUED' AND next_run_at <= {_BASE}{unparked} "
            "ORDER BY expedited DESC, priority DESC, next_run_at LIMIT :limit::int8 + 1 "
            "FOR UPDATE SKIP LOCKED)"
        )
        write = (
            f"w AS (UPDATE {t} AS w SET state = 'RUNNING', "
            "run_attempt_count = w.run_attempt_count + 1, "
            "started_at = :now, progress = '', stop_reason = 'NOT_STOPPED', owner = :owner, "
            "late = :now::float8 - w.next_run_at, "  # how late it starts (the dashboard)
            f"lease_until = coalesce(:lease_until::float8, {_BASE} + :lease), txn = :token "
            "FROM (SELECT * FROM due ORDER BY expedited DESC, priority DESC, next_run_at "
            f"LIMIT {limit}) AS d WHERE w.id = d.id "
            "AND w.id = ANY(ARRAY(SELECT id FROM due)) AND w.state = 'ENQUEUED' "
            f"RETURNING d.expedited AS due_expedited, d.next_run_at AS due_at, "
            f"{self._returning})"
        )
        later = (
            f"(SELECT next_run_at FROM {t} WHERE state = 'ENQUEUED' AND expedited = %d "
            f"AND next_run_at > {_BASE}{unparked} ORDER BY next_run_at LIMIT 1)"
        )
        next_due = (
            "nd AS (SELECT coalesce((SELECT next_run_at FROM due ORDER BY expedited DESC, "
            f"priority DESC, next_run_at OFFSET {limit} LIMIT 1), LEAST({later % 1}, {later % 0})) "
            f"AS next_due, {_BASE} AS compared_with)"
        )
        names = ", ".join(f"w.{c}" for c in ("due_expedited", "due_at", *SELECT_COLUMNS))
        return Statement(
            f"WITH {before}{due}, {write}, {_NOTIFY}, {next_due}{after} "
            f"SELECT nd.next_due, nd.compared_with, {names}{extra} FROM nd "
            "CROSS JOIN (SELECT count(*) FROM n) AS m LEFT JOIN w ON true"
        )

    def _limited(self) -> tuple[str, str, str]:
        """The parts of a limited worker's claim (semantics 50): its works alone
        (``:only``), at most its allowance, in one statement.

        The worker's row of ``wm_limits`` is locked (``FOR UPDATE``); the claim is
        valid only if the row's ``version`` is ``:expect`` both as locked (the latest)
        and in the statement's snapshot: then no claim of this worker committed after
        the snapshot was taken, nor is one in progress (it would hold the lock), so
        the RUNNING count the snapshot gives is exact (works whose lease is live: a
        crashed process's slots come back when its leases end; not the works in
        ``:returned``, the caller's runs that returned, their outcome not yet written). Its allowance is
        ``LEAST(:limit, :take, :cap - running)`` (``:take``: the tokens, counted by the
        caller from the row at ``:expect``); the row gets ``:tokens`` less the works
        claimed, ``:at``, and the next version. Otherwise nothing is claimed or
        written, and the caller tries again with the row as it is now.

        The rows end with ``(fresh, running, tokens, at, version)``: whether the claim
        was valid, then the RUNNING count and the row as locked."""
        q, t = self.quoted, self.table
        limits = f"{q}.wm_limits"
        before = (
            "lim AS MATERIALIZED (SELECT tokens, at, version FROM "
            f"{limits} WHERE worker = :only FOR UPDATE), "
            f"snap AS MATERIALIZED (SELECT version FROM {limits} WHERE worker = :only), "
            f"run AS MATERIALIZED (SELECT count(*) AS n FROM {t} WHERE state = 'RUNNING' "
            f"AND worker = :only AND lease_until > {_BASE} "
            "AND id <> ALL(:returned::text[])), "
            "fr AS MATERIALIZED (SELECT coalesce((SELECT version FROM lim) = :expect::int8 "
            "AND (SELECT version FROM snap) = :expect::int8, false) AS fresh), "
            "kk AS MATERIALIZED (SELECT CASE WHEN fresh THEN GREATEST(0, LEAST(:limit::int8, "
            ":take::int8, coalesce(:cap::int8 - (SELECT n FROM run), :limit::int8))) "
            "ELSE 0 END AS k FROM fr), "
        )
        after = (
            f", b AS (UPDATE {limits} SET tokens = :tokens::float8 - (SELECT count(*) FROM w), "
            "at = :at::float8, version = version + 1 "
            "WHERE worker = :only AND (SELECT fresh FROM fr))"
        )
        extra = (
            ", (SELECT fresh FROM fr), (SELECT n FROM run), (SELECT tokens FROM lim), "
            "(SELECT at FROM lim), (SELECT version FROM lim)"
        )
        return before, after, extra

    @functools.cached_property
    def limits(self) -> tuple[Statement, Statement]:
        """Make limited workers' rows of ``wm_limits`` (semantics 50); read one."""
        q = self.quoted
        return (
            Statement(
                f"INSERT INTO {q}.wm_limits (worker) SELECT unnest(:workers::text[]) "
                "ON CONFLICT DO NOTHING"
            ),
            Statement(f"SELECT tokens, at, version FROM {q}.wm_limits WHERE worker = :only"),
        )

    @staticmethod
    def _unparked(blocked: bool) -> str:
        if not blocked:
            return ""
        return (
            " AND (signals = '' OR NOT EXISTS "
            "(SELECT 1 FROM unnest(:blocked::text[]) AS b(k) WHERE strpos(signals, b.k) > 0))"
        )

    def query(self, *, ids: bool, tags: bool, names: bool, states: bool) -> Statement:
        """Works matching the given kinds of filter (AND across kinds), oldest first."""
        where = []
        if ids:
            where.append("id = ANY(:ids::text[])")
        if tags:
            where.append("tags::jsonb ?| :tags::text[]")
        if names:
            where.append("unique_name = ANY(:names::text[])")
        if states:
            where.append("state = ANY(:states::text[])")
        text = f"SELECT {', '.join(SELECT_COLUMNS)} FROM {self.table}"
        if where:
            text += " WHERE " + " AND ".join(where)
        return Statement(text + " ORDER BY enqueued_at, seq")


# -- migrations --------------------------------------------------------------------------


@functools.cache
def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, script)`` of every ``_sql/postgres/NNN_name.sql``, in order.

    Reads package files: call it in a worker thread.
    """
    folder = importlib.resources.files("wm_async.stores") / "_sql" / "postgres"
    found = sorted(
        (int(m.group(1)), entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if (m := re.fullmatch(r"(\d{3})_\w+\.sql", entry.name))
    )
    if [n for n, _ in found] != list(range(1, len(found) + 1)):
        raise StoreError("wm_async is installed incompletely: PostgreSQL migrations are missing")
    return tuple(found)
