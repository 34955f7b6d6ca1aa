"""WorkManager: the public facade. The worker registry and every public operation,
which check their arguments here and delegate: the services of a running manager (store,
scheduler, signals, listener, pruner) to :class:`~wm_async._runtime.services.Services`,
the writes to :class:`~wm_async._api.operations.Operations`."""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Self, TypeVar

import anyio
import attrs

from .._clock import (
    Clock,
    SystemClock,
)
from .._core import lifecycle, validators
from .._core.errors import InvalidRequestError
from .._core.mergers import COMBINE_WORKER
from .._core.model import (
    UNFINISHED_STATES,
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    Result,
    UpdateResult,
    WorkInfo,
    WorkQuery,
)
from .._core.record import WorkRecord
from .._core.redact import mask_text
from .._runtime.events import WorkWatcher
from .._runtime.executor import WorkContext, WorkerFn
from .._runtime.hooks import TestHooks
from .._runtime.scheduler import Scheduler
from .._runtime.services import (
    RunState,
    Services,
)
from ..signals import Signal
from ..stores import (
    Store,
    open_store,
)
from .actions import WorkActions
from .chains import WorkContinuation
from .observing import Observing
from .operations import (
    CAS_ATTEMPTS,
    Operations,
    work_key,
)
from .pausing import WorkerPause
from .registry import WorkerRegistry
from .requests import (
    OneTimeWorkRequest,
    PeriodicWorkRequest,
)

logger = logging.getLogger("wm_async")
# A library logs and never prints: without this, Python's last-resort handler would write
# warnings to stderr in an app that configured no logging.
logger.addHandler(logging.NullHandler())

#: RunState lives with the services that drive it; wm_async exports it from here.
__all__ = ("RunState", "WorkManager")

F = TypeVar("F", bound=WorkerFn)


def _seconds(field: str, value: timedelta | float, *, allow_zero: bool = True) -> float:
    td = validators.to_timedelta(field, value)
    (validators.check_non_negative if allow_zero else validators.check_positive)(field, td)
    return td.total_seconds()


