"""The Store interface: about a dozen lifecycle-named operations.

Stores persist; they do not decide. The semantics live in :mod:`wm_async._lifecycle`,
which produces :class:`~wm_async._lifecycle.Change` objects; a store applies them
atomically, each guarded by the state and attempt count it expects (compare-and-set).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeAlias

import anyio
import attrs
from anyio.abc import TaskStatus

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .._core.lifecycle import (
        Change,
        UniquePlan,
    )
    from .._core.limits import HeldBy, WorkerLimits
    from .._core.model import WorkQuery, WorkState
    from .._core.record import WorkRecord
    from ._browse import BrowseFilter, Overview, WorkPage

#: Decides a unique enqueue from the works under the name and the leaves among them.
UniquePlanner: TypeAlias = "Callable[[list[WorkRecord], list[WorkRecord]], UniquePlan]"


class JoinedTransaction(abc.ABC):
    """An enqueue's writes on an app's own database connection, inside the app's open
    transaction (:meth:`Store.join_transaction`): they commit, or roll back, with it.

    The methods take what :meth:`Store.insert` and :meth:`Store.enqueue_unique` take and
    raise what they raise (a failed write leaves the app's transaction as it was), but
    they return what the app's transaction will commit, nothing is retried (a failure is
    the app's to handle), and other processes, and this one, hear of the works only at
    the app's COMMIT.
    """

    @abc.abstractmethod
    async def insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None = None,
    ) -> list[WorkRecord]:
        """:meth:`Store.insert`, in the app's transaction."""

    @abc.abstractmethod
    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """:meth:`Store.enqueue_unique`, in the app's transaction."""


@attrs.frozen(kw_only=True)
class ClaimParams:
    """What :meth:`Store.claim_due` may take.

    :ivar now: the current time (UTC epoch seconds); works due at or before it are claimed
    :ivar limit: the most works to claim (the free capacity)
    :ivar owner: identifies the claiming process
    :ivar blocked_signals: signal names that are false now; works needing any of them stay
        ENQUEUED (parked) and are not counted in ``next_due``
    :ivar lease_until: lease expiry for stores shared by several processes
    :ivar paused_workers: paused worker names (:meth:`Store.pause_worker`); their works
        stay ENQUEUED and are not counted in ``next_due``
    :ivar limits: the flow limits of the workers that have some (semantics 50): the
        claim starts at most ``max_running`` minus the worker's RUNNING works (all
        processes' on a shared store; on PostgreSQL those whose lease is live), and no
        more than its token bucket holds (stored by the store, and taken from in the
        claim's transaction); ``next_due`` counts a capped-out worker's works not at
        all and a rate-limited one's no earlier than its next token
    :ivar returned: per capped worker, the ids of the claiming process's works of it
        whose run returned and whose outcome waits to be written (semantics 49): RUNNING
        in the store but no longer running, so the claim does not count them against
        ``max_running`` (those already written are no longer RUNNING anyway)
    """

    now: float
    limit: int
    owner: str
    blocked_signals: frozenset[str] = frozenset()
    lease_until: float | None = None
    paused_workers: frozenset[str] = frozenset()
    limits: Mapping[str, WorkerLimits] = attrs.field(factory=dict)
    returned: Mapping[str, frozenset[str]] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Claimed:
    """The result of a claim.

    :ivar records: the works now RUNNING, expedited first, then by due time
    :ivar next_due: the earliest due time among the remaining claimable ENQUEUED works
        (``None`` if there are none); may be in the past if ``limit`` was reached
    :ivar held: the limited workers (:attr:`ClaimParams.limits`) with works due now that
        their own limit held back, and which limit
    """

    records: list[WorkRecord]
    next_due: float | None
    held: Mapping[str, HeldBy] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class StoreListener:
    """How a store shared by several processes reaches the manager using it
    (:meth:`Store.follow`).

    :ivar now: the manager's clock
    :ivar real_time: whether that clock is the system clock (a store may then compare
        due times and leases with its own clock, immune to host clock skew)
    :ivar wake: due work may have appeared: the dispatcher should claim again
    :ivar changed: other processes wrote these works (``None``: anything may have
        changed, e.g. after a reconnection lost notifications); the manager re-reads the
        ones it cares about
    """

    now: Callable[[], float]
    real_time: bool
    wake: Callable[[], None]
    changed: Callable[[Sequence[str] | None], Awaitable[None]]


class Store(abc.ABC):
    """Where works are persisted. Use as an async context manager, or call
    :meth:`open` and :meth:`close`.

    Every method that changes data commits before it returns.
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @abc.abstractmethod
    async def insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None = None,
    ) -> list[WorkRecord]:
        """Insert new works, all or none; return them as stored.

        ``prerequisites`` maps the id of a new work to the ids of its direct
        prerequisites, in order: works already stored, or earlier in ``records``. Such a
        work's state is decided in the same transaction by
        :func:`wm_async._lifecycle.resolve`, and a finished prerequisite later unblocks,
        fails or cancels it (see :meth:`apply`).

        :raises InvalidRequestError: if a work with one of the ids already exists, or a
            prerequisite does not
        """

    @abc.abstractmethod
    async def claim_due(self, params: ClaimParams) -> Claimed:
        """Move up to ``params.limit`` due, unparked ENQUEUED works to RUNNING, as
        :func:`wm_async._lifecycle.claim` describes, in one transaction."""

    @abc.abstractmethod
    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        """Apply each change whose guard holds, in one transaction; return the records
        written (changes whose guard failed are skipped silently).

        A change that finishes a work with dependents also resolves them in the same
        transaction (semantics 19 and 29): the last prerequisite to succeed unblocks a
        dependent, with its merged input; a failure or cancellation fails or cancels
        every transitive BLOCKED dependent. Those records are returned too.
        """

    @abc.abstractmethod
    async def enqueue_unique(
        self, name: str, plan: UniquePlanner
    ) -> tuple[UniquePlan, list[WorkRecord]]:
        """In one transaction: read the works under the unique ``name`` and which of them
        are leaves (no work depends on them), let ``plan`` (pure) decide, and carry the
        plan out (cancel, delete, insert with prerequisites). Concurrent calls on one
        name are serialised by the store, so each sees the others' result.

        Returns the plan and every record written: the cancelled works, their
        dependents, and the inserted works as stored.

        :raises InvalidRequestError: if an inserted id exists outside the name, or a
            prerequisite does not exist
        """

    @abc.abstractmethod
    async def update_spec(self, change: Change) -> WorkRecord | None:
        """Write the spec (and due time) of ``change.after`` if the stored work still has
        ``change.before``'s state, attempt count and generation; return the record
        written, or ``None`` if it changed meanwhile (``update_work``)."""

    @abc.abstractmethod
    async def get(self, ids: Collection[str]) -> list[WorkRecord]:
        """The records with these ids (``str(UUID)``; unknown ids are skipped), in no set
        order."""

    @abc.abstractmethod
    async def query(self, query: WorkQuery) -> list[WorkRecord]:
        """The records matching ``query``, oldest enqueue first."""

    async def join_transaction(self, connection: object) -> JoinedTransaction:
        """The writes of ``enqueue(..., connection=connection)``: on the app's own
        database connection, inside its open transaction, so that the works are stored
        if, and only if, the app commits. Checks ``connection`` before anything is
        written.

        The default (a store that cannot share an app's transaction) refuses.

        :raises InvalidRequestError: (its ``field`` is ``"connection"``) if the store
            cannot write through ``connection``: not a connection of its kind, not in a
            transaction, or not to the store's database
        """
        from .._core.errors import InvalidRequestError

        raise InvalidRequestError(
            "connection",
            connection,
            f"{type(self).__name__} cannot enqueue inside an app's transaction (only "
            "PostgresStore can); enqueue without connection= once the app has committed",
        )

    async def lock_for_scheduler(self, owner: str) -> None:
        """Take the scheduler lock for ``owner``, or raise.

        A store that only one scheduling process may use at a time (SQLite: recovery
        treats every RUNNING work as orphaned) refuses a second one here with
        :class:`StoreError`; the lock ends with :meth:`close`. The default allows any
        number (stores with leases).

        :raises StoreError: if another scheduler holds the lock
        """
        if not await self.try_lock_for_scheduler(owner):
            from .._core.errors import StoreError

            raise StoreError(f"another WorkManager schedules the works of {self!r}")

    async def try_lock_for_scheduler(self, owner: str) -> bool:
        """Take the scheduler lock for ``owner`` if it is free; return whether this
        store (for ``owner``) now holds it. A starting manager calls it before it
        recovers RUNNING works; one that gets ``False`` stands by, serving calls, and
        tries again until it gets the lock (the one that held it stopped or died).

        A store that only one scheduling process may use at a time (SQLite) grants it to
        one at a time; the lock ends with :meth:`close`, or with the process. The
        default grants it to every caller (stores with leases: any number of processes
        schedule).
        """
        return True

    @property
    def data_path(self) -> str | None:
        """The local file this store keeps its works in, if any: the built-in
        ``storage_not_low`` signal watches the disk it is on. ``None`` (the default): no
        local file."""
        return None

    @property
    def lease_duration(self) -> float | None:
        """How long a claim's lease lasts (seconds), for stores shared by several
        processes; the scheduler renews its running works' leases every half of it.
        ``None`` (the default): no leases, one scheduling process."""
        return None

    async def renew_leases(self, *, owner: str, ids: Collection[str], now: float) -> set[str]:
        """Extend the leases ``owner`` holds on the RUNNING works ``ids`` by
        :attr:`lease_duration` from ``now`` (or the store's own clock); return the ids
        whose lease ``owner`` no longer holds (expired and taken over, cancelled, or
        finished). Their runs should stop: their results would not be recorded.

        The default (no leases) returns an empty set.
        """
        return set()

    async def requeue_orphans(self, *, now: float) -> list[WorkRecord]:
        """Return RUNNING works whose process is gone to ENQUEUED with stop reason
        UNKNOWN, the attempt counted (:func:`wm_async._lifecycle.recover`); return the
        records written.

        The default, for single-scheduler stores (called once at start, after
        :meth:`lock_for_scheduler`), treats every RUNNING work as orphaned. Stores with
        leases override it to take only works whose lease has expired, and may be called
        at any time by any process.
        """
        from .._core.lifecycle import recover
        from .._core.model import (
            WorkQuery,
            WorkState,
        )

        running = await self.query(WorkQuery(states={WorkState.RUNNING}))
        if not running:
            return []
        return await self.apply([recover(r, now=now) for r in running])

    async def follow(
        self,
        listener: StoreListener,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tell ``listener`` about changes made by other processes until cancelled (the
        manager runs this in its task group).

        The default (a store only this process uses) has nothing to follow and returns
        at once.
        """
        task_status.started()

    async def signals_in_use(self) -> frozenset[str]:
        """The signal names that unfinished works' constraints need.

        The default reads every unfinished record; stores override it with a query.
        """
        from .._core.model import (
            UNFINISHED_STATES,
            WorkQuery,
        )

        records = await self.query(WorkQuery(states=UNFINISHED_STATES))
        return frozenset(n for r in records for n in r.signal_names)

    async def pause_worker(self, name: str, *, now: float) -> None:
        """Pause the worker ``name`` durably (idempotent; ``now`` is recorded as when):
        claims given it in :attr:`ClaimParams.paused_workers` leave its works ENQUEUED. A
        store shared by several processes tells the others (``changed(None)``).

        The default (a store only this process uses) keeps the names in memory.
        """
        vars(self).setdefault("_wm_paused", set()).add(name)

    async def resume_worker(self, name: str) -> None:
        """Resume the worker ``name`` (idempotent); tells other processes like
        :meth:`pause_worker`."""
        vars(self).setdefault("_wm_paused", set()).discard(name)

    async def paused_workers(self) -> frozenset[str]:
        """The names of the paused workers."""
        return frozenset(vars(self).get("_wm_paused", ()))

    # -- the dashboard's reads (``_browse``; the SQL stores answer from indexes)

    async def browse(self, flt: BrowseFilter) -> WorkPage:
        """The page of works ``flt`` selects, newest first (``enqueued_at``, then id),
        after its keyset cursor ``flt.before``.

        The default filters :meth:`query`'s records (fine for a few thousand works).
        """
        from ._browse import browse_query, browse_records

        return browse_records(await self.query(browse_query(flt)), flt)

    async def overview(self, *, now: float, since: float, bucket: float) -> Overview:
        """The overview's aggregates: unfinished works and works finished since
        ``since``, by worker, tag and state; the finished ones in buckets of ``bucket``
        seconds; the due and the RUNNING works.

        The default reads :meth:`query`'s records.

        :raises InvalidRequestError: for an empty window or too many buckets
        """
        from .._core.model import WorkQuery, WorkState
        from ._browse import check_window, overview_records

        check_window(now, since, bucket)
        records = await self.query(WorkQuery(states=set(WorkState)))
        return overview_records(records, now=now, since=since, bucket=bucket)

    async def edges(self, ids: Collection[str]) -> list[tuple[str, str]]:
        """The chain edges touching the works ``ids``: ``(prerequisite id, dependent
        id)`` pairs where either is in ``ids``, in no set order.

        The default (a store without chains) has none.
        """
        return []

    async def count_works(self) -> dict[tuple[str, WorkState], int]:
        """How many works each worker name has in each state (pairs with none are left
        out), for metrics and dashboards. The default reads every work; the SQL stores
        count in one query.

        :raises StoreError: if the store fails
        """
        from .._core.model import WorkQuery, WorkState

        counts: dict[tuple[str, WorkState], int] = {}
        for r in await self.query(WorkQuery(states=set(WorkState))):
            key = (r.worker, r.state)
            counts[key] = counts.get(key, 0) + 1
        return counts

    @abc.abstractmethod
    async def prune(self, *, finished_before: float) -> int:
        """Delete finished works whose ``finished_at`` is before the given time, except
        those an unfinished work depends on (semantics 34); return how many were
        deleted."""
