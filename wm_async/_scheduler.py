"""The scheduler: one dispatcher task that claims due work and runs it under a capacity
limit, and the two-phase shutdown.

The store is the due-heap: ``claim_due`` returns the works due now and the next due time,
so the dispatcher sleeps exactly until then or until woken (new work, a finished run, a
signal change, shutdown). It never polls.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from . import _lifecycle as lc
from ._constraints import stop_reason_for
from ._errors import StoreError
from ._executor import RunHandle, Worker, execute
from ._model import NO_CONSTRAINTS, Data, StopReason, WorkState
from .stores._base import Claimed, ClaimParams

if TYPE_CHECKING:
    from ._clock import Clock, Timer
    from ._record import WorkRecord
    from .stores._base import Store

logger = logging.getLogger("wm_async.scheduler")

#: Bound on every shielded bookkeeping write (recording an interrupted run).
BOOKKEEPING_TIMEOUT = 5.0
#: While lease renewals fail, a run is stopped this long (at most a tenth of the lease)
#: before its lease may end, so that it never overlaps another process's run.
LEASE_MARGIN = 1.0
#: After shutdown cancels the workers, how long (real seconds) to wait for workers that
#: ignore cancellation before leaving them behind.
STUCK_WORKER_TIMEOUT = 5.0
#: A failing store call (disk full, database restarting) is retried after this many
#: seconds, doubling up to STORE_RETRY_MAX, for as long as the manager runs.
STORE_RETRY_FIRST = 0.05
STORE_RETRY_MAX = 2.0
#: Work hosts (see :meth:`Scheduler.run`) still running: the event loop keeps only weak
#: references to tasks, and an abandoned host must live until its stuck workers end.
_HOSTS: set[asyncio.Task[None]] = set()
#: Most works claimed per dispatcher turn. Between turns the loop runs the works just
#: claimed, so the first of a large backlog starts after one batch, not after all of it.
#: (256 rather than 128: the memory store runs a backlog about 5% faster, and a turn
#: still holds the loop for well under a millisecond.)
CLAIM_BATCH = 256
#: Loop iterations a virtual clock lets pass with no scheduler activity before it
#: considers the scheduler settled (workers awaiting nothing wm_async knows about).
_SETTLE_CHECKPOINTS = 10


def _backoff(failures: int) -> float:
    return min(STORE_RETRY_FIRST * (1 << min(failures - 1, 16)), STORE_RETRY_MAX)


class _Deadlines:
    """Run deadlines, one FIFO queue per timeout length, behind a single clock timer.

    Deadlines are on the clock's monotonic time: a timeout measures a duration, and a
    step of the wall clock must neither cut a run short nor stretch it.

    Runs with the same timeout start in order, so their deadlines are already sorted:
    adding is an append, a finished run is dropped lazily when it reaches the head of its
    queue, and only the earliest head has a timer. (A heap or a timer per run costs more
    on the hot path, and almost every run shares the manager's default timeout.)
    """

    def __init__(self, clock: Clock, on_expired: Callable[[], None]) -> None:
        self._clock = clock
        self._on_expired = on_expired
        # Handles, each with its deadline set (no tuple per run to allocate).
        self._queues: dict[float, deque[RunHandle]] = {}
        self._timer: Timer | None = None
        self._timer_at = math.inf

    def add(self, handle: RunHandle, timeout: float, now: float) -> None:
        """Watch ``handle`` until ``now + timeout``."""
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        while queue and queue[0].finished:
            queue.popleft()
        deadline = handle.deadline = now + timeout
        queue.append(handle)
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_later(when - self._clock.monotonic(), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self._on_expired()

    def expired(self, now: float) -> list[RunHandle]:
        """Remove and return the unfinished runs whose deadline has passed; re-arm."""
        out: list[RunHandle] = []
        earliest = math.inf
        for timeout, queue in list(self._queues.items()):
            while queue and (queue[0].finished or queue[0].deadline <= now):
                handle = queue.popleft()
                if not handle.finished:
                    out.append(handle)
            if queue:
                earliest = min(earliest, queue[0].deadline)
            else:
                del self._queues[timeout]
        if earliest < math.inf:
            self._arm(earliest)
        return out

    def close(self) -> None:
        """Cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._queues.clear()


@attrs.define(eq=False, repr=False)
class Scheduler:
    """Dispatches due work from a store to registered workers."""

    store: Store
    clock: Clock
    workers: Mapping[str, Worker]
    max_concurrency: int
    default_timeout: float | None
    owner: str
    max_data_bytes: int
    publish: Callable[[Sequence[WorkRecord]], None]
    blocked_signals: Callable[[], frozenset[str]] = frozenset
    #: Called with the signal names claimed works need (the board watches new ones).
    require_signals: Callable[[frozenset[str]], None] = lambda names: None
    constraints_met: set[str] = attrs.field(factory=set)
    #: Called when runs start while none ran (the loop watchdog wakes up).
    on_busy: Callable[[], None] = attrs.field(default=lambda: None)

    _scope_type: type[anyio.CancelScope] = attrs.field(init=False, default=anyio.CancelScope)
    # Capacity: runs claimed and not yet recorded. A count, not an anyio CapacityLimiter:
    # nothing ever waits for a slot (the dispatcher claims only what is free), and the
    # limiter's bookkeeping cost a measurable share of a quick run.
    _slots_used: int = attrs.field(init=False, default=0)
    _sync_limiter: anyio.CapacityLimiter = attrs.field(init=False)
    # An asyncio.Event: one is made per dispatcher turn, and anyio.Event() looks up the
    # async backend each time.
    _wakeup: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)
    _running: dict[str, RunHandle] = attrs.field(init=False, factory=dict)
    _all_idle: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _stop_requested: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _grace_until: float = attrs.field(init=False, default=0.0)
    _dispatch_scope: anyio.CancelScope | None = attrs.field(init=False, default=None)
    _dispatch_done: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _work_tg: TaskGroup | None = attrs.field(init=False, default=None)
    _ready: deque[RunHandle] = attrs.field(init=False, factory=deque)
    _runners: int = attrs.field(init=False, default=0)
    _runner_starting: bool = attrs.field(init=False, default=False)
    # Each runner task's current (or last) run: see describe_task.
    _runs_in: dict[asyncio.Task[object] | None, RunHandle] = attrs.field(init=False, factory=dict)
    _idle_runners: deque[asyncio.Future[None]] = attrs.field(init=False, factory=deque)
    _deadlines: _Deadlines = attrs.field(init=False)
    # Settling (virtual clocks): the dispatcher is asleep and no store call is in flight.
    _asleep: bool = attrs.field(init=False, default=True)
    # True while shutdown works (not while it waits out the grace period).
    _shutdown_busy: bool = attrs.field(init=False, default=False)
    _stopped: bool = attrs.field(init=False, default=False)
    # The work host (see run): started, then finished or abandoned; what it raised.
    _host_ready: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _released: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _host_error: BaseException | None = attrs.field(init=False, default=None)
    _in_flight: int = attrs.field(init=False, default=0)
    _activity: int = attrs.field(init=False, default=0)
    _settle_waiter: anyio.Event | None = attrs.field(init=False, default=None)
    _store_failing: bool = attrs.field(init=False, default=False)
    # Set when a run starts while none ran (the lease renewal loop waits for it).
    _has_runs: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    # Outcomes of runs that ended normally, waiting for the recorder (see _record_soon).
    _results: list[RunHandle] = attrs.field(init=False, factory=list)
    _results_waiter: asyncio.Future[None] | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._deadlines = _Deadlines(self.clock, self._deadlines_due)
        self._sync_limiter = anyio.CapacityLimiter(self.max_concurrency)
        self._all_idle.set()

    def __repr__(self) -> str:
        return f"Scheduler(owner={self.owner!r}, running={len(self._running)})"

    # -- statistics and wake-ups

    def statistics(self) -> dict[str, object]:
        """Capacity figures for the manager's stats."""
        return {
            "running": len(self._running),
            "max_concurrency": self.max_concurrency,
            "borrowed_tokens": self._slots_used,
            "tasks_waiting": 0,
        }

    def is_busy(self) -> bool:
        """True while runs are in progress (safe to call from another thread)."""
        return bool(self._running)

    def wake(self) -> None:
        """Make the dispatcher look at the store again (coalesced until it does)."""
        if not self._wakeup.is_set():
            self._wakeup.set()
            self._touch()

    def _touch(self) -> None:
        self._activity += 1
        if self._settle_waiter is not None:
            self._settle_waiter.set()

    @contextmanager
    def tracked(self) -> Iterator[None]:
        """Mark a store call in flight, so virtual clocks wait for it."""
        self._in_flight += 1
        self._touch()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._touch()

    def _is_quiet(self) -> bool:
        return self._stopped or (
            self._asleep
            and self._in_flight == 0
            and not self._wakeup.is_set()
            and not self._shutdown_busy
        )

    async def wait_settled(self) -> None:
        """Return once the dispatcher sleeps, no store call is in flight, and that held
        for a few loop iterations (see :class:`wm_async.testing.VirtualClock`)."""
        while True:
            while not self._is_quiet():
                waiter = self._settle_waiter = anyio.Event()
                if self._is_quiet():
                    break
                await waiter.wait()
            self._settle_waiter = None
            marker = self._activity
            for _ in range(_SETTLE_CHECKPOINTS):
                await anyio.lowlevel.checkpoint()
            if self._is_quiet() and self._activity == marker:
                return

    def describe_task(self, task: asyncio.Task[object]) -> str | None:
        """The work a runner task is running, in words (safe to call from another
        thread: a dict lookup)."""
        handle = self._runs_in.get(task)
        if handle is None or not handle.in_worker:
            return None
        return f"work {handle.record.id} ({handle.record.worker!r})"

    def runs(self, work_id: str) -> bool:
        """Whether a run of this work is in progress in this process."""
        return work_id in self._running

    def running_ids(self) -> list[str]:
        """The works running in this process."""
        return list(self._running)

    def interrupt(self, work_id: str, reason: StopReason) -> bool:
        """Stop a run of this process; returns False if it does not run here."""
        handle = self._running.get(work_id)
        if handle is None:
            return False
        handle.stop(reason)
        return True

    def stop_runs_needing(self, signal: str, reason: StopReason) -> None:
        """Stop the runs whose constraints need ``signal`` (it just turned false)."""
        for handle in list(self._running.values()):
            record = handle.record
            if record.id not in self.constraints_met and signal in record.signal_names:
                logger.info("stopping %r: signal %s turned false", handle, signal)
                handle.stop(reason)

    # -- the dispatcher

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
        self._scope_type = type(anyio.CancelScope())
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
            self._work_tg = None
            self._stopped = True
            self._touch()
            self._deadlines.close()
        if self._host_error is not None:
            raise self._host_error

    async def _host(self) -> None:
        try:
            async with anyio.create_task_group() as work_tg:
                self._work_tg = work_tg
                await work_tg.start(self._dispatch, name="wm_async dispatcher")
                work_tg.start_soon(self._recorder, name="wm_async result recorder")
                lease = self.store.lease_duration
                if lease is not None:
                    work_tg.start_soon(self._renew_leases, lease, name="wm_async lease renewal")
                self._host_ready.set()
                await self._stop_requested.wait()
                if self._dispatch_scope is not None:
                    self._dispatch_scope.cancel()
                # A claim in flight is shielded: wait for it, so the works it claims are
                # running (and get the grace period) before the drain looks, rather than
                # stopped before they start.
                await self._dispatch_done.wait()
                try:
                    await self._drain()
                finally:
                    self._shutdown_busy = False
                    self._touch()
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
        self._shutdown_busy = True
        self._touch()
        self._stop_requested.set()

    async def _drain(self) -> None:
        if self._running:
            logger.info(
                "shutting down: %d running, grace %.1fs",
                len(self._running),
                max(0.0, self._grace_until - self.clock.now()),
            )
            self._shutdown_busy = False  # a virtual clock may move through the grace
            self._touch()
            await self.clock.sleep_until(self._grace_until, self._all_idle)
            self._shutdown_busy = True
        if not self._running:
            return
        for handle in list(self._running.values()):
            handle.stop(StopReason.SHUTDOWN)
        with anyio.move_on_after(STUCK_WORKER_TIMEOUT):
            await self._all_idle.wait()
        stuck = list(self._running.values())
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
            now = self.clock.now()
            changes = [
                lc.finish(
                    h.record,
                    lc.Interrupted(StopReason.SHUTDOWN)
                    if h.started
                    else lc.Unstarted(StopReason.SHUTDOWN),
                    now=now,
                )
                for h in stuck
            ]
            for handle in stuck:
                handle.abandoned = True  # whatever it returns later is not recorded
            with anyio.move_on_after(BOOKKEEPING_TIMEOUT, shield=True), self.tracked():
                self.publish(await self.store.apply(changes))
            self._released.set()  # run() returns; the host waits for them alone

    async def _dispatch(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self._dispatch_loop(task_status)
        finally:
            self._dispatch_done.set()

    async def _dispatch_loop(self, task_status: TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._dispatch_scope = scope
            task_status.started()
            store, clock = self.store, self.clock
            failures = 0
            full_claims = 0
            while True:
                self._wakeup = asyncio.Event()  # before claiming: a wake-up during it counts
                self._asleep = False
                self._touch()
                free = self.max_concurrency - self._slots_used
                if free <= 0:
                    self._asleep = True
                    self._touch()
                    await clock.sleep_until(None, self._wakeup)  # a finishing run wakes us
                    continue
                params = ClaimParams(
                    now=clock.now(),
                    limit=min(free, CLAIM_BATCH),
                    owner=self.owner,
                    blocked_signals=self.blocked_signals(),
                    constraints_met=frozenset(self.constraints_met),
                )
                # Shielded: works claimed must get their tasks, or they would sit RUNNING
                # until the next start's recovery.
                sent = clock.monotonic()  # the claims' leases last from no earlier
                with anyio.CancelScope(shield=True), self.tracked():
                    claimed: Claimed | None = None
                    try:
                        claimed = await store.claim_due(params)
                    except StoreError as exc:
                        self._store_error(exc, "claiming due work")
                    else:
                        self._store_recovered()
                    if claimed is not None and claimed.records:
                        self._start(claimed.records, sent)
                if claimed is None:
                    failures += 1
                    self._asleep = True
                    self._touch()
                    await clock.sleep_until(clock.now() + _backoff(failures), self._wakeup)
                    continue
                failures = 0
                if claimed.records and len(claimed.records) >= min(free, CLAIM_BATCH):
                    # More may be due: claim again, the first time at once, before the
                    # runners start the works just claimed: a store with a writer thread
                    # then writes that claim while the loop runs them. A store that
                    # answers without suspending gets a checkpoint every other claim, so
                    # a backlog never holds the loop for long.
                    full_claims += 1
                    if full_claims % 2 == 0:
                        await anyio.lowlevel.checkpoint()
                    continue
                full_claims = 0
                self._asleep = True
                self._touch()
                await clock.sleep_until(claimed.next_due, self._wakeup)

    def _start(self, records: list[WorkRecord], claimed_at: float) -> None:
        tg = self._work_tg
        assert tg is not None
        self.publish(records)
        was_idle = self._all_idle.is_set()
        if was_idle:
            self._all_idle = anyio.Event()
        self._has_runs.set()
        ready, running = self._ready, self._running
        self._slots_used += len(records)
        constrained: list[RunHandle] | None = None
        for record in records:
            handle = RunHandle(record, claimed_at)
            running[record.id] = handle
            ready.append(handle)
            if record.constraints is not NO_CONSTRAINTS:
                if constrained is None:
                    constrained = []
                constrained.append(handle)
        if constrained is not None:
            self._check_signals(constrained)
        if was_idle:
            self.on_busy()  # after filling _running, which the watchdog reads
        # Hand the runs to idle runners; if none is idle, start one. Each runner that
        # takes a run while more wait starts the next (see _runner), so the pool grows
        # one task at a time: the first run starts at once instead of after a burst of
        # task creations, and the pool still reaches the peak concurrency.
        wanted = len(records)
        idle = self._idle_runners
        while wanted and idle:
            parked = idle.popleft()
            if not parked.done():
                parked.set_result(None)
                wanted -= 1
        if wanted:
            self._grow()

    def _check_signals(self, handles: list[RunHandle]) -> None:
        """Stop, before they start, the claimed runs whose signals do not hold here.

        A claim skips works needing a signal this process knows to be false; but a work
        enqueued by another process (PostgreSQL) may need a signal this one has not been
        watching, and so was claimed. Watching starts now; until the signal reads true
        such a run is undone without spending an attempt (the next claim parks the
        work), so a work never runs where its constraints do not hold."""
        self.require_signals(frozenset().union(*(h.record.signal_names for h in handles)))
        blocked = self.blocked_signals()
        if not blocked:
            return
        for handle in handles:
            if handle.record.id in self.constraints_met:
                continue
            unmet = sorted(handle.record.signal_names & blocked)
            if unmet:
                handle.stop(stop_reason_for(unmet[0]))

    def _grow(self) -> None:
        # One runner starting at a time: a runner that takes the next ready run while the
        # one just started has not run yet would otherwise start another for every run it
        # takes, and a backlog of quick works would start max_concurrency runners that a
        # couple could serve.
        if (
            not self._runner_starting
            and self._runners < self.max_concurrency
            and self._work_tg is not None
        ):
            self._runners += 1
            self._runner_starting = True
            self._work_tg.start_soon(self._runner, name=f"wm_async runner {self._runners}")

    async def _runner(self) -> None:
        # Runners outlive runs: starting an anyio task costs several times what a run of
        # a trivial worker does, so the pool grows to the peak concurrency and stays, and
        # a runner that finishes a run takes the next ready one without a context switch.
        # Runs share the runner's cancel scope until one is stopped; then the spent scope
        # is left (it swallows the cancellation) and the next runs get a fresh one.
        self._runner_starting = False
        ready = self._ready
        task = asyncio.current_task()
        runs_in = self._runs_in
        loop = asyncio.get_running_loop()
        new_scope = self._scope_type
        workers, set_progress = self.workers, self._set_progress
        sync_limiter, max_data_bytes = self._sync_limiter, self.max_data_bytes
        while True:
            with new_scope() as scope:
                while True:
                    if not ready:
                        # A bare future, not an anyio Event: a runner parks here after
                        # almost every run of a busy backlog, and this is several times
                        # cheaper. Shutdown still reaches it by cancelling the task.
                        wakeup = loop.create_future()
                        self._idle_runners.append(wakeup)
                        await wakeup
                        continue
                    handle = ready.popleft()
                    if ready and not self._idle_runners:
                        self._grow()
                    # Which run this task is in, for the loop watchdog (renaming the task
                    # per run costs more than this).
                    runs_in[task] = handle
                    handle.scope = scope
                    # The run, inline rather than in a coroutine of its own (one frame
                    # fewer per run); _run_ended does what follows the worker.
                    record = handle.record
                    timeout = record.timeout
                    if timeout is None:
                        timeout = self.default_timeout
                    if timeout is not None:
                        self._deadlines.add(handle, timeout, self.clock.monotonic())
                    try:
                        outcome = await execute(
                            handle,
                            workers.get(record.worker),
                            set_progress,
                            sync_limiter=sync_limiter,
                            max_data_bytes=max_data_bytes,
                        )
                    except Exception:  # pragma: no cover - execute maps worker errors itself
                        logger.exception("internal error running %r", handle)
                        outcome = lc.Interrupted(StopReason.UNKNOWN)
                    except BaseException as exc:
                        await self._run_raised(handle, exc)
                        raise
                    if self._run_ended(handle, outcome):
                        await self._record_stopped(handle, outcome)
                    if handle.stop_reason is not None and scope.cancel_called:
                        break  # the scope is spent: leave it for a fresh one

    def _deadlines_due(self) -> None:
        for handle in self._deadlines.expired(self.clock.monotonic()):
            worker = self.workers.get(handle.record.worker)
            if handle.in_worker and worker is not None and not worker.is_async:
                logger.warning(
                    "%r passed its timeout; a sync worker's thread cannot be cancelled, so "
                    "the run keeps its place (max_concurrency) until the function returns",
                    handle,
                )
            handle.stop(StopReason.TIMEOUT)

    async def _run_raised(self, handle: RunHandle, exc: BaseException) -> None:
        """A run's task is being cancelled from outside (execute maps a worker's own
        exceptions to outcomes): record the run as interrupted (it runs again later) and
        free its place; the caller lets the exception propagate."""
        try:
            reason = handle.stop_reason or StopReason.SHUTDOWN
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                reason = StopReason.UNKNOWN
            outcome = lc.Interrupted(reason) if handle.started else lc.Unstarted(reason)
            await self._record(handle, outcome)
        finally:
            self._release(handle)

    def _run_ended(self, handle: RunHandle, outcome: lc.Outcome) -> bool:
        """Queue a normal outcome for the recorder; True if the run was stopped or
        interrupted instead, for the caller to record at once (_record_stopped)."""
        if (
            handle.stop_reason is None
            and not handle.abandoned
            and outcome.__class__ is not lc.Interrupted
        ):  # (an Unstarted outcome always comes with a stop reason)
            self._record_soon(handle, outcome)
            return False
        return True

    async def _record_stopped(self, handle: RunHandle, outcome: lc.Outcome) -> None:
        try:
            await self._record(handle, outcome)
        finally:
            self._release(handle)

    def _release(self, handle: RunHandle) -> None:
        """The run's outcome is recorded (or given up): free its place."""
        self._release_all((handle,))

    def _release_all(self, handles: Sequence[RunHandle]) -> None:
        """:meth:`_release` for each run, waking the dispatcher once."""
        running = self._running
        released = 0
        for handle in handles:
            if handle.finished:
                continue  # released already
            handle.finished = True
            released += 1
            # A work re-enqueued with no delay (zero backoff, interruption) may already
            # have been claimed again while this run recorded its outcome: drop only our
            # own entry.
            work_id = handle.record.id
            if running.get(work_id) is handle:
                del running[work_id]
        if not released:
            return
        self._slots_used -= released
        if not running:
            self._all_idle.set()
        self.wake()

    # -- recording outcomes

    def _record_soon(self, handle: RunHandle, outcome: lc.Outcome) -> None:
        """Hand a normal outcome to the recorder, which writes the outcomes of all the
        runs that ended meanwhile with one store call. The runner goes on to its next run
        at once; this run keeps its place (capacity, ``runs()``) until it is recorded."""
        handle.change = lc.finish(handle.record, outcome, now=self.clock.now())
        self._results.append(handle)
        self._in_flight += 1  # a virtual clock waits for the write
        waiter = self._results_waiter
        if waiter is not None:
            self._results_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _recorder(self) -> None:
        """Write the queued outcomes, a batch per turn, for as long as the manager runs.

        Nothing cancels it while runs are in progress (shutdown stops it once they are
        all recorded), so, as a runner's own write was, the write is not shielded.
        """
        loop = asyncio.get_running_loop()
        while True:
            if not self._results:
                self._results_waiter = waiter = loop.create_future()
                await waiter
                continue
            batch, self._results = self._results, []
            # Every handle queued by _record_soon carries its change.
            changes = cast("list[lc.Change]", [handle.change for handle in batch])
            try:
                written = await self.store.apply(changes)
            except StoreError as exc:
                # Retry each outcome on its own, as runs once recorded their own: a change
                # the store keeps refusing then holds up its run alone.
                tg = self._work_tg
                assert tg is not None
                for handle, change in zip(batch, changes, strict=True):
                    tg.start_soon(self._record_after_failure, handle, change, exc)
                continue
            self._store_recovered()
            try:
                if written:
                    self.publish(written)
            finally:
                for handle in batch:
                    handle.change = None
                self._release_all(batch)
                self._in_flight -= len(batch)
                self._touch()

    async def _record_after_failure(
        self, handle: RunHandle, change: lc.Change, exc: StoreError
    ) -> None:
        try:
            written = await self._retry(exc, "recording a result", change)
            if written:
                self.publish(written)
        finally:
            self._release(handle)
            self._in_flight -= 1
            self._touch()

    async def _record(self, handle: RunHandle, outcome: lc.Outcome) -> None:
        if handle.abandoned:
            return  # shutdown recorded it interrupted; the store may be closed by now
        change = lc.finish(handle.record, outcome, now=self.clock.now())
        written: list[WorkRecord] = []
        self._in_flight += 1
        try:
            # Runs that ended normally go through the recorder (_record_soon); these were
            # stopped or interrupted, and shutdown may be cancelling their task.
            with anyio.move_on_after(BOOKKEEPING_TIMEOUT, shield=True):
                try:
                    written = await self.store.apply([change])
                except StoreError as exc:
                    written = await self._retry(exc, "recording a result", change)
            if written:
                self.publish(written)
        finally:
            self._in_flight -= 1
            self._touch()

    # -- a failing store

    async def _retry(self, exc: StoreError, doing: str, change: lc.Change) -> list[WorkRecord]:
        """Apply ``change`` until the store takes it. The run keeps its capacity slot
        meanwhile, so a store that stays down stops new claims (back-pressure); if the
        manager stops first, the work is still RUNNING in the store and runs again on the
        next start (semantics 15) or, with leases, once its lease expires."""
        failures = 0
        while True:
            self._store_error(exc, doing)
            failures += 1
            self._in_flight -= 1  # a virtual clock must be free to move while we wait
            self._touch()
            try:
                await self.clock.sleep_until(self.clock.now() + _backoff(failures), anyio.Event())
            finally:
                self._in_flight += 1
                self._touch()
            try:
                written = await self.store.apply([change])
            except StoreError as again:
                exc = again
            else:
                self._store_recovered()
                return written

    def _store_error(self, exc: StoreError, doing: str) -> None:
        if not self._store_failing:
            self._store_failing = True
            logger.error("store failed while %s; retrying until it recovers: %s", doing, exc)
        else:
            logger.debug("store still failing while %s: %s", doing, exc)

    def _store_recovered(self) -> None:
        if self._store_failing:
            self._store_failing = False
            logger.warning("store recovered")

    async def _renew_leases(self, lease: float) -> None:
        """Renew the leases of this process's runs every half lease while any run; stop
        the runs whose lease was lost (their results would not be recorded).

        While renewals fail (the store is unreachable from here, not necessarily from
        other processes), a run whose lease may be about to end is stopped here, with
        stop reason LEASE_LOST, before another process can rescue it: a partition does
        not let two runs of one work overlap. So is a run whose lease may have ended while
        this process was paused. A run's lease is known to last at least ``lease`` from
        when the claim or the last successful renewal was *sent* (the store extends it
        later than that), on the monotonic clock.
        """
        clock = self.clock
        margin = min(LEASE_MARGIN, lease / 10)
        failing = False
        while True:
            if not self._running:
                self._has_runs = anyio.Event()
                await self._has_runs.wait()
            delay = lease / 2
            if failing:  # wake up in time to fence the runs whose lease is ending
                ending = min(
                    (h.lease_from for h in self._running.values() if h.stop_reason is None),
                    default=math.inf,
                )
                delay = min(delay, max(0.0, ending + lease - margin - clock.monotonic()))
            # _all_idle cuts the sleep short when the last run ends: with a virtual clock,
            # an idle manager then has no timer for advance() to step through.
            await clock.sleep_until(clock.now() + delay, self._all_idle)
            # A run whose lease may have ended meanwhile (this process was paused past
            # it: a stopped process, a frozen VM) may be running elsewhere by now: stop
            # it before anything else, rather than after a round trip to the store.
            self._fence(lease - margin)
            handles = [h for h in self._running.values() if h.stop_reason is None]
            if not handles:
                continue
            sent = clock.monotonic()
            try:
                with self.tracked():
                    lost = await self.store.renew_leases(
                        owner=self.owner, ids=[h.record.id for h in handles], now=clock.now()
                    )
                    for handle in handles:
                        if handle.record.id not in lost:
                            handle.lease_from = max(handle.lease_from, sent)
                    failing = False
                    if lost:
                        await self._stop_lost(lost)
            except StoreError as exc:
                if not failing:
                    logger.error("renewing leases failed: %s", exc)
                failing = True
                self._fence(lease - margin)

    def _fence(self, valid: float) -> None:
        """Stop the runs whose lease may end within ``valid`` of its last known start."""
        now = self.clock.monotonic()
        for handle in list(self._running.values()):
            if handle.finished or handle.stop_reason is not None:
                continue
            if handle.lease_from + valid <= now:
                logger.warning(
                    "stopping %r: its lease could not be renewed and ends now; another "
                    "process may run the work (stop reason LEASE_LOST)",
                    handle,
                )
                handle.stop(StopReason.LEASE_LOST)

    async def _stop_lost(self, lost: set[str]) -> None:
        # Read why: a work cancelled by another process stops as CANCELLED_BY_APP; one
        # taken over after its lease expired (this process stalled) as LEASE_LOST.
        states = {r.id: r.state for r in await self.store.get(lost)}
        for work_id in lost:
            handle = self._running.get(work_id)
            if handle is None or handle.finished:
                continue  # ended meanwhile
            cancelled = states.get(work_id) is WorkState.CANCELLED
            reason = StopReason.CANCELLED_BY_APP if cancelled else StopReason.LEASE_LOST
            logger.warning("stopping %r: its lease was lost (%s)", handle, reason.value)
            handle.stop(reason)

    async def _set_progress(self, handle: RunHandle, progress: Data) -> None:
        from . import _validators as v

        v.check_data_size("progress", progress, self.max_data_bytes)
        change = lc.set_progress(handle.record, progress)
        if change is None or handle.stop_reason is not None:
            return
        with self.tracked():
            written = await self.store.apply([change])
        if written:
            handle.record = written[0]
            self.publish(written)
        elif handle.stop_reason is None:
            # The guard failed although nothing here stopped the run: another process
            # changed the work (wm-async cancel on a shared store). Stop the run; its
            # outcome will fail the guard too, so the store keeps what the other wrote.
            logger.info("stopping %r: changed in the store by another process", handle)
            handle.stop(StopReason.CANCELLED_BY_APP)
