"""WorkManager: the public facade. Worker registry, enqueue/cancel/query/wait/watch,
the run-state machine, and the lifetime of the store, scheduler and pruner."""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from datetime import timedelta
from types import TracebackType
from typing import Self, TypeVar

import anyio
import attrs
from anyio.abc import TaskStatus

from . import _lifecycle as lc
from . import _validators as v
from ._chain import COMBINE_WORKER, WorkContinuation
from ._clock import Clock, SystemClock
from ._constraints import SignalBoard, stop_reason_for
from ._errors import (
    InvalidRequestError,
    NotRunningError,
    SchedulerError,
    StoreError,
    UnknownWorkerError,
)
from ._events import EventHub, WorkWatcher
from ._executor import WorkContext, Worker, WorkerFn, task_cancelled
from ._model import (
    NO_CONSTRAINTS,
    UNFINISHED_STATES,
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    Result,
    StopReason,
    UpdateResult,
    WorkExplanation,
    WorkInfo,
    WorkQuery,
    WorkState,
)
from ._record import WorkRecord
from ._redact import mask_text
from ._requests import OneTimeWorkRequest, PeriodicWorkRequest
from ._scheduler import Scheduler
from ._watchdog import LoopWatchdog
from .signals import Signal, default_signals
from .stores import Store, StoreListener, open_store

logger = logging.getLogger("wm_async")
# A library logs and never prints: without this, Python's last-resort handler would write
# warnings to stderr in an app that configured no logging.
logger.addHandler(logging.NullHandler())
_transitions = logging.getLogger("wm_async.transitions")

F = TypeVar("F", bound=WorkerFn)

#: Attempts at a compare-and-set before a cancel gives up on a work that keeps changing.
_CAS_ATTEMPTS = 10


class RunState(enum.Enum):
    """The manager's own lifecycle."""

    #: Not started, or stopped. Only registration and configuration work.
    STOPPED = "stopped"
    #: Opening the store, recovering, starting the scheduler.
    STARTING = "starting"
    #: Running: every method works.
    STARTED = "started"
    #: Leaving ``async with``: no new runs start; the API still reads and writes the store.
    STOPPING = "stopping"
    #: The scheduler (or another service of the manager) stopped on an unexpected error:
    #: no work runs; every call, and leaving ``async with``, raises SchedulerError.
    FAILED = "failed"


def _key(work_id: object) -> str:
    """The canonical text form of a work id (as WorkRecord.id holds it)."""
    return str(v.to_uuid("id", work_id))


def _seconds(field: str, value: timedelta | float, *, allow_zero: bool = True) -> float:
    td = v.to_timedelta(field, value)
    (v.check_non_negative if allow_zero else v.check_positive)(field, td)
    return td.total_seconds()


