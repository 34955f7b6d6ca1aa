"""The services of a running manager, for one ``async with manager:`` each: the store,
the scheduler, the signal board, the store listener and the pruner. Starting them
(recovery included), failing loudly when one of them breaks, and stopping them."""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from .._clock import (
    Clock,
    SystemClock,
)
from .._core.errors import (
    NotRunningError,
    SchedulerError,
    StoreError,
)
from .._core.limits import WorkerLimits
from .._core.model import (
    StopReason,
    WorkState,
)
from .._core.redact import mask_text
from ..signals import default_signals
from ..stores import (
    Store,
    StoreListener,
)
from .constraints import (
    SignalBoard,
    stop_reason_for,
)
from .events import EventHub
from .executor import (
    task_cancelled,
)
from .holds import Holds
from .hooks import TestHooks
from .observers import Observers
from .scheduler import Scheduler
from .transitions import Publisher
from .watchdog import LoopWatchdog
from .workers import WorkerTable

logger = logging.getLogger("wm_async")


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


class Settings(Protocol):
    """The manager's configuration, read when a service needs it (an app may change
    these attributes of a stopped manager before starting it again)."""

    max_concurrency: int
    shutdown_grace: float
    keep_results_for: float
    max_data_bytes: int
    default_timeout: float | None
    prune_interval: float
    blocked_loop_warning: float | None
    owner: str
    run_work: bool
    known_workers: frozenset[str] | None


#: How often a standby tries the scheduler lock (seconds): a scheduling process that
#: stops or dies is replaced within about this long.
STANDBY_INTERVAL = 0.2