class WorkManager(WorkerRegistry, WorkerPause, WorkActions, Observing):
    """Runs background work in this process's event loop, durably.

    ::

        manager = WorkManager(store="sqlite:///wm_async.db")

        @manager.worker("sync_feed")
        async def sync_feed(ctx: WorkContext) -> Result | None: ...

        async with manager:
            await manager.enqueue(OneTimeWorkRequest("sync_feed"))

    :param store: a store URL (``memory://``, ``sqlite:///path.db``, ``postgresql://…``)
        or a :class:`~wm_async.stores.Store`
    :param max_concurrency: how many works run at once
    :param clock: the clock (a :class:`~wm_async.testing.VirtualClock` in tests)
    :param shutdown_grace: how long running work may finish when the manager stops
    :param keep_results_for: how long finished works are kept before automatic pruning
    :param max_data_bytes: the limit on serialised input, output and progress
    :param default_timeout: run time limit for works that set none (``None``: no limit)
    :param prune_interval: how often finished works are pruned while running
    :param owner: this process's identity in the store (default: host:pid:random)
    :param blocked_loop_warning: log a WARNING naming the work (worker and id) when a
        worker blocks the event loop for longer than this while works run; ``None``
        turns the watchdog thread off
    :param run_work: ``False`` makes a *producer*: it enqueues, observes, waits, updates
        and cancels, and never runs a work (a web process beside ``wm-async worker``
        processes). It needs no workers registered: the worker name is enough
        (``known_workers`` checks names at enqueue). ``True`` (the default): this
        process also schedules and runs works; on SQLite only one process does at a
        time, and the others stand by, serving calls, until it stops or dies
    :param known_workers: worker names an enqueue accepts besides the registered ones;
        given to a producer, an enqueue for any other name raises UnknownWorkerError.
        Without it a producer accepts any name, and a work no process has a worker for
        fails when it runs (with UnknownWorkerError)
    """

    def __init__(
        self,
        store: str | Store = "sqlite:///wm_async.db",
        *,
        max_concurrency: int = 20,
        clock: Clock | None = None,
        shutdown_grace: timedelta | float = timedelta(seconds=10),
        keep_results_for: timedelta | float = timedelta(days=1),
        max_data_bytes: int = validators.DEFAULT_MAX_DATA_BYTES,
        default_timeout: timedelta | float | None = timedelta(minutes=10),
        prune_interval: timedelta | float = timedelta(hours=1),
        owner: str | None = None,
        blocked_loop_warning: timedelta | float | None = 0.5,
        run_work: bool = True,
        known_workers: Iterable[str] | None = None,
    ) -> None:
        validators.check_int("max_concurrency", max_concurrency, 1)
        if not isinstance(run_work, bool):
            raise InvalidRequestError("run_work", run_work, "expected True or False")
        if isinstance(known_workers, str):
            raise InvalidRequestError(
                "known_workers", known_workers, "expected a collection of worker names"
            )
        #: Whether this manager schedules and runs works (``False``: a producer).
        self.run_work = run_work
        #: Worker names an enqueue accepts besides the registered ones (``None``: in a
        #: producer, any name).
        self.known_workers: frozenset[str] | None = (
            None
            if known_workers is None
            else frozenset(validators.check_name("known_workers", n) for n in known_workers)
        )
        validators.check_int("max_data_bytes", max_data_bytes, 2)
        if clock is not None and not isinstance(clock, Clock):
            raise InvalidRequestError("clock", clock, "expected a wm_async Clock")
        self._store = store if isinstance(store, Store) else open_store(store)
        self._clock: Clock = clock or SystemClock()
        self.max_concurrency = max_concurrency
        self.shutdown_grace = _seconds("shutdown_grace", shutdown_grace)
        self.keep_results_for = _seconds("keep_results_for", keep_results_for)
        self.max_data_bytes = max_data_bytes
        self.default_timeout = (
            None
            if default_timeout is None
            else _seconds("default_timeout", default_timeout, allow_zero=False)
        )
        self.prune_interval = _seconds("prune_interval", prune_interval, allow_zero=False)
        self.blocked_loop_warning = (
            None
            if blocked_loop_warning is None
            else _seconds("blocked_loop_warning", blocked_loop_warning, allow_zero=False)
        )
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        super().__init__(_combine)
        # What wm_async.testing.TestDriver changes in the running manager.
        self._hooks = TestHooks()
        self._services = services = Services(
            settings=self,
            store=self._store,
            clock=self._clock,
            workers=self._workers,
            hooks=self._hooks,
            limits=self._limits,
        )
        self._ops = Operations(
            services=services,
            settings=self,
            store=self._store,
            clock=self._clock,
            workers=self._workers,
        )
        self._events = services.events
        self._signals = services.signals
        # The guards of every call (TestDriver's too).
        self._require = services.require
        self._serving = services.serving

    def __repr__(self) -> str:
        store = mask_text(repr(self._store))  # a custom store's repr may show its URL
        return f"WorkManager(store={store}, state={self._services.state.value!r})"

    @property
    def _scheduler(self) -> Scheduler:
        """The scheduler of the current (or last) start."""
        return self._services.scheduler

    # -- properties

    @property
    def store(self) -> Store:
        """The store this manager uses."""
        return self._store

    @property
    def clock(self) -> Clock:
        """The clock this manager uses."""
        return self._clock

    @property
    def state(self) -> RunState:
        """The manager's run state."""
        return self._services.state

    @property
    def is_scheduling(self) -> bool:
        """Whether this manager schedules and runs works now: ``False`` in a producer
        (``run_work=False``), and in a standby while another process holds a SQLite
        file's scheduler lock (it takes over when that process stops or dies)."""
        return self._services.scheduling and self._services.state is RunState.STARTED

    @property
    def role(self) -> str:
        """``"scheduler"`` (schedules and runs works), ``"standby"`` (runs works once the
        scheduling process of its SQLite file stops) or ``"producer"`` (never runs
        works)."""
        return self._services.role

    def statistics(self) -> dict[str, object]:
        """Live figures: running works, capacity in use, registered workers, role."""
        return {
            "state": self._services.state.value,
            "role": self._services.role,
            "workers": sorted(n for n in self._workers if n != COMBINE_WORKER),
            **self._scheduler.statistics(),
        }

    # -- lifecycle

    async def __aenter__(self) -> Self:
        await self._services.start()
        try:
            for hook in self._on_start:
                await hook(self)
        except BaseException:
            # (Not in a shielded scope: the services' task group must exit in the
            # scope it was entered in.)
            await self._services.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._services.stop()

    # -- enqueue

    async def enqueue(
        self, *requests: OneTimeWorkRequest | PeriodicWorkRequest, connection: object = None
    ) -> None:
        """Store the requests atomically (all or none); returns once they are durable.

        :param connection: (PostgreSQL) an asyncpg connection in the app's open
            transaction: the works are written in it, durable and announced to the
            workers when the app commits, gone if it rolls back (README, "Transactional
            enqueue")
        :raises InvalidRequestError: for an invalid request (nothing is stored), or a
            ``connection`` the store cannot write through (not in a transaction, to
            another database, or a store other than PostgreSQL)
        :raises UnknownWorkerError: if no worker is registered for a request
        :raises NotRunningError: if the manager is not running
        """
        self._require("enqueue")
        if not requests:
            return
        await self._ops.enqueue(requests, connection=connection)

    # -- chains

    def begin_with(self, *requests: OneTimeWorkRequest) -> WorkContinuation:
        """Start a chain whose first step is ``requests`` (run in parallel); grow it with
        :meth:`WorkContinuation.then` and store it with :meth:`WorkContinuation.enqueue`.

        :raises InvalidRequestError: for no request or a periodic request
        """
        return WorkContinuation(self, requests)

    def begin_unique_work(
        self, name: str, policy: ExistingWorkPolicy | str, *requests: OneTimeWorkRequest
    ) -> WorkContinuation:
        """Start a chain under the unique ``name``: when it is enqueued, ``policy`` decides
        against the works already under the name (see :meth:`enqueue_unique_work`); every
        work of the chain is enqueued under the name.

        :raises InvalidRequestError: for an invalid name, policy or request
        """
        validators.check_name("unique_name", name)
        chosen = validators.to_enum("policy", ExistingWorkPolicy, policy)
        return WorkContinuation(self, requests, unique_name=name, policy=chosen)

    def combine(self, *continuations: WorkContinuation) -> WorkContinuation:
        """:meth:`WorkContinuation.combine`: a step that waits for all the continuations
        and passes their merged outputs on."""
        combined = WorkContinuation.combine(*continuations)
        if combined._manager is not self:
            raise InvalidRequestError(
                "continuations", continuations, "they belong to another WorkManager"
            )
        return combined

    async def _enqueue_chain(self, last: WorkContinuation, *, connection: object = None) -> bool:
        """Enqueue the steps of ``last``'s chain not yet enqueued, in one transaction."""
        self._require("enqueue")
        return await self._ops.enqueue_chain(last, connection=connection)

    # -- signals

    def register_signal(self, name: str, signal: Signal) -> None:
        """Register (or replace) the signal that constraints call ``name``.

        The built-in constraints use the names ``network``, ``charging``,
        ``battery_not_low``, ``storage_not_low`` and ``device_idle``; registering one of
        them replaces the built-in (for example with an app-specific network probe).

        :raises InvalidRequestError: for an invalid name or an object that is not a Signal
        """
        validators.check_name("signal", name)
        if not isinstance(signal, Signal):
            raise InvalidRequestError(
                "signal", signal, "expected a Signal (a `value` property and `wait_changed()`)"
            )
        self._signals.register(name, signal)

    async def enqueue_unique_work(
        self,
        name: str,
        policy: ExistingWorkPolicy | str,
        *requests: OneTimeWorkRequest,
        connection: object = None,
    ) -> bool:
        """Enqueue one-time works under a unique name, as ``policy`` says (semantics 22-24).

        - KEEP: do nothing if a work under ``name`` is unfinished; otherwise replace the
          name's finished works with these.
        - REPLACE: cancel the name's unfinished works (stopping a running one with
          CANCELLED_BY_APP), remove all of them, and enqueue these.

        - APPEND: the new works start when the name's leaves (its works no work depends
          on) have all succeeded; a failed or cancelled leaf fails or cancels them.
        - APPEND_OR_REPLACE: APPEND, but a failed or cancelled leaf makes it a REPLACE.

        The decision and its writes happen in one store transaction, so concurrent calls
        on one name behave as if they ran one after the other.

        :param connection: as for :meth:`enqueue`: the decision and its writes happen
            in the app's transaction, which holds the name's lock until it ends
        :return: whether the requests were enqueued (False: KEEP kept the existing work)
        :raises InvalidRequestError: for an invalid name, policy, request or
            ``connection``
        """
        self._require("enqueue_unique_work")
        chain = self.begin_unique_work(name, policy, *requests)
        return await self._enqueue_chain(chain, connection=connection)

    async def enqueue_unique_periodic_work(
        self, name: str, policy: ExistingPeriodicWorkPolicy | str, request: PeriodicWorkRequest
    ) -> bool:
        """Enqueue a periodic work under a unique name (semantics 26).

        - KEEP: do nothing if a work under ``name`` is unfinished.
        - CANCEL_AND_REENQUEUE: cancel and remove the name's works, enqueue this one.
        - UPDATE: update the unfinished periodic work under ``name`` in place (its id,
          state, attempts and period clock are kept; see :meth:`update_work`), or
          enqueue this one if there is none.

        :return: whether the request was enqueued or applied
        """
        self._require("enqueue_unique_periodic_work")
        validators.check_name("unique_name", name)
        chosen = validators.to_enum("policy", ExistingPeriodicWorkPolicy, policy)
        if not isinstance(request, PeriodicWorkRequest):
            raise InvalidRequestError("request", request, "expected a PeriodicWorkRequest")
        if chosen is not ExistingPeriodicWorkPolicy.UPDATE:
            policy_value = "KEEP" if chosen is ExistingPeriodicWorkPolicy.KEEP else "REPLACE"
            return await self._ops.enqueue_unique(
                name, policy_value, [self._ops.periodic(name, request)]
            )
        for _ in range(CAS_ATTEMPTS):
            with self._serving("enqueue_unique_periodic_work"):
                unfinished = await self._store.query(
                    WorkQuery(unique_names={name}, states=UNFINISHED_STATES)
                )
            current = [r for r in unfinished if r.periodic is not None]
            if current:
                moved = attrs.evolve(request, id=uuid.UUID(current[0].id))
                return await self.update_work(moved) is not UpdateResult.NOT_APPLIED
            if unfinished:
                raise InvalidRequestError(
                    "unique_name",
                    name,
                    "its unfinished work is one-time, so UPDATE cannot apply; use "
                    "CANCEL_AND_REENQUEUE",
                )
            # None yet: insert with KEEP, so that if a concurrent caller inserted first we
            # update theirs on the next turn instead of replacing it.
            if await self._ops.enqueue_unique(name, "KEEP", [self._ops.periodic(name, request)]):
                return True
        raise InvalidRequestError("unique_name", name, "its works kept changing; try again")

    async def cancel_unique_work(self, name: str) -> int:
        """Cancel every unfinished work under the unique name; returns how many."""
        self._require("cancel_unique_work")
        query = WorkQuery(
            unique_names={validators.check_name("unique_name", name)}, states=UNFINISHED_STATES
        )
        with self._serving("cancel_unique_work"):
            return await self._ops.cancel(await self._store.query(query))

    async def update_work(self, request: OneTimeWorkRequest | PeriodicWorkRequest) -> UpdateResult:
        """Give the work with ``request.id`` the spec of ``request`` (semantics 27).

        The work keeps its id, state, attempt count and period clock; its ``generation``
        goes up. A running work finishes its current run with the old spec
        (``APPLIED_FOR_NEXT_RUN``); an ENQUEUED or BLOCKED one changes now
        (``APPLIED_IMMEDIATELY``); a finished one is left alone (``NOT_APPLIED``).

        :raises InvalidRequestError: for an unknown id, an invalid request, or turning a
            one-time work into a periodic one or back
        """
        self._require("update_work")
        return await self._ops.update(request)

    # -- queries

    async def get_work_info(self, work_id: uuid.UUID | str) -> WorkInfo | None:
        """The work's current WorkInfo, or ``None`` for an unknown or pruned id."""
        self._require("get_work_info")
        with self._serving("get_work_info"):
            found = await self._store.get([work_key(work_id)])
        return self._infos(found)[0] if found else None

    async def get_work_infos(self, query: WorkQuery) -> list[WorkInfo]:
        """WorkInfos of the works ``query`` selects, oldest first."""
        self._require("get_work_infos")
        if not isinstance(query, WorkQuery):
            raise InvalidRequestError("query", query, "expected a WorkQuery")
        with self._serving("get_work_infos"):
            return self._infos(await self._store.query(query))

    async def wait(
        self,
        work_id: uuid.UUID | str,
        *,
        timeout: timedelta | float | None = None,  # noqa: ASYNC109  # the documented contract
    ) -> WorkInfo:
        """Wait until the work is SUCCEEDED, FAILED or CANCELLED and return its WorkInfo.

        :param timeout: give up after this long (real time)
        :raises TimeoutError: if the timeout passes first
        :raises InvalidRequestError: for an unknown id
        :raises NotRunningError: if the manager stops while waiting
        """
        self._require("wait")
        wid = work_key(work_id)
        limit = None if timeout is None else _seconds("timeout", timeout)
        event = self._events.add_waiter(wid)  # before reading, so no change is missed
        try:
            with anyio.fail_after(limit):
                while True:
                    with self._serving("wait"):
                        found = await self._store.get([wid])
                    if not found:
                        raise InvalidRequestError("id", wid, "no such work")
                    if found[0].state.is_finished:
                        return found[0].to_info()
                    await event.wait()
                    if self._events.closed:  # woken by the manager stopping (or failing)
                        raise self._services.not_running("wait")
                    event = self._events.add_waiter(wid)
        finally:
            self._events.remove_waiter(wid, event)

    def watch(self, query: WorkQuery, *, max_buffer: int = 10_000) -> WorkWatcher:
        """Follow the works ``query`` selects: yields their current WorkInfo, then one
        per change. See :class:`~wm_async.WorkWatcher`.

        :param max_buffer: how many changed works the watcher buffers for a consumer that
            has fallen behind (the latest state of each). When one more changes, it drops
            them and reads the query's current works from the store on the next read:
            memory stays bounded, and the consumer still sees each work's latest state.
        :raises NotRunningError: if the manager is not running
        :raises InvalidRequestError: if ``query`` is not a WorkQuery or ``max_buffer`` is
            not an integer >= 1
        """
        self._require("watch")
        if not isinstance(query, WorkQuery):
            raise InvalidRequestError("query", query, "expected a WorkQuery")
        validators.check_int("max_buffer", max_buffer, 1)

        async def load() -> Sequence[WorkRecord]:
            # Tracked, so a virtual clock's advance() waits for the snapshot (the first,
            # or one read again after an overflow) rather than running the works past it.
            with self._scheduler.tracked(), self._serving("watch"):
                return await self._store.query(query)

        return self._events.subscribe(query, load, max_buffer=max_buffer)

    # -- cancellation

    async def cancel_work_by_id(self, work_id: uuid.UUID | str) -> bool:
        """Cancel a work (stopping it if it runs). Returns False if it was unknown or
        already finished."""
        self._require("cancel_work_by_id")
        with self._serving("cancel_work_by_id"):
            return await self._ops.cancel(await self._store.get([work_key(work_id)])) > 0

    async def cancel_all_work_by_tag(self, tag: str) -> int:
        """Cancel every unfinished work with this tag; returns how many."""
        self._require("cancel_all_work_by_tag")
        query = WorkQuery(tags={validators.check_name("tag", tag)}, states=UNFINISHED_STATES)
        with self._serving("cancel_all_work_by_tag"):
            return await self._ops.cancel(await self._store.query(query))

    async def cancel_all_work(self) -> int:
        """Cancel every unfinished work; returns how many."""
        self._require("cancel_all_work")
        with self._serving("cancel_all_work"):
            return await self._ops.cancel(
                await self._store.query(WorkQuery(states=UNFINISHED_STATES))
            )

    # -- retention

    async def prune_work(self) -> int:
        """Delete every finished work now; returns how many."""
        self._require("prune_work")
        with self._serving("prune_work"):
            return await self._store.prune(finished_before=math.inf)

    # -- test support (used by wm_async.testing.TestDriver)

    async def _apply_one(
        self,
        work_id: uuid.UUID | str,
        make: Callable[[WorkRecord, float], lifecycle.Change | None],
    ) -> WorkInfo:
        """Apply the change ``make`` returns for the work (compare-and-set)."""
        return await self._ops.apply_one(work_id, make)


async def _combine(ctx: WorkContext) -> Result:
    """The pass-through step of WorkContinuation.combine: its input (the array-merged
    outputs of the combined chains) becomes its output."""
    return Result.success(ctx.input)