class WorkManager:
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
    """

    def __init__(
        self,
        store: str | Store = "sqlite:///wm_async.db",
        *,
        max_concurrency: int = 20,
        clock: Clock | None = None,
        shutdown_grace: timedelta | float = timedelta(seconds=10),
        keep_results_for: timedelta | float = timedelta(days=1),
        max_data_bytes: int = v.DEFAULT_MAX_DATA_BYTES,
        default_timeout: timedelta | float | None = timedelta(minutes=10),
        prune_interval: timedelta | float = timedelta(hours=1),
        owner: str | None = None,
        blocked_loop_warning: timedelta | float | None = 0.5,
    ) -> None:
        v.check_int("max_concurrency", max_concurrency, 1)
        v.check_int("max_data_bytes", max_data_bytes, 2)
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
        self._workers: dict[str, Worker] = {COMBINE_WORKER: Worker.wrap(COMBINE_WORKER, _combine)}
        self._events = EventHub()
        self._signals = SignalBoard(self._clock, self._signal_changed)
        for name, signal in default_signals(getattr(self._store, "path", None)).items():
            self._signals.register(name, signal)
        # Works whose constraints TestDriver.set_all_constraints_met declared met.
        self._constraints_met: set[str] = set()
        self._scheduler = self._new_scheduler()
        self._state = RunState.STOPPED
        self._exit_stack: AsyncExitStack | None = None
        self._stop_pruner = anyio.Event()
        # (state, attempts) last logged per unfinished work, for the DEBUG transition log.
        self._logged_states: dict[str, tuple[WorkState, int]] = {}
        self._follow_scope: anyio.CancelScope | None = None
        # The unexpected error that stopped a service of the running manager (RunState.FAILED).
        self._fatal: BaseException | None = None
        # Set as shutdown closes the store: a call that then meets a closed store was
        # racing the shutdown, and gets NotRunningError rather than the store's error.
        self._store_closed = False

    def __repr__(self) -> str:
        store = mask_text(repr(self._store))  # a custom store's repr may show its URL
        return f"WorkManager(store={store}, state={self._state.value!r})"

    def _new_scheduler(self) -> Scheduler:
        return Scheduler(
            store=self._store,
            clock=self._clock,
            workers=self._workers,
            max_concurrency=self.max_concurrency,
            default_timeout=self.default_timeout,
            owner=self.owner,
            max_data_bytes=self.max_data_bytes,
            publish=self._publish,
            blocked_signals=lambda: self._signals.blocked,
            require_signals=self._signals.require,
            constraints_met=self._constraints_met,
        )

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
        return self._state

    def statistics(self) -> dict[str, object]:
        """Live figures: running works, capacity in use, registered workers."""
        return {
            "state": self._state.value,
            "workers": sorted(n for n in self._workers if n != COMBINE_WORKER),
            **self._scheduler.statistics(),
        }

    # -- worker registry

    def worker(self, name: str) -> Callable[[F], F]:
        """Register the decorated async (or sync) function as the worker ``name``.

        The function receives a :class:`~wm_async.WorkContext` and returns a
        :class:`~wm_async.Result` or ``None`` (success); raising fails the work. Sync
        functions run in a worker thread.

        :raises InvalidRequestError: if the name is invalid or already registered
        """
        v.check_name("worker", name)

        def register(fn: F) -> F:
            self.register_worker(name, fn)
            return fn

        return register

    def register_worker(self, name: str, fn: WorkerFn) -> None:
        """Register ``fn`` as the worker ``name`` (the non-decorator form of
        :meth:`worker`).

        :raises InvalidRequestError: if the name is invalid or already registered
        """
        v.check_name("worker", name)
        if not callable(fn):
            raise InvalidRequestError("worker", fn, "expected a callable")
        if name in self._workers:
            raise InvalidRequestError("worker", name, "a worker is already registered under it")
        if name == COMBINE_WORKER:
            raise InvalidRequestError("worker", name, "this name is reserved for chains")
        self._workers[name] = Worker.wrap(name, fn)

    def unregister_worker(self, name: str) -> None:
        """Remove a worker. Works enqueued for it fail when they run (with an error that
        says so)."""
        if name != COMBINE_WORKER:
            self._workers.pop(name, None)

    # -- lifecycle

    def _require(self, operation: str) -> None:
        if self._state is not RunState.STARTED and self._state is not RunState.STOPPING:
            raise self._not_running(operation)
        if self._fatal is not None:
            raise SchedulerError(operation, self._fatal) from self._fatal

    def _not_running(self, operation: str) -> NotRunningError:
        if self._fatal is not None:
            error: NotRunningError = SchedulerError(operation, self._fatal)
            error.__cause__ = self._fatal
            return error
        state = self._state
        if state is RunState.STARTED or state is RunState.STOPPING:
            state = RunState.STOPPING if self._store_closed else state
        return NotRunningError(operation, state.value)

    @contextmanager
    def _serving(self, operation: str) -> Iterator[None]:
        """Around a call's store operations: a store closed by a shutdown the call was
        racing means the manager stopped under it (NotRunningError), not a store
        failure."""
        try:
            yield
        except StoreError as exc:
            if self._store_closed:
                raise self._not_running(operation) from exc
            raise

    def _store_closing(self) -> None:
        self._store_closed = True

    async def _guarded(
        self,
        service: str,
        run: Callable[..., Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one of the manager's services in its task group. An unexpected error
        does not cancel the app's code inside ``async with manager:`` (which the task
        group's scope covers): it fails the manager loudly instead (:meth:`_crashed`)."""
        status = _Started(task_status)
        try:
            await run(task_status=status)
        except BaseException as exc:
            if task_cancelled() or not status.done:
                raise  # stopped by the task group, or failed to start: not a crash
            self._crashed(service, exc)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise

    def _crashed(self, service: str, exc: BaseException) -> None:
        if self._fatal is not None:
            return
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a task group's wrapping of the one error
        self._fatal = exc
        self._state = RunState.FAILED
        logger.error(
            "the WorkManager's %s stopped on an unexpected error; no work runs until the "
            "manager is started again, and every call raises SchedulerError",
            service,
            exc_info=exc,
        )
        self._events.close()  # waiters and watchers end (with SchedulerError)
        self._scheduler.request_stop(self.shutdown_grace)

    async def __aenter__(self) -> Self:
        if self._state is not RunState.STOPPED:
            raise NotRunningError("start", self._state.value)
        self._state = RunState.STARTING
        self._fatal = None
        self._store_closed = False
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(self._store)
                stack.callback(self._store_closing)  # unwound just before the store closes
                self._events.closed = False
                stack.callback(self._events.close)
                await self._store.lock_for_scheduler(self.owner)
                self._scheduler = self._new_scheduler()
                # Attached for the whole life of the task group (detached after it
                # exits), so a virtual clock also waits for the shutdown.
                self._clock.attach(self._scheduler)
                stack.callback(self._clock.detach, self._scheduler)
                if self.blocked_loop_warning is not None:
                    # Stopped after the task group exits, so it watches the shutdown too.
                    watchdog = LoopWatchdog(
                        self.blocked_loop_warning,
                        self._scheduler.is_busy,
                        self._scheduler.describe_task,
                    )
                    watchdog.start()
                    stack.callback(watchdog.stop)
                    self._scheduler.on_busy = watchdog.wake
                tg = await stack.enter_async_context(anyio.create_task_group())
                stack.push_async_callback(self._shutdown)
                # Before recovery: a shared store learns which clock to compare leases
                # with, and misses no change made meanwhile.
                await tg.start(
                    self._guarded,
                    "store listener",
                    self._follow_store,
                    name="wm_async store listener",
                )
                await self._recover()
                await self._prune_once()
                self._signals.require(await self._store.signals_in_use())
                await tg.start(
                    self._guarded, "signal board", self._signals.run, name="wm_async signals"
                )
                await tg.start(
                    self._guarded, "scheduler", self._scheduler.run, name="wm_async scheduler"
                )
                self._stop_pruner = anyio.Event()
                await tg.start(self._prune_loop, name="wm_async pruner")
                self._exit_stack = stack.pop_all()
        except BaseException as exc:  # noqa: BLE001  # re-raised below, unwrapped
            self._state = RunState.STOPPED
            # A start-up step that fails inside the task group (recovery on a read-only
            # file, say) comes out wrapped in an ExceptionGroup: raise the error itself,
            # so `except StoreError` around `async with manager:` sees it.
            inner = exc
            while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
                inner = inner.exceptions[0]
            raise inner  # noqa: B904  # its own __cause__ (the driver error) is kept
        self._state = RunState.STARTED
        store = mask_text(repr(self._store))
        logger.info("WorkManager started (store=%s, owner=%s)", store, self.owner)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            return  # never started, or already stopped: stopping is idempotent
        self._state = RunState.STOPPING
        try:
            # The body's own exception is not passed into the task group: that would
            # cancel the running work instead of stopping gracefully, and anyio would
            # re-raise it wrapped in an ExceptionGroup, so `except WorkManagerError`
            # around `async with manager:` would miss it. It propagates unchanged.
            await stack.__aexit__(None, None, None)
        finally:
            self._state = RunState.STOPPED
            logger.info("WorkManager stopped")
        fatal = self._fatal
        if fatal is not None:
            raise SchedulerError("run work", fatal) from fatal

    async def _shutdown(self) -> None:
        # Runs first as the exit stack unwinds; the task group's exit then waits for the
        # scheduler's two-phase stop (bounded by shutdown_grace plus the stuck bound).
        self._stop_pruner.set()
        if self._follow_scope is not None:
            self._follow_scope.cancel()
        self._signals.stop()
        self._scheduler.request_stop(self.shutdown_grace)

    async def _recover(self) -> None:
        """semantics 15: RUNNING works of a dead process run again (with leases: only
        works whose lease expired, never those of live processes)."""
        written = await self._store.requeue_orphans(now=self._clock.now())
        if written:
            logger.warning("recovered %d work(s) interrupted by a crash", len(written))
            self._publish(written)

    async def _follow_store(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Let the store report other processes' changes (a no-op for stores only this
        process uses), until shutdown begins."""
        listener = StoreListener(
            now=self._clock.now,
            real_time=isinstance(self._clock, SystemClock),
            wake=self._scheduler.wake,
            changed=self._external_change,
        )
        with anyio.CancelScope() as scope:
            self._follow_scope = scope
            await self._store.follow(listener, task_status=task_status)

    async def _external_change(self, ids: Sequence[str] | None) -> None:
        """Other processes wrote the works ``ids`` (``None``: possibly any). Re-read the
        ones someone here waits on or watches, and those running here: a run whose work
        was cancelled or taken over elsewhere stops (semantics 29, 30)."""
        scheduler, events = self._scheduler, self._events
        if ids is None:
            wanted = {*events.waited_ids(), *scheduler.running_ids()}
            for query in events.watched_queries():
                wanted.update(r.id for r in await self._store.query(query))
        else:
            watching = events.has_watchers()
            wanted = {i for i in ids if watching or events.is_waited(i) or scheduler.runs(i)}
        if not wanted:
            return
        records = await self._store.get(wanted)
        self._publish(records)
        for record in records:
            if scheduler.runs(record.id) and (
                record.state is not WorkState.RUNNING or record.owner != self.owner
            ):
                reason = (
                    StopReason.CANCELLED_BY_APP
                    if record.state is WorkState.CANCELLED
                    else StopReason.LEASE_LOST
                )
                scheduler.interrupt(record.id, reason)

    async def _prune_once(self) -> int:
        before = self._clock.now() - self.keep_results_for
        return await self._store.prune(finished_before=before)

    async def _prune_loop(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        stop = self._stop_pruner
        while True:
            await self._clock.sleep_until(self._clock.now() + self.prune_interval, stop)
            if stop.is_set():
                return
            try:
                with self._scheduler.tracked():
                    pruned = await self._prune_once()
            except Exception:
                logger.exception("automatic pruning failed; will retry")
            else:
                if pruned:
                    logger.info("pruned %d finished work(s)", pruned)

    # -- publishing

    def _publish(self, records: Sequence[WorkRecord]) -> None:
        if _transitions.isEnabledFor(logging.DEBUG):
            self._log_transitions(records)
        self._events.publish(records)

    def _log_transitions(self, records: Sequence[WorkRecord]) -> None:
        """One DEBUG line per state change; progress reports are not one. The state
        before is ``-`` for a work this process has not seen change yet."""
        seen = self._logged_states
        for r in records:
            now = (r.state, r.run_attempt_count)
            # Only unfinished works are remembered, so the map stays small.
            before = seen.pop(r.id, None) if r.state.is_finished else seen.get(r.id)
            if not r.state.is_finished:
                seen[r.id] = now
            if before == now:
                continue
            extra = ""
            if r.stop_reason is not StopReason.NOT_STOPPED:
                extra += f" stop_reason={r.stop_reason.value}"
            if r.state is WorkState.FAILED and r.error is not None:
                extra += f" error={r.error.type}"
            _transitions.debug(
                "work %s (%r): %s -> %s attempts=%d%s",
                r.id,
                r.worker,
                before[0].value if before else "-",
                r.state.value,
                r.run_attempt_count,
                extra,
            )

    # -- enqueue

    def _check_request(self, request: object) -> OneTimeWorkRequest | PeriodicWorkRequest:
        if type(request) is not OneTimeWorkRequest and not isinstance(
            request, OneTimeWorkRequest | PeriodicWorkRequest
        ):
            raise InvalidRequestError(
                "request", request, "expected a OneTimeWorkRequest or PeriodicWorkRequest"
            )
        if request.worker not in self._workers:
            raise UnknownWorkerError(request.worker)
        if request.input:
            v.check_data_size("input", request.input, self.max_data_bytes)
        if request.constraints is NO_CONSTRAINTS:
            return request
        missing = sorted(
            n for n in request.constraints.signal_names() if not self._signals.is_registered(n)
        )
        if missing:
            raise InvalidRequestError(
                "constraints",
                request.constraints,
                f"no signal is registered as {', '.join(map(repr, missing))}; register one "
                "with manager.register_signal(name, signal)",
            )
        return request

    async def enqueue(self, *requests: OneTimeWorkRequest | PeriodicWorkRequest) -> None:
        """Store the requests atomically (all or none); returns once they are durable.

        :raises InvalidRequestError: for an invalid request (nothing is stored)
        :raises UnknownWorkerError: if no worker is registered for a request
        :raises NotRunningError: if the manager is not running
        """
        self._require("enqueue")
        if not requests:
            return
        checked = [self._check_request(r) for r in requests]
        now = self._clock.now()
        records = [
            WorkRecord.from_request(r, now=now)
            if type(r) is OneTimeWorkRequest
            else WorkRecord.from_periodic_request(r, now=now)  # type: ignore[arg-type]
            for r in checked
        ]
        self._signals.require(
            {
                n
                for r in checked
                if r.constraints is not NO_CONSTRAINTS
                for n in r.constraints.signal_names()
            }
        )
        try:
            await self._store.insert(records)
        except StoreError as exc:
            if self._store_closed:
                raise self._not_running("enqueue") from exc
            raise
        self._publish(records)
        self._scheduler.wake()

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
        v.check_name("unique_name", name)
        chosen = v.to_enum("policy", ExistingWorkPolicy, policy)
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

    async def _enqueue_chain(self, last: WorkContinuation) -> bool:
        """Enqueue the steps of ``last``'s chain not yet enqueued, in one transaction."""
        self._require("enqueue")
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
                self._check_request(request)
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
        for node in nodes:  # before the await: a concurrent second enqueue is a no-op
            node._enqueued = True
        try:
            if roots:
                root = roots[0]
                assert root._unique_name is not None
                assert root._policy is not None
                return await self._enqueue_unique(
                    root._unique_name,
                    root._policy.value,
                    records,
                    links,
                    roots=[str(r.id) for r in root._requests],
                )
            with self._serving("enqueue"):
                written = await self._store.insert(records, links)
        except BaseException:
            for node in nodes:
                node._enqueued = False
            raise
        self._signals.require({n for r in records for n in r.signal_names})
        self._publish(written)
        self._scheduler.wake()
        return True

    # -- signals

    def register_signal(self, name: str, signal: Signal) -> None:
        """Register (or replace) the signal that constraints call ``name``.

        The built-in constraints use the names ``network``, ``charging``,
        ``battery_not_low``, ``storage_not_low`` and ``device_idle``; registering one of
        them replaces the built-in (for example with an app-specific network probe).

        :raises InvalidRequestError: for an invalid name or an object that is not a Signal
        """
        v.check_name("signal", name)
        if not isinstance(signal, Signal):
            raise InvalidRequestError(
                "signal", signal, "expected a Signal (a `value` property and `wait_changed()`)"
            )
        self._signals.register(name, signal)

    def _signal_changed(self, name: str, value: bool) -> None:
        if value:
            self._scheduler.wake()
        else:
            self._scheduler.stop_runs_needing(name, stop_reason_for(name))

    async def explain(self, work_id: uuid.UUID | str) -> WorkExplanation | None:
        """Why a work is not running (or what it is doing), or ``None`` for an unknown id.

        It names the delay it waits out, each needed signal that does not hold now and
        why, and whether the concurrency limit is reached.
        """
        self._require("explain")
        with self._serving("explain"):
            found = await self._store.get([_key(work_id)])
        if not found:
            return None
        record = found[0]
        now = self._clock.now()
        unmet: dict[str, str] = {}
        if record.id not in self._constraints_met:
            for name in sorted(record.signal_names):
                if name in self._signals.blocked or not self._signals.is_registered(name):
                    unmet[name] = self._signals.describe(name)
        due = record.next_run_at if record.state is WorkState.ENQUEUED else None
        stats = self._scheduler.statistics()
        capacity_full = stats["running"] == self.max_concurrency
        return WorkExplanation.build(
            record.to_info(),
            now=now,
            due=due,
            unmet_signals=unmet,
            capacity_full=capacity_full,
        )

    async def enqueue_unique_work(
        self, name: str, policy: ExistingWorkPolicy | str, *requests: OneTimeWorkRequest
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

        :return: whether the requests were enqueued (False: KEEP kept the existing work)
        :raises InvalidRequestError: for an invalid name, policy or request
        """
        self._require("enqueue_unique_work")
        chain = self.begin_unique_work(name, policy, *requests)
        return await self._enqueue_chain(chain)

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
        v.check_name("unique_name", name)
        chosen = v.to_enum("policy", ExistingPeriodicWorkPolicy, policy)
        if not isinstance(request, PeriodicWorkRequest):
            raise InvalidRequestError("request", request, "expected a PeriodicWorkRequest")
        if chosen is not ExistingPeriodicWorkPolicy.UPDATE:
            policy_value = "KEEP" if chosen is ExistingPeriodicWorkPolicy.KEEP else "REPLACE"
            return await self._enqueue_unique(name, policy_value, [self._periodic(name, request)])
        for _ in range(_CAS_ATTEMPTS):
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
            if await self._enqueue_unique(name, "KEEP", [self._periodic(name, request)]):
                return True
        raise InvalidRequestError("unique_name", name, "its works kept changing; try again")

    def _periodic(self, name: str, request: PeriodicWorkRequest) -> WorkRecord:
        checked = self._check_request(request)
        assert isinstance(checked, PeriodicWorkRequest)
        return WorkRecord.from_periodic_request(checked, now=self._clock.now(), unique_name=name)

    async def _enqueue_unique(
        self,
        name: str,
        policy: str,
        records: Sequence[WorkRecord],
        links: dict[str, tuple[str, ...]] | None = None,
        *,
        roots: Sequence[str] | None = None,
    ) -> bool:
        now = self._clock.now()

        def plan(existing: list[WorkRecord], leaves: list[WorkRecord]) -> lc.UniquePlan:
            return lc.plan_unique(
                policy, existing, leaves, records, prerequisites=links, roots=roots, now=now
            )

        with self._serving("enqueue"):
            decided, written = await self._store.enqueue_unique(name, plan)
        for record in written:
            if record.state is WorkState.CANCELLED:
                self._scheduler.interrupt(record.id, record.stop_reason)
        self._publish(written)
        if decided.inserts:
            self._signals.require({n for r in decided.inserts for n in r.signal_names})
            self._scheduler.wake()
        return bool(decided.inserts)

    async def cancel_unique_work(self, name: str) -> int:
        """Cancel every unfinished work under the unique name; returns how many."""
        self._require("cancel_unique_work")
        query = WorkQuery(
            unique_names={v.check_name("unique_name", name)}, states=UNFINISHED_STATES
        )
        with self._serving("cancel_unique_work"):
            return await self._cancel(await self._store.query(query))

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
        checked = self._check_request(request)
        key = str(checked.id)
        for _ in range(_CAS_ATTEMPTS):
            with self._serving("update_work"):
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
            result, change = lc.respec(record, new)
            if change is None:
                return result
            with self._serving("update_work"):
                written = await self._store.respec(change)
            if written is not None:
                self._signals.require(written.signal_names)
                self._publish([written])
                self._scheduler.wake()
                return result
        raise InvalidRequestError("id", checked.id, "the work kept changing; try again")

    # -- queries

    async def get_work_info(self, work_id: uuid.UUID | str) -> WorkInfo | None:
        """The work's current WorkInfo, or ``None`` for an unknown or pruned id."""
        self._require("get_work_info")
        with self._serving("get_work_info"):
            found = await self._store.get([_key(work_id)])
        return found[0].to_info() if found else None

    async def get_work_infos(self, query: WorkQuery) -> list[WorkInfo]:
        """WorkInfos of the works ``query`` selects, oldest first."""
        self._require("get_work_infos")
        if not isinstance(query, WorkQuery):
            raise InvalidRequestError("query", query, "expected a WorkQuery")
        with self._serving("get_work_infos"):
            return [r.to_info() for r in await self._store.query(query)]

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
        wid = _key(work_id)
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
                        raise self._not_running("wait")
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
        v.check_int("max_buffer", max_buffer, 1)

        async def load() -> Sequence[WorkRecord]:
            # Tracked, so a virtual clock's advance() waits for the snapshot (the first,
            # or one read again after an overflow) rather than running the works past it.
            with self._scheduler.tracked(), self._serving("watch"):
                return await self._store.query(query)

        return self._events.subscribe(query, load, max_buffer=max_buffer)

    # -- cancellation

    async def _cancel(self, records: Iterable[WorkRecord]) -> int:
        """Cancel the records (CAS, re-reading works that changed meanwhile)."""
        pending = list(records)
        cancelled = 0
        for _ in range(_CAS_ATTEMPTS):
            now = self._clock.now()
            changes = [c for r in pending if (c := lc.cancel(r, now=now)) is not None]
            if not changes:
                break
            written = await self._store.apply(changes)
            cancelled += len(written)
            for record in written:
                self._scheduler.interrupt(record.id, record.stop_reason)
            self._publish(written)
            done = {r.id for r in written}
            missed = [c.before.id for c in changes if c.before.id not in done]
            if not missed:
                break
            pending = await self._store.get(missed)
        if cancelled:
            self._scheduler.wake()
        return cancelled

    async def cancel_work_by_id(self, work_id: uuid.UUID | str) -> bool:
        """Cancel a work (stopping it if it runs). Returns False if it was unknown or
        already finished."""
        self._require("cancel_work_by_id")
        with self._serving("cancel_work_by_id"):
            return await self._cancel(await self._store.get([_key(work_id)])) > 0

    async def cancel_all_work_by_tag(self, tag: str) -> int:
        """Cancel every unfinished work with this tag; returns how many."""
        self._require("cancel_all_work_by_tag")
        query = WorkQuery(tags={v.check_name("tag", tag)}, states=UNFINISHED_STATES)
        with self._serving("cancel_all_work_by_tag"):
            return await self._cancel(await self._store.query(query))

    async def cancel_all_work(self) -> int:
        """Cancel every unfinished work; returns how many."""
        self._require("cancel_all_work")
        with self._serving("cancel_all_work"):
            return await self._cancel(await self._store.query(WorkQuery(states=UNFINISHED_STATES)))

    # -- retention

    async def prune_work(self) -> int:
        """Delete every finished work now; returns how many."""
        self._require("prune_work")
        with self._serving("prune_work"):
            return await self._store.prune(finished_before=math.inf)

    # -- test support (used by wm_async.testing.TestDriver)

    async def _apply_one(
        self, work_id: uuid.UUID | str, make: Callable[[WorkRecord, float], lc.Change | None]
    ) -> WorkInfo:
        wid = _key(work_id)
        for _ in range(_CAS_ATTEMPTS):
            with self._serving("drive the work"):
                found = await self._store.get([wid])
            if not found:
                raise InvalidRequestError("id", wid, "no such work")
            change = make(found[0], self._clock.now())
            if change is None:
                return found[0].to_info()
            with self._serving("drive the work"):
                written = await self._store.apply([change])
            if written:
                self._publish(written)
                self._scheduler.wake()
                return written[0].to_info()
        raise InvalidRequestError("id", wid, "the work kept changing; try again")


class _Started(TaskStatus[None]):
    """Passes a service's readiness on, remembering that it was given."""

    def __init__(self, inner: TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._inner.started(value)


async def _combine(ctx: WorkContext) -> Result:
    """The pass-through step of WorkContinuation.combine: its input (the array-merged
    outputs of the combined chains) becomes its output."""
    return Result.success(ctx.input)
