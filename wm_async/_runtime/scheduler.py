"""The scheduler: the services that run works, composed, and their two-phase shutdown.

:class:`Scheduler` puts together, for one start of a manager, the dispatcher (claims due
work, :mod:`.dispatcher`), the runner pool (runs it, :mod:`.runners`), the run table (the
runs in progress and the capacity they hold, :mod:`.runs`), run deadlines
(:mod:`.deadlines`), the recorder (writes outcomes, :mod:`.recorder`), lease renewal
(:mod:`.leases`) and the settle state a virtual clock waits on (:mod:`.settle`). It hosts
them in a task group of their own and stops them in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from .._core.model import StopReason
from .deadlines import Deadlines
from .dispatcher import Dispatcher
from .health import StoreHealth
from .hooks import TestHooks
from .leases import LeaseKeeper
from .observers import Observers
from .recorder import Recorder
from .runners import RunnerPool
from .runs import RunTable
from .settle import Settle

if TYPE_CHECKING:
    from .._clock import Clock
    from .._core.limits import HeldBy, WorkerLimits
    from .._core.record import WorkRecord
    from ..stores._base import Store
    from .workers import WorkerTable

logger = logging.getLogger("wm_async.scheduler")

#: After shutdown cancels the workers, how long (real seconds) to wait for workers that
#: ignore cancellation before leaving them behind.
STUCK_WORKER_TIMEOUT = 5.0
#: Work hosts (see :meth:`Scheduler.run`) still running: the event loop keeps only weak
#: references to tasks, and an abandoned host must live until its stuck workers end.
_HOSTS: set[asyncio.Task[None]] = set()


@attrs.define(eq=False, repr=False)
class Scheduler:
    """Dispatches due work from a store to registered workers."""

    store: Store
    clock: Clock
    workers: WorkerTable
    max_concurrency: int
    default_timeout: float | None
    owner: str
    max_data_bytes: int
    publish: Callable[[Sequence[WorkRecord]], None]
    blocked_signals: Callable[[], frozenset[str]] = frozenset
    #: The paused worker names (their works stay ENQUEUED).
    paused_workers: Callable[[], frozenset[str]] = frozenset
    #: The flow limits of the workers that have some (semantics 50).
    limits: Mapping[str, WorkerLimits] = attrs.field(factory=dict)
    #: Called after each claim with the limited workers whose due works it held back,
    #: and by what (semantics 50).
    report_held: Callable[[Mapping[str, HeldBy]], None] = lambda held: None
    #: Called with the signal names claimed works need (the board watches new ones).
    require_signals: Callable[[frozenset[str]], None] = lambda names: None
    hooks: TestHooks = attrs.field(factory=TestHooks)
    #: The app's middleware (and listeners), read by every run.
    observers: Observers = attrs.field(factory=Observers)

    #: What a virtual clock attaches to (see :mod:`.settle`).
    settle: Settle = attrs.field(init=False, factory=Settle)
    _runs: RunTable = attrs.field(init=False)
    _deadlines: Deadlines = attrs.field(init=False)
    _recorder: Recorder = attrs.field(init=False)
    _pool: RunnerPool = attrs.field(init=False)
    _leases: LeaseKeeper = attrs.field(init=False)
    _dispatcher: Dispatcher = attrs.field(init=False)
    _stop_requested: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _grace_until: float = attrs.field(init=False, default=0.0)
    _work_tg: TaskGroup | None = attrs.field(init=False, default=None)
    # The work host (see run): started, then finished or abandoned; what it raised.
    _host_ready: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _released: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _host_error: BaseException | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        settle, health = self.settle, StoreHealth()
        self._runs = runs = RunTable(self.max_concurrency, self.hooks)
        runs.limited = frozenset(w for w, lim in self.limits.items() if lim.max_running)
        self._deadlines = Deadlines(self.clock, self.workers)
        self._recorder = Recorder(
            store=self.store,
            clock=self.clock,
            publish=self.publish,
            runs=runs,
            settle=settle,
            health=health,
        )
        self._pool = RunnerPool(
            store=self.store,
            clock=self.clock,
            workers=self.workers,
            default_timeout=self.default_timeout,
            max_data_bytes=self.max_data_bytes,
            publish=self.publish,
            runs=runs,
            deadlines=self._deadlines,
            recorder=self._recorder,
            settle=settle,
            observers=self.observers,
        )
        self._leases = LeaseKeeper(
            store=self.store, clock=self.clock, owner=self.owner, runs=runs, settle=settle
        )
        self._dispatcher = Dispatcher(
            store=self.store,
            clock=self.clock,
            owner=self.owner,
            runs=runs,
            pool=self._pool,
            blocked_signals=self.blocked_signals,
            paused_workers=self.paused_workers,
            limits=self.limits,
            report_held=self.report_held,
            require_signals=self.require_signals,
            hooks=self.hooks,
            settle=settle,
            health=health,
        )
        runs.on_released = self._dispatcher.wake  # a freed place may take a due work

    def __repr__(self) -> str:
        return f"Scheduler(owner={self.owner!r}, running={len(self._runs.running)})"

    # -- what the manager (and wm_async.testing) asks of it

    @property
    def on_busy(self) -> Callable[[], None]:
        """Called when runs start while none ran (the loop watchdog wakes up)."""
        return self._runs.on_busy

    @on_busy.setter
    def on_busy(self, callback: Callable[[], None]) -> None:
        self._runs.on_busy = callback

    def statistics(self) -> dict[str, object]:
        """Capacity figures for the manager's stats."""
        return self._runs.statistics()

    def is_busy(self) -> bool:
        """True while runs are in progress (safe to call from another thread)."""
        return self._runs.is_busy()

    def wake(self) -> None:
        """Make the dispatcher look at the store again (coalesced until it does)."""
        self._dispatcher.wake()

    def wake_for(self, due: float | None) -> None:
        """Make the dispatcher look at the store again for new works due at ``due`` at
        the earliest (``None``: unknown), unless it will by then anyway."""
        self._dispatcher.wake_for(due)

    def tracked(self) -> AbstractContextManager[None]:
        """Mark a store call in flight, so virtual clocks wait for it."""
        return self.settle.tracked()

    async def wait_settled(self) -> None:
        """Return once the dispatcher sleeps, no store call is in flight, and that held
        for a few loop iterations (see :class:`wm_async.testing.VirtualClock`)."""
        await self.settle.wait_settled()

    def describe_task(self, task: asyncio.Task[object]) -> str | None:
        """The work a runner task is running, in words (safe to call from another
        thread: a dict lookup)."""
        return self._pool.describe_task(task)

    def runs(self, work_id: str) -> bool:
        """Whether a run of this work is in progress in this process."""
        return self._runs.runs(work_id)

    def running_ids(self) -> list[str]:
        """The works running in this process."""
        return self._runs.running_ids()

    def interrupt(self, work_id: str, reason: StopReason) -> bool:
        """Stop a run of this process; returns False if it does not run here."""
        return self._runs.interrupt(work_id, reason)

    def stop_runs_needing(self, signal: str, reason: StopReason) -> None:
        """Stop the runs whose constraints need ``signal`` (it just turned false)."""
        self._runs.stop_runs_needing(signal, reason)

    # -- running and stopping

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Dispatch until :meth:`request_stop`, then shut down in two phases:
        stop claiming; let running work finish for the grace period; then stop it and
        re-enqueue it with stop reason SHUTDOWN.

        The dispatcher and the runners live in a task group hosted by a task of their own,
        the one task wm_async starts outside a task group: an anyio task group cannot exit
        before all of its children, so a worker that ignores cancellation would hold the
        shutdown hostage. Once shutdown has waited :data:`STUCK_WORKER_TIMEOUT` for such
        workers and recorded them as interrupted (they run again on the next start), this
        returns and leaves the host behind until they end. Cancelling this task stops the
        host the same way.
        """
        # anyio.CancelScope() looks the async backend up on every call; the class it
        # returns is the running backend's, and instantiating that directly skips the
        # lookup (a measurable share of a trivial run).
        self._pool.scope_type = type(anyio.CancelScope())
        host = asyncio.get_running_loop().create_task(self._host(), name="wm_async work host")
        _HOSTS.add(host)
        host.add_done_callback(_HOSTS.discard)
        try:
            await self._host_ready.wait()
            if self._host_error is None:
                task_status.started()
                await self._released.wait()
        except BaseException:
            # Cancelled from outside: stop the runs the hard way, as far as they let us.
            if self._work_tg is not None:
                self._work_tg.cancel_scope.cancel()
            with anyio.move_on_after(STUCK_WORKER_TIMEOUT, shield=True):
                await self._released.wait()
            raise
        finally:
            self._work_tg = self._pool.task_group = None
            self.settle.stopped = True
            self.settle.touch()
            self._deadlines.close()
        if self._host_error is not None:
            raise self._host_error

    async def _host(self) -> None:
        try:
            async with anyio.create_task_group() as work_tg:
                self._work_tg = self._pool.task_group = work_tg
                await work_tg.start(self._dispatcher.run, name="wm_async dispatcher")
                work_tg.start_soon(self._recorder.run, work_tg, name="wm_async result recorder")
                lease = self.store.lease_duration
                if lease is not None:
                    work_tg.start_soon(self._leases.run, lease, name="wm_async lease renewal")
                self._host_ready.set()
                await self._stop_requested.wait()
                self._dispatcher.stop()
                # A claim in flight is shielded: wait for it, so the works it claims are
                # running (and get the grace period) before the drain looks, rather than
                # stopped before they start.
                await self._dispatcher.done.wait()
                try:
                    await self._drain()
                finally:
                    self.settle.shutdown_busy = False
                    self.settle.touch()
                work_tg.cancel_scope.cancel()
        except BaseException as exc:
            if self._released.is_set():  # abandoned: nobody waits for this any more
                if not isinstance(exc, anyio.get_cancelled_exc_class()):
                    logger.error("an abandoned work host failed", exc_info=exc)
                return
            self._host_error = exc
        finally:
            self._host_ready.set()
            self._released.set()

    def request_stop(self, grace: float) -> None:
        """Begin the shutdown :meth:`run` performs."""
        self._grace_until = self.clock.now() + grace
        self.settle.shutdown_busy = True
        self.settle.touch()
        self._stop_requested.set()

    async def _drain(self) -> None:
        runs, settle = self._runs, self.settle
        if runs.running:
            logger.info(
                "shutting down: %d running, grace %.1fs",
                len(runs.running),
                max(0.0, self._grace_until - self.clock.now()),
            )
            settle.shutdown_busy = False  # a virtual clock may move through the grace
            settle.touch()
            await self.clock.sleep_until(self._grace_until, runs.all_idle)
            settle.shutdown_busy = True
        if not runs.running:
            return
        for handle in list(runs.running.values()):
            handle.stop(StopReason.SHUTDOWN)
        with anyio.move_on_after(STUCK_WORKER_TIMEOUT):
            await runs.all_idle.wait()
        stuck = list(runs.running.values())
        if stuck:
            # Workers that swallow cancellation (or results a failing store would not
            # take): record them as interrupted ourselves so they run again on the next
            # start; their late results fail the CAS guard.
            logger.error(
                "%d run(s) ignored cancellation at shutdown (or their results could not be "
                "recorded) and were abandoned: %s",
                len(stuck),
                ", ".join(repr(h) for h in stuck),
            )
            await self._recorder.record_abandoned(stuck)
            self._released.set()  # run() returns; the host waits for them alone
