"""The writes behind the manager's public operations: checking requests, inserting works
and chains, the unique-name policies, updates and cancels (compare-and-set loops), and
what follows each write: publishing it, waking the dispatcher, stopping the runs of
cancelled works, and watching the signals new works need.

:func:`cancel_records` is the one compare-and-set cancel loop, shared with the CLI's
``wm-async cancel``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final

from .._core import lifecycle, validators
from .._core.errors import (
    InvalidRequestError,
    UnknownWorkerError,
)
from .._core.model import (
    NO_CONSTRAINTS,
    UpdateResult,
    WorkInfo,
    WorkState,
)
from .._core.record import WorkRecord, evolve
from .requests import (
    OneTimeWorkRequest,
    PeriodicWorkRequest,
)

if TYPE_CHECKING:
    from .._clock import Clock
    from .._runtime.services import (
        Services,
        Settings,
    )
    from .._runtime.workers import WorkerTable
    from ..stores import Store
    from ..stores._base import JoinedTransaction
    from .chains import WorkContinuation

#: Attempts at a compare-and-set before an operation gives up on a work that keeps
#: changing.
CAS_ATTEMPTS: Final = 10


def work_key(work_id: object) -> str:
    """The canonical text form of a work id (as WorkRecord.id holds it).

    :raises InvalidRequestError: if ``work_id`` is not a UUID
    """
    return str(validators.to_uuid("id", work_id))


async def cancel_records(
    store: Store,
    records: Iterable[WorkRecord],
    *,
    now: Callable[[], float],
    written: Callable[[list[WorkRecord]], None] | None = None,
) -> list[WorkRecord]:
    """Cancel the unfinished ``records`` by compare-and-set, re-reading the works that
    changed meanwhile and trying again (up to :data:`CAS_ATTEMPTS` rounds); return the
    records written as CANCELLED.

    semantics 29 also cancels the works' unfinished dependents: ``Store.apply`` does that
    in the same transaction and returns their records too.

    :param now: the clock's time, read at each round
    :param written: called with each round's records, as soon as they are written
    """
    pending = list(records)
    cancelled: list[WorkRecord] = []
    for _ in range(CAS_ATTEMPTS):
        at = now()
        changes = [c for r in pending if (c := lifecycle.cancel(r, now=at)) is not None]
        if not changes:
            break
        done = await store.apply(changes)
        cancelled += done
        if written is not None:
            written(done)
        ids = {r.id for r in done}
        missed = [c.before.id for c in changes if c.before.id not in ids]
        if not missed:
            break
        pending = await store.get(missed)
    return cancelled


class Operations:
    """The manager's writes, against the services of its current start.

    :param services: the manager's services (store, scheduler, signals, publishing)
    :param settings: the manager's configuration (``max_data_bytes``)
    :param store: the manager's store
    :param clock: the manager's clock
    :param workers: the worker registry
    """

    def __init__(
        self,
        *,
        services: Services,
        settings: Settings,
        store: Store,
        clock: Clock,
        workers: WorkerTable,
    ) -> None:
        self._services = services
        self._settings = settings
        self._store = store
        self._clock = clock
        self._workers = workers

    def __repr__(self) -> str:
        return f"Operations(services={self._services!r})"

    def check_request(self, request: object) -> OneTimeWorkRequest | PeriodicWorkRequest:
        """``request``, checked against the registry, the data limit and the signals.

        :raises InvalidRequestError: for an invalid request
        :raises UnknownWorkerError: if no worker is registered for it
        """
        if type(request) is not OneTimeWorkRequest and not isinstance(
            request, OneTimeWorkRequest | PeriodicWorkRequest
        ):
            raise InvalidRequestError(
                "request", request, "expected a OneTimeWorkRequest or PeriodicWorkRequest"
            )
        if request.worker not in self._workers and self._workers.member(request.worker) is None:
            known = self._settings.known_workers
            if known is not None:
                if request.worker not in known:
                    raise UnknownWorkerError(request.worker)
            elif self._settings.run_work:
                raise UnknownWorkerError(request.worker)
        if request.input:
            validators.check_data_size("input", request.input, self._settings.max_data_bytes)
        if request.constraints is NO_CONSTRAINTS:
            return request
        signals = self._services.signals
        missing = sorted(
            n for n in request.constraints.signal_names() if not signals.is_registered(n)
        )
        if missing and self._settings.run_work:
            # (A producer cannot tell: the workers' processes register their signals.)
            message = (
                f"no signal is registered as {', '.join(map(repr, missing))}; register one "
                "with manager.register_signal(name, signal)"
            )
            networks = [n for n in missing if n.startswith("network_")]
            if networks:  # only CONNECTED has a built-in signal, on any platform
                message += (
                    f" ({request.constraints.required_network} has no built-in signal: no "
                    "operating system tells it portably; register e.g. "
                    f"manager.register_signal({networks[0]!r}, wm.Predicate(your_check)))"
                )
            raise InvalidRequestError("constraints", request.constraints, message)
        return request

    async def _writes(self, connection: object) -> Store | JoinedTransaction:
        """Where an enqueue writes: the store, or (``connection`` given) the store's
        writes in the app's transaction on that connection (checked)."""
        if connection is None:
            return self._store
        return await self._store.join_transaction(connection)

    async def enqueue(
        self,
        requests: Sequence[OneTimeWorkRequest | PeriodicWorkRequest],
        *,
        connection: object = None,
    ) -> None:
        """Check and insert ``requests`` (at least one), atomically; with
        ``connection``, in the app's transaction on it. Such works are published (and
        the dispatcher woken) when the store announces them, at the app's COMMIT."""
        services = self._services
        checked = [self.check_request(r) for r in requests]
        now = self._clock.now()
        records = [
            WorkRecord.from_request(r, now=now)
            if type(r) is OneTimeWorkRequest
            else WorkRecord.from_periodic_request(r, now=now)  # type: ignore[arg-type]
            for r in checked
        ]
        headers = services.observers.headers()
        if headers is not None:
            records = [evolve(r, headers=headers) for r in records]
        services.signals.require(
            {
                n
                for r in checked
                if r.constraints is not NO_CONSTRAINTS
                for n in r.constraints.signal_names()
            }
        )
        with services.serving("enqueue"):
            await (await self._writes(connection)).insert(records)
        if connection is None:
            services.publish(records)
            # A delayed work wakes the dispatcher only if due before its next claim.
            due: float | None = records[0].next_run_at
            for record in records:
                at = record.next_run_at
                if at is None or due is None:
                    due = None
                    break
                due = min(due, at)
            services.scheduler.wake_for(due)

    async def enqueue_chain(self, last: WorkContinuation, *, connection: object = None) -> bool:
        """Enqueue the steps of ``last``'s chain not yet enqueued, in one transaction
        (with ``connection``, the app's on it).

        Steps enqueued in the app's transaction are not marked as enqueued: whether
        they are stored is the app's COMMIT's to decide, so enqueueing them again
        stores them after a rollback, and raises (their ids exist) after a commit."""
        nodes = [n for n in last._graph() if not n._enqueued]
        if not nodes:
            return False  # semantics 21: enqueueing twice is a no-op
        roots = [n for n in nodes if n._policy is not None]
        if len(roots) > 1:
            raise InvalidRequestError(
                "continuation",
                last,
                "it joins several unique chains; enqueue each of them first",
            )
        for node in nodes:
            for request in node._requests:
                self.check_request(request)
        now = self._clock.now()
        records: list[WorkRecord] = []
        links: dict[str, tuple[str, ...]] = {}
        for node in nodes:
            pids = tuple(str(r.id) for p in node._parents for r in p._requests)
            for request in node._requests:
                record = WorkRecord.from_request(request, now=now, unique_name=node._unique_name)
                records.append(record)
                if pids:
                    links[record.id] = pids
        if not roots:  # (enqueue_unique adds them to a unique chain's)
            headers = self._services.observers.headers()
            if headers is not None:
                records = [evolve(r, headers=headers) for r in records]
        mark = connection is None
        for node in nodes:  # before the await: a concurrent second enqueue is a no-op
            node._enqueued = mark
        services = self._services
        try:
            if roots:
                root = roots[0]
                assert root._unique_name is not None
                assert root._policy is not None
                return await self.enqueue_unique(
                    root._unique_name,
                    root._policy.value,
                    records,
                    links,
                    roots=[str(r.id) for r in root._requests],
                    connection=connection,
                )
            with services.serving("enqueue"):
                written = await (await self._writes(connection)).insert(records, links)
        except BaseException:
            for node in nodes:
                node._enqueued = False
            raise
        services.signals.require({n for r in records for n in r.signal_names})
        if connection is None:
            services.publish(written)
            services.scheduler.wake()
        return True

    def periodic(self, name: str, request: PeriodicWorkRequest) -> WorkRecord:
        """The record of a periodic request enqueued under the unique ``name``."""
        checked = self.check_request(request)
        assert isinstance(checked, PeriodicWorkRequest)
        return WorkRecord.from_periodic_request(checked, now=self._clock.now(), unique_name=name)

    async def enqueue_unique(
        self,
        name: str,
        policy: str,
        records: Sequence[WorkRecord],
        links: dict[str, tuple[str, ...]] | None = None,
        *,
        roots: Sequence[str] | None = None,
        connection: object = None,
    ) -> bool:
        """Apply the unique-name ``policy`` to ``records`` in one store transaction
        (with ``connection``, the app's on it: what it cancels stops, and what it
        writes is published, when the store announces it at the app's COMMIT); return
        whether they were enqueued."""
        now = self._clock.now()
        headers = self._services.observers.headers()
        if headers is not None:
            records = [evolve(r, headers=headers) for r in records]

        def plan(existing: list[WorkRecord], leaves: list[WorkRecord]) -> lifecycle.UniquePlan:
            return lifecycle.plan_unique(
                policy, existing, leaves, records, prerequisites=links, roots=roots, now=now
            )

        services = self._services
        with services.serving("enqueue"):
            decided, written = await (await self._writes(connection)).enqueue_unique(name, plan)
        if decided.inserts:
            services.signals.require({n for r in decided.inserts for n in r.signal_names})
        if connection is not None:
            return bool(decided.inserts)
        scheduler = services.scheduler
        for record in written:
            if record.state is WorkState.CANCELLED:
                scheduler.interrupt(record.id, record.stop_reason)
        services.publish(written)
        if decided.inserts:
            scheduler.wake()
        return bool(decided.inserts)

    async def update(self, request: OneTimeWorkRequest | PeriodicWorkRequest) -> UpdateResult:
        """Give the work with ``request.id`` the spec of ``request`` (compare-and-set).

        :raises InvalidRequestError: for an unknown id, an invalid request, or turning a
            one-time work into a periodic one or back
        """
        services = self._services
        checked = self.check_request(request)
        key = str(checked.id)
        for _ in range(CAS_ATTEMPTS):
            with services.serving("update_work"):
                found = await self._store.get([key])
            if not found:
                raise InvalidRequestError("id", checked.id, "no such work")
            record = found[0]
            periodic = isinstance(checked, PeriodicWorkRequest)
            if periodic != (record.periodic is not None):
                kinds = ("one-time", "periodic") if periodic else ("periodic", "one-time")
                raise InvalidRequestError(
                    "request", checked, f"cannot turn a {kinds[0]} work into a {kinds[1]} one"
                )
            now = self._clock.now()
            new = (
                WorkRecord.from_periodic_request(checked, now=now)  # type: ignore[arg-type]
                if periodic
                else WorkRecord.from_request(checked, now=now)  # type: ignore[arg-type]
            )
            result, change = lifecycle.update_spec(record, new)
            if change is None:
                return result
            with services.serving("update_work"):
                written = await self._store.update_spec(change)
            if written is not None:
                services.signals.require(written.signal_names)
                services.publish([written])
                services.scheduler.wake()
                return result
        raise InvalidRequestError("id", checked.id, "the work kept changing; try again")

    async def cancel(self, records: Iterable[WorkRecord]) -> int:
        """Cancel the records (stopping their runs here); return how many were."""
        services = self._services

        def stop_and_publish(written: list[WorkRecord]) -> None:
            scheduler = services.scheduler
            for record in written:
                scheduler.interrupt(record.id, record.stop_reason)
            services.publish(written)

        cancelled = await cancel_records(
            self._store, records, now=self._clock.now, written=stop_and_publish
        )
        if cancelled:
            services.scheduler.wake()
        return len(cancelled)

    async def apply_one(
        self,
        work_id: uuid.UUID | str,
        make: Callable[[WorkRecord, float], lifecycle.Change | None],
    ) -> WorkInfo:
        """Apply the change ``make`` returns for the work (compare-and-set), for
        :class:`wm_async.testing.TestDriver`."""
        wid = work_key(work_id)
        services = self._services
        for _ in range(CAS_ATTEMPTS):
            with services.serving("drive the work"):
                found = await self._store.get([wid])
            if not found:
                raise InvalidRequestError("id", wid, "no such work")
            change = make(found[0], self._clock.now())
            if change is None:
                return services.holds.info(found[0])
            with services.serving("drive the work"):
                written = await self._store.apply([change])
            if written:
                services.publish(written)
                services.scheduler.wake()
                return services.holds.info(written[0])
        raise InvalidRequestError("id", wid, "the work kept changing; try again")
