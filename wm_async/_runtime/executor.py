"""Running one claimed work: the WorkContext a worker sees, and mapping what the worker
did (returned, raised, was cancelled) to a lifecycle outcome."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import anyio
import attrs

from .._core import errors, validators
from .._core.data import (
    Data,
    JSONValue,
)
from .._core.errors import (
    DataTooLargeError,
    UnknownWorkerError,
    WorkManagerError,
)
from .._core.event import CallNext
from .._core.lifecycle import (
    Exhausted,
    Failed,
    Interrupted,
    Outcome,
    Retry,
    Succeeded,
    Unstarted,
)
from .._core.model import (
    Result,
    ResultKind,
    StopReason,
    WorkError,
)
from .._core.policy import NO_POLICY, WorkerPolicy

if TYPE_CHECKING:
    from .._core.lifecycle import Change
    from .._core.record import WorkRecord

logger = logging.getLogger("wm_async.worker")

#: What ``@manager.worker`` accepts: an async or sync callable taking the context.
WorkerFn: TypeAlias = Callable[["WorkContext"], Awaitable[Result | None] | Result | None]
#: What ``manager.add_middleware`` accepts: ``async def mw(ctx, call_next)``, which awaits
#: ``call_next()`` (the next middleware, or the worker) and returns what it returned.
Middleware: TypeAlias = Callable[["WorkContext", CallNext], Awaitable[Result | None]]


@attrs.frozen
class Worker:
    """A registered worker function, how to call it, and its retry policy."""

    name: str
    fn: WorkerFn
    is_async: bool
    policy: WorkerPolicy = NO_POLICY

    @classmethod
    def wrap(cls, name: str, fn: WorkerFn, policy: WorkerPolicy = NO_POLICY) -> Worker:
        """Inspect ``fn`` once, at registration."""
        call = getattr(fn, "__call__", None)  # noqa: B004  # callable objects with async __call__
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)
        return cls(name, fn, is_async, policy)


class RunHandle:
    """One run in progress: its record, the cancel scope its worker runs in, and why it
    was stopped.

    The scope is the runner's: runs share it until one of them is cancelled (a scope per
    run costs as much as the rest of a trivial run), so stopping a run is allowed only
    while its worker is being called.
    """

    __slots__ = (
        "abandoned",
        "change",
        "deadline",
        "finished",
        "in_worker",
        "lease_from",
        "policy",
        "record",
        "returned",
        "scope",
        "started",
        "stop_reason",
    )

    def __init__(self, record: WorkRecord, lease_from: float = 0.0) -> None:
        self.record = record
        #: When (monotonic) its lease was last known to start: sent the claim or a renewal.
        self.lease_from = lease_from
        self.scope: anyio.CancelScope | None = None
        self.stop_reason: StopReason | None = None
        self.in_worker = False
        #: Its worker has been called (a run stopped before that is undone, not counted).
        self.started = False
        self.finished = False
        #: Its worker returned and its place was freed; its outcome waits for the recorder.
        self.returned = False
        #: Left behind by shutdown (its worker ignored cancellation): record nothing.
        self.abandoned = False
        #: When its timeout stops it (set by the scheduler's deadline queue).
        self.deadline = 0.0
        #: Its outcome, once waiting for the recorder.
        self.change: Change | None = None
        #: Its worker's retry policy (set by the runner), for recording its outcome.
        self.policy = NO_POLICY

    def __repr__(self) -> str:
        return f"<run {self.record.id} ({self.record.worker!r})>"

    def reason(self) -> StopReason:
        """Why the run was stopped (CANCELLED_BY_APP if no reason was given)."""
        return self.stop_reason or StopReason.CANCELLED_BY_APP

    def stop(self, reason: StopReason) -> None:
        """Cancel the run; the first reason given is the one recorded. A run not started
        yet is skipped when its turn comes; one whose worker has returned is left to
        record its result (the store's compare-and-set settles any race)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.in_worker and self.scope is not None:
            self.scope.cancel()


class WorkContext:
    """What a worker receives: the work's identity and input, and a way to report
    progress.

    :ivar id: the work's UUID
    :ivar worker: the worker name
    :ivar input: the work's input (merged with prerequisites' outputs for chained work): a
        JSON object, typed ``Mapping[str, Any]`` so that reading a value needs no cast
    :ivar tags: the work's tags
    :ivar run_attempt_count: how many runs happened *before* this one (0 on the first), as
        Android's ``runAttemptCount``; :attr:`runs_started` counts this one too, as
        ``WorkInfo.run_attempt_count`` does
    :ivar headers: what the app's propagators stored with the work at enqueue (a trace
        context, say; empty when none), in whichever process enqueued it
    """

    # __weakref__: so apps (and tests) can check that nothing keeps a finished run's context.
    __slots__ = (
        "__weakref__",
        "_handle",
        "_progress",
        "headers",
        "input",
        "run_attempt_count",
        "tags",
        "worker",
    )

    def __init__(
        self,
        handle: RunHandle,
        progress: Callable[[RunHandle, Data], Awaitable[None]],
    ) -> None:
        record = handle.record
        self.worker: str = record.worker
        self.input: Mapping[str, Any] = record.input
        self.tags: frozenset[str] = record.tags
        self.headers: Data = record.headers
        self.run_attempt_count: int = record.run_attempt_count - 1
        self._handle = handle
        self._progress = progress

    def __repr__(self) -> str:
        return f"WorkContext(id={self._handle.record.id}, worker={self.worker!r})"

    @property
    def id(self) -> uuid.UUID:
        """The work's UUID."""
        return uuid.UUID(self._handle.record.id)

    @property
    def runs_started(self) -> int:
        """How many runs have started, this one included (1 on the first run): the
        ``WorkInfo.runs_started`` (and ``run_attempt_count``) that observers see now."""
        return self.run_attempt_count + 1

    @property
    def stop_reason(self) -> StopReason:
        """Why this run is being stopped (``NOT_STOPPED`` while it may go on)."""
        return self._handle.stop_reason or StopReason.NOT_STOPPED

    @property
    def is_stopped(self) -> bool:
        """True once the run has been asked to stop; sync workers should check it."""
        return self._handle.stop_reason is not None

    async def set_progress(self, progress: Mapping[str, JSONValue]) -> None:
        """Publish progress (a JSON object), visible in WorkInfo while the work runs.

        :raises InvalidRequestError: if ``progress`` is not a JSON object
        :raises DataTooLargeError: if it exceeds ``max_data_bytes``
        """
        await self._progress(self._handle, validators.to_data("progress", progress))


#: The module name wm_async's own errors are recorded under in ``WorkError.type``: the
#: one they had when the first works were stored, kept so that stored error types (which
#: apps filter on) do not change with the package's layout.
STORED_ERRORS_MODULE: Final = "wm_async._errors"


def _error(exc: BaseException) -> WorkError:
    cls = type(exc)
    module = cls.__module__
    if isinstance(exc, WorkManagerError) and getattr(errors, cls.__name__, None) is cls:
        module = STORED_ERRORS_MODULE
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return WorkError(type=name, message=str(exc))


async def execute(
    handle: RunHandle,
    worker: Worker | None,
    progress: Callable[[RunHandle, Data], Awaitable[None]],
    *,
    sync_limiter: anyio.CapacityLimiter,
    max_data_bytes: int,
    middleware: tuple[Middleware, ...] = (),
) -> Outcome:
    """Run the worker for ``handle`` and return its outcome.

    Cancellation of ``handle.scope`` (app cancel, timeout, lost constraint, shutdown)
    becomes :class:`Interrupted`; a result returned after that is ignored (semantics 13,
    30). The scope is then spent: the caller must shield its bookkeeping and the runner
    must leave the scope. Cancellation of the runner's task from outside propagates.
    Worker exceptions become :class:`Failed`, including a ``CancelledError`` that nothing
    in wm_async caused (the worker awaited a task or future cancelled elsewhere): it fails
    this work alone.

    A sync worker runs in a thread, which cannot be cancelled: a stopped one is waited
    for until it returns, so its thread keeps its run's place (``max_concurrency``) and
    the work is not run again beside it.
    """
    record = handle.record
    scope = handle.scope
    stopped = handle.stop_reason  # (a local: mypy would keep the attribute narrowed)
    if stopped is not None:
        return Unstarted(stopped)  # stopped before its worker was called
    if worker is None:
        err = UnknownWorkerError(record.worker)
        logger.warning("work %s failed: %s", record.id, err)
        return Failed(error=_error(err))
    policy = worker.policy
    if policy is not NO_POLICY and policy.max_attempts is not None:
        limit = policy.max_attempts_for(record)
        if limit is not None and record.run_attempt_count > limit:
            # Re-enqueued past the worker's limit by crash recovery (which the store
            # does without the registry): fail without running (semantics 46).
            logger.warning("work %s failed: its max_attempts=%d were used up", record.id, limit)
            return Exhausted(limit)
    ctx = WorkContext(handle, progress)
    result: object = None
    outcome: Outcome | None = None
    handle.in_worker = handle.started = True
    try:
        if middleware:
            result = await call_through(middleware, worker, ctx, sync_limiter)
        elif worker.is_async:
            result = await worker.fn(ctx)  # type: ignore[misc]  # is_async checked
        else:
            result = await anyio.to_thread.run_sync(worker.fn, ctx, limiter=sync_limiter)
    except anyio.get_cancelled_exc_class() as exc:
        if scope is None or not scope.cancel_called:
            if task_cancelled():
                raise  # not ours: shutdown's last resort, or the host
            outcome = _foreign_cancellation(record, exc)
        else:
            outcome = Interrupted(handle.reason())
    except Exception as exc:
        retry = bool(policy.retry_on) and isinstance(exc, policy.retry_on)
        logger.warning(
            "work %s (%r) %s %s",
            record.id,
            record.worker,
            "raised (retry_on)" if retry else "failed with",
            _error(exc).type,
            exc_info=exc,
        )
        outcome = Retry(error=_error(exc)) if retry else Failed(error=_error(exc))
    except BaseException as exc:
        # KeyboardInterrupt, SystemExit, GeneratorExit... raised by the worker itself (a
        # Ctrl-C reaches the loop's main task, not a worker): a failure of this work,
        # not of the manager, which goes on running the others. A cancellation of the
        # runner's own task passes.
        if (
            _is_cancellation(exc)
            and (scope is None or not scope.cancel_called)
            and task_cancelled()
        ):
            raise
        logger.error(
            "work %s (%r) raised %s; recorded as FAILED, the manager keeps running",
            record.id,
            record.worker,
            _error(exc).type,
            exc_info=exc,
        )
        outcome = Failed(error=_error(exc))
    finally:
        handle.in_worker = False
    # Only stop() cancels the scope, and it sets stop_reason first.
    if handle.stop_reason is not None and scope is not None and scope.cancel_called:
        return Interrupted(handle.reason())
    if outcome is not None:
        return outcome
    if result is None:
        return _SUCCEEDED  # what _outcome_of says, without the call (most workers)
    return _outcome_of(record, result, max_data_bytes)


def retried_on(ctx: WorkContext, exc: BaseException) -> bool:
    """Whether the worker's ``retry_on`` turns ``exc``, raised by its run, into a retry
    (what the run's outcome is then recorded as)."""
    retry_on = ctx._handle.policy.retry_on
    return bool(retry_on) and isinstance(exc, Exception) and isinstance(exc, retry_on)


async def call_through(
    middleware: tuple[Middleware, ...],
    worker: Worker,
    ctx: WorkContext,
    limiter: anyio.CapacityLimiter,
) -> object:
    """Call ``worker`` through ``middleware`` (outermost first): what a middleware
    raises or returns is what the worker did, for the outcome (semantics 52)."""

    async def call_worker() -> Any:
        if worker.is_async:
            return await worker.fn(ctx)  # type: ignore[misc]  # is_async checked
        return await anyio.to_thread.run_sync(worker.fn, ctx, limiter=limiter)

    if len(middleware) == 1:
        return await middleware[0](ctx, call_worker)
    call: CallNext = call_worker
    for mw in reversed(middleware):
        call = functools.partial(mw, ctx, call)
    return await call()


def task_cancelled() -> bool:
    """Whether this task is being cancelled (a cancel scope around it, or
    ``Task.cancel``), as opposed to a ``CancelledError`` merely raised through it by
    something it awaited."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _foreign_cancellation(record: WorkRecord, exc: BaseException) -> Outcome:
    message = (
        f"worker {record.worker!r} raised {type(exc).__name__} although nothing cancelled "
        "its run (it awaited a task or future that was cancelled elsewhere); recorded as "
        "a failure of this work"
    )
    logger.warning("work %s failed: %s", record.id, message, exc_info=exc)
    return Failed(error=WorkError(type=_error(exc).type, message=message))


def _is_cancellation(exc: BaseException) -> bool:
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(cancelled) is not None
    return isinstance(exc, cancelled)


_SUCCEEDED: Final = Succeeded()
_RETRY: Final = Retry()


def _outcome_of(record: WorkRecord, result: object, max_data_bytes: int) -> Outcome:
    if result is None:
        return _SUCCEEDED
    if not isinstance(result, Result):
        message = (
            f"worker {record.worker!r} returned {type(result).__name__}; expected "
            "wm_async.Result or None"
        )
        if inspect.iscoroutine(result):  # a sync wrapper around an async function
            result.close()  # never awaited; closing spares the interpreter's warning
            message += "; register the async function itself, not a sync function calling it"
        logger.warning("work %s failed: %s", record.id, message)
        return Failed(error=WorkError(type="TypeError", message=message))
    if result.kind is ResultKind.RETRY:
        delay = result.retry_delay
        return _RETRY if delay is None else Retry(delay=delay.total_seconds())
    try:
        validators.check_data_size("output", result.output, max_data_bytes)
    except DataTooLargeError as exc:
        logger.warning("work %s failed: %s", record.id, exc)
        return Failed(error=_error(exc))
    if result.kind is ResultKind.SUCCESS:
        return Succeeded(result.output)
    return Failed(result.output)
