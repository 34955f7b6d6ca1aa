"""The runner pool: the tasks that run claimed works, and the run path itself (deadline,
worker, outcome to the recorder), kept inline because every run takes it."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from .._core import lifecycle, validators
from .._core.model import StopReason
from .executor import (
    RunHandle,
    execute,
)

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._clock import Clock
    from .._core.data import Data
    from .._core.record import WorkRecord
    from ..stores._base import Store
    from .deadlines import Deadlines
    from .observers import Observers
    from .recorder import Recorder
    from .runs import RunTable
    from .settle import Settle
    from .workers import WorkerTable

logger = logging.getLogger("wm_async.scheduler")


class RunnerPool:
    """Runs the works handed to :meth:`start`, in runner tasks of the work task group.

    Runners outlive runs: starting an anyio task costs several times what a run of a
    trivial worker does, so the pool grows to the peak concurrency and stays, and a
    runner that finishes a run takes the next ready one without a context switch.
    """

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        workers: WorkerTable,
        default_timeout: float | None,
        max_data_bytes: int,
        publish: Callable[[Sequence[WorkRecord]], None],
        runs: RunTable,
        deadlines: Deadlines,
        recorder: Recorder,
        settle: Settle,
        observers: Observers,
    ) -> None:
        self._store = store
        self._clock = clock
        self._workers = workers
        self._default_timeout = default_timeout
        self._max_data_bytes = max_data_bytes
        self._publish = publish
        self.runs = runs
        self._deadlines = deadlines
        self._recorder = recorder
        self._settle = settle
        self._observers = observers
        #: Where the runners run (set when the scheduler starts).
        self.task_group: TaskGroup | None = None
        #: The running backend's CancelScope class (see Scheduler.run).
        self.scope_type: type[anyio.CancelScope] = anyio.CancelScope
        # Sync workers' threads: as many as runs may be in progress.
        self._sync_limiter = anyio.CapacityLimiter(runs.max_concurrency)
        self._ready: deque[RunHandle] = deque()
        self._runners = 0
        self._runner_starting = False
        # Each runner task's current (or last) run: see describe_task.
        self._runs_in: dict[asyncio.Task[object] | None, RunHandle] = {}
        self._idle_runners: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"RunnerPool(runners={self._runners}, ready={len(self._ready)})"

    def describe_task(self, task: asyncio.Task[object]) -> str | None:
        """The work a runner task is running, in words (safe to call from another
        thread: a dict lookup)."""
        handle = self._runs_in.get(task)
        if handle is None or not handle.in_worker:
            return None
        return f"work {handle.record.id} ({handle.record.worker!r})"

    def start(self, records: list[WorkRecord], claimed_at: float) -> list[RunHandle]:
        """Run the works just claimed (at ``claimed_at``, monotonic); return their runs."""
        self._publish(records)
        handles = self.runs.add(records, claimed_at)
        self._ready.extend(handles)
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
        return handles

    def _grow(self) -> None:
        # One runner starting at a time: a runner that takes the next ready run while the
        # one just started has not run yet would otherwise start another for every run it
        # takes, and a backlog of quick works would start max_concurrency runners that a
        # couple could serve.
        if (
            not self._runner_starting
            and self._runners < self.runs.max_concurrency
            and self.task_group is not None
        ):
            self._runners += 1
            self._runner_starting = True
            self.task_group.start_soon(self._runner, name=f"wm_async runner {self._runners}")

    async def _runner(self) -> None:
        # Runs share the runner's cancel scope until one is stopped; then the spent scope
        # is left (it swallows the cancellation) and the next runs get a fresh one.
        self._runner_starting = False
        ready = self._ready
        task = asyncio.current_task()
        runs_in = self._runs_in
        loop = asyncio.get_running_loop()
        new_scope = self.scope_type
        workers, set_progress = self._workers, self._set_progress
        sync_limiter, max_data_bytes = self._sync_limiter, self._max_data_bytes
        default_timeout, clock = self._default_timeout, self._clock
        add_deadline = self._deadlines.add
        recorder = self._recorder
        record_soon = recorder.record_soon
        returned = self.runs.returned
        interrupted = lifecycle.Interrupted
        observers = self._observers
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
                    # fewer per run).
                    record = handle.record
                    worker = workers.get(record.worker)
                    if worker is None:
                        worker = workers.member(record.worker)
                    timeout = record.timeout
                    if worker is not None:
                        # Its defaults for what the request leaves open (semantics 46).
                        policy = handle.policy = worker.policy
                        if timeout is None:
                            timeout = policy.timeout
                    if timeout is None:
                        timeout = default_timeout
                    if timeout is not None:
                        add_deadline(handle, timeout, clock.monotonic())
                    try:
                        outcome = await execute(
                            handle,
                            worker,
                            set_progress,
                            sync_limiter=sync_limiter,
                            max_data_bytes=max_data_bytes,
                            middleware=observers.middleware,
                        )
                    except Exception:  # pragma: no cover - execute maps worker errors itself
                        logger.exception("internal error running %r", handle)
                        outcome = lifecycle.Interrupted(StopReason.UNKNOWN)
                    except BaseException as exc:
                        await self._run_raised(handle, exc)
                        raise
                    if (
                        handle.stop_reason is None
                        and not handle.abandoned
                        and outcome.__class__ is not interrupted
                    ):  # (an Unstarted outcome always comes with a stop reason)
                        returned(handle)
                        record_soon(handle, outcome)
                    else:  # stopped or interrupted: recorded at once
                        await recorder.record_and_release(handle, outcome)
                    if handle.stop_reason is not None and scope.cancel_called:
                        break  # the scope is spent: leave it for a fresh one

    async def _run_raised(self, handle: RunHandle, exc: BaseException) -> None:
        """A run's task is being cancelled from outside (execute maps a worker's own
        exceptions to outcomes): record the run as interrupted (it runs again later) and
        free its place; the caller lets the exception propagate."""
        try:
            reason = handle.stop_reason or StopReason.SHUTDOWN
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                reason = StopReason.UNKNOWN
            outcome = (
                lifecycle.Interrupted(reason) if handle.started else lifecycle.Unstarted(reason)
            )
            await self._recorder.record(handle, outcome)
        finally:
            self.runs.release(handle)

    async def _set_progress(self, handle: RunHandle, progress: Data) -> None:
        validators.check_data_size("progress", progress, self._max_data_bytes)
        change = lifecycle.set_progress(handle.record, progress)
        if change is None or handle.stop_reason is not None:
            return
        with self._settle.tracked():
            written = await self._store.apply([change])
        if written:
            handle.record = written[0]
            self._publish(written)
        elif handle.stop_reason is None:
            # The guard failed although nothing here stopped the run: another process
            # changed the work (wm-async cancel on a shared store). Stop the run; its
            # outcome will fail the guard too, so the store keeps what the other wrote.
            logger.info("stopping %r: changed in the store by another process", handle)
            handle.stop(StopReason.CANCELLED_BY_APP)