class Services:
    """Starts, watches and stops the services of a manager.

    :param settings: the manager's configuration
    :param store: the store (opened at each start, closed at each stop)
    :param clock: the manager's clock
    :param workers: the worker registry (shared with the manager, which fills it)
    :param hooks: what a TestDriver changes in the running manager
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        clock: Clock,
        workers: WorkerTable,
        hooks: TestHooks,
        limits: Mapping[str, WorkerLimits] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._workers = workers
        self._hooks = hooks
        self._limits: Mapping[str, WorkerLimits] = {} if limits is None else limits
        #: What holds back due works here (paused workers, full limits: semantics 50).
        self.holds = holds = Holds(clock)
        self.events = EventHub(holds)
        #: The app's middleware, listeners and propagators (kept across starts).
        self.observers = Observers()
        self.publish = Publisher(self.events, self.observers).publish
        self.signals = SignalBoard(clock, self._signal_changed)
        for name, signal in default_signals(store.data_path).items():
            self.signals.register(name, signal)
        #: The current start's scheduler (a new one per start).
        self.scheduler = self._new_scheduler()
        self.state = RunState.STOPPED
        #: The unexpected error that stopped a service of the running manager
        #: (RunState.FAILED).
        self.fatal: BaseException | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._stop_pruner = anyio.Event()
        self._follow_scope: anyio.CancelScope | None = None
        # Set as shutdown closes the store: a call that then meets a closed store was
        # racing the shutdown, and gets NotRunningError rather than the store's error.
        self._store_closed = False
        #: This start schedules and runs works (holds the store's scheduler lock).
        self.scheduling = False
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def paused(self) -> frozenset[str]:
        """The paused worker names, as this process last read them (at start, on its own
        pause and resume, and when another process's write may have changed them)."""
        return self.holds.paused

    @paused.setter
    def paused(self, names: frozenset[str]) -> None:
        self.holds.paused = names

    def __repr__(self) -> str:
        return f"Services(state={self.state.value!r})"

    def _new_scheduler(self) -> Scheduler:
        settings = self._settings
        return Scheduler(
            store=self._store,
            clock=self._clock,
            workers=self._workers,
            max_concurrency=settings.max_concurrency,
            default_timeout=settings.default_timeout,
            owner=settings.owner,
            max_data_bytes=settings.max_data_bytes,
            publish=self.publish,
            blocked_signals=lambda: self.signals.blocked,
            paused_workers=lambda: self.holds.paused,
            limits=self._limits,
            report_held=self.holds.claimed,
            require_signals=self.signals.require,
            hooks=self._hooks,
            observers=self.observers,
        )

    # -- what a call may do now

    def require(self, operation: str) -> None:
        """Raise unless the manager serves calls (started, or stopping).

        :raises NotRunningError: if it does not (SchedulerError if it failed)
        """
        if self.state is not RunState.STARTED and self.state is not RunState.STOPPING:
            raise self.not_running(operation)
        if self.fatal is not None:
            raise SchedulerError(operation, self.fatal) from self.fatal

    def not_running(self, operation: str) -> NotRunningError:
        """The error for a call the manager cannot serve now."""
        if self.fatal is not None:
            error: NotRunningError = SchedulerError(operation, self.fatal)
            error.__cause__ = self.fatal
            return error
        state = self.state
        if state is RunState.STARTED or state is RunState.STOPPING:
            state = RunState.STOPPING if self._store_closed else state
        return NotRunningError(operation, state.value)

    @contextmanager
    def serving(self, operation: str) -> Iterator[None]:
        """Around a call's store operations: a store closed by a shutdown the call was
        racing means the manager stopped under it (NotRunningError), not a store
        failure."""
        try:
            yield
        except StoreError as exc:
            if self._store_closed:
                raise self.not_running(operation) from exc
            raise

    def _store_closing(self) -> None:
        self._store_closed = True

    # -- failing loudly

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
        if self.fatal is not None:
            return
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a task group's wrapping of the one error
        self.fatal = exc
        self.state = RunState.FAILED
        logger.error(
            "the WorkManager's %s stopped on an unexpected error; no work runs until the "
            "manager is started again, and every call raises SchedulerError",
            service,
            exc_info=exc,
        )
        self.events.close()  # waiters and watchers end (with SchedulerError)
        self.scheduler.request_stop(self._settings.shutdown_grace)

    # -- starting and stopping

    async def start(self) -> None:
        """Open the store, recover, and start the services (``__aenter__``).

        :raises NotRunningError: if the manager is not stopped
        """
        if self.state is not RunState.STOPPED:
            raise NotRunningError("start", self.state.value)
        self.state = RunState.STARTING
        self.fatal = None
        self._store_closed = False
        self.signals.prepare()
        store, settings = self._store, self._settings
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(store)
                stack.callback(self._store_closing)  # unwound just before the store closes
                self.events.closed = False
                stack.callback(self.events.close)
                self.scheduling = False
                leader = settings.run_work and await store.try_lock_for_scheduler(settings.owner)
                self.scheduler = scheduler = self._new_scheduler()
                self.holds.forget_limits()
                # Until it schedules, its scheduler is settled for a virtual clock (the
                # calls it serves wake a dispatcher that does not run).
                scheduler.settle.stopped = True
                # Attached for the whole life of the task group (detached after it
                # exits), so a virtual clock also waits for the shutdown.
                self._clock.attach(scheduler.settle)
                stack.callback(self._clock.detach, scheduler.settle)
                if settings.blocked_loop_warning is not None:
                    # Stopped after the task group exits, so it watches the shutdown too.
                    watchdog = LoopWatchdog(
                        settings.blocked_loop_warning,
                        scheduler.is_busy,
                        scheduler.describe_task,
                    )
                    watchdog.start()
                    stack.callback(watchdog.stop)
                    scheduler.on_busy = watchdog.wake
                self._task_group = tg = await stack.enter_async_context(anyio.create_task_group())
                stack.push_async_callback(self._shutdown)
                # Before recovery: a shared store learns which clock to compare leases
                # with, and misses no change made meanwhile.
                await tg.start(
                    self._guarded,
                    "store listener",
                    self._follow_store,
                    name="wm_async store listener",
                )
                # Once listening: a pause written meanwhile is heard of.
                self.paused = await store.paused_workers()
                self._stop_pruner = anyio.Event()
                if leader:
                    await self._start_scheduling()
                elif settings.run_work:
                    await tg.start(
                        self._guarded, "standby", self._stand_by, name="wm_async standby"
                    )
                self._exit_stack = stack.pop_all()
        except BaseException as exc:  # noqa: BLE001  # re-raised below, unwrapped
            self.state = RunState.STOPPED
            # A start-up step that fails inside the task group (recovery on a read-only
            # file, say) comes out wrapped in an ExceptionGroup: raise the error itself,
            # so `except StoreError` around `async with manager:` sees it.
            inner = exc
            while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
                inner = inner.exceptions[0]
            raise inner  # noqa: B904  # its own __cause__ (the driver error) is kept
        self.state = RunState.STARTED
        logger.info(
            "WorkManager started (store=%s, owner=%s, %s)",
            mask_text(repr(store)),
            settings.owner,
            self.role,
        )

    @property
    def role(self) -> str:
        """What this start does: ``"scheduler"`` (schedules and runs works),
        ``"standby"`` (serves calls; takes over when the scheduling process stops) or
        ``"producer"`` (serves calls, never runs works)."""
        if self.scheduling:
            return "scheduler"
        return "standby" if self._settings.run_work else "producer"

    async def _start_scheduling(self) -> None:
        """With the scheduler lock held: recover, prune, and start the signal board, the
        scheduler and the pruner."""
        tg, store, scheduler = self._task_group, self._store, self.scheduler
        assert tg is not None
        self.scheduling = True
        scheduler.settle.stopped = False
        scheduler.settle.touch()
        await self._recover()
        await self._prune_once()
        self.signals.require(await store.signals_in_use())
        await tg.start(self._guarded, "signal board", self.signals.run, name="wm_async signals")
        await tg.start(self._guarded, "scheduler", scheduler.run, name="wm_async scheduler")
        await tg.start(self._prune_loop, name="wm_async pruner")

    async def _stand_by(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve calls while another process schedules; try the scheduler lock every
        :data:`STANDBY_INTERVAL` (real time: the lock is held by a real process) and take
        over once it is free: the process holding it stopped or died."""
        task_status.started()
        stop = self._stop_pruner
        while not stop.is_set():
            with anyio.move_on_after(STANDBY_INTERVAL):
                await stop.wait()
            if stop.is_set():
                return
            if await self._store.try_lock_for_scheduler(self._settings.owner):
                logger.info(
                    "WorkManager %s takes over scheduling (the previous scheduler stopped)",
                    self._settings.owner,
                )
                with anyio.CancelScope(shield=True):
                    # Not cancelled halfway by a shutdown: the services it starts are
                    # then stopped with the others.
                    await self._start_scheduling()
                return

    async def stop(self) -> None:
        """Stop the services and close the store (``__aexit__``; idempotent).

        :raises SchedulerError: if a service failed while the manager ran
        """
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            return  # never started, or already stopped: stopping is idempotent
        self.state = RunState.STOPPING
        try:
            # The body's own exception is not passed into the task group: that would
            # cancel the running work instead of stopping gracefully, and anyio would
            # re-raise it wrapped in an ExceptionGroup, so `except WorkManagerError`
            # around `async with manager:` would miss it. It propagates unchanged.
            await stack.__aexit__(None, None, None)
        finally:
            self.state = RunState.STOPPED
            logger.info("WorkManager stopped")
        fatal = self.fatal
        if fatal is not None:
            raise SchedulerError("run work", fatal) from fatal

    async def _shutdown(self) -> None:
        # Runs first as the exit stack unwinds; the task group's exit then waits for the
        # scheduler's two-phase stop (bounded by shutdown_grace plus the stuck bound).
        self._stop_pruner.set()
        if self._follow_scope is not None:
            self._follow_scope.cancel()
        self.signals.stop()
        self.scheduler.request_stop(self._settings.shutdown_grace)

    async def _recover(self) -> None:
        """semantics 15: RUNNING works of a dead process run again (with leases: only
        works whose lease expired, never those of live processes)."""
        written = await self._store.requeue_orphans(now=self._clock.now())
        if written:
            logger.warning("recovered %d work(s) interrupted by a crash", len(written))
            self.publish(written)

    # -- other processes' changes, signals

    async def _follow_store(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Let the store report other processes' changes (a no-op for stores only this
        process uses), until shutdown begins."""
        listener = StoreListener(
            now=self._clock.now,
            real_time=isinstance(self._clock, SystemClock),
            wake=self.scheduler.wake,
            changed=self.external_change,
        )
        with anyio.CancelScope() as scope:
            self._follow_scope = scope
            await self._store.follow(listener, task_status=task_status)

    async def external_change(self, ids: Sequence[str] | None) -> None:
        """Other processes wrote the works ``ids`` (``None``: possibly any). Re-read the
        ones someone here waits on or watches, and those running here: a run whose work
        was cancelled or taken over elsewhere stops (semantics 29, 30)."""
        scheduler, events = self.scheduler, self.events
        if self.holds.limited:
            # Works due here wait for a slot of a capped worker (or a token): a run that
            # ended in another process may have freed one (semantics 50).
            scheduler.wake()
        if ids is None:  # a worker may have been paused or resumed elsewhere
            await self.reload_paused()
            wanted = {*events.waited_ids(), *scheduler.running_ids()}
            for query in events.watched_queries():
                wanted.update(r.id for r in await self._store.query(query))
        else:
            watching = events.has_watchers()
            wanted = {i for i in ids if watching or events.is_waited(i) or scheduler.runs(i)}
        if not wanted:
            return
        records = await self._store.get(wanted)
        self.publish(records, external=True)
        owner = self._settings.owner
        for record in records:
            if scheduler.runs(record.id) and (
                record.state is not WorkState.RUNNING or record.owner != owner
            ):
                reason = (
                    StopReason.CANCELLED_BY_APP
                    if record.state is WorkState.CANCELLED
                    else StopReason.LEASE_LOST
                )
                scheduler.interrupt(record.id, reason)
        # A work running here that is gone was deleted by a REPLACE (which cancels the
        # unfinished works under the name, then deletes them): stop its run now, not at
        # the next lease renewal.
        found = {r.id for r in records}
        for work_id in wanted - found:
            if scheduler.runs(work_id):
                scheduler.interrupt(work_id, StopReason.CANCELLED_BY_APP)

    async def reload_paused(self) -> None:
        """Re-read the paused worker names; wake the dispatcher if a worker was resumed
        (its due works are claimed at once)."""
        before, self.paused = self.paused, await self._store.paused_workers()
        if before - self.paused:
            self.scheduler.wake()

    def _signal_changed(self, name: str, value: bool) -> None:
        if value:
            self.scheduler.wake()
        else:
            self.scheduler.stop_runs_needing(name, stop_reason_for(name))

    # -- pruning

    async def _prune_once(self) -> int:
        before = self._clock.now() - self._settings.keep_results_for
        return await self._store.prune(finished_before=before)

    async def _prune_loop(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        stop = self._stop_pruner
        while True:
            interval = self._settings.prune_interval
            await self._clock.sleep_until(self._clock.now() + interval, stop)
            if stop.is_set():
                return
            try:
                with self.scheduler.tracked():
                    pruned = await self._prune_once()
            except Exception:
                logger.exception("automatic pruning failed; will retry")
            else:
                if pruned:
                    logger.info("pruned %d finished work(s)", pruned)


class _Started(TaskStatus[None]):
    """Passes a service's readiness on, remembering that it was given."""

    def __init__(self, inner: TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._inner.started(value)
