"""The registries a WorkManager fills before it starts: its workers and its start-up
hooks."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Self, TypeVar

from .._core import validators
from .._core.errors import InvalidRequestError
from .._core.limits import RateLimit, WorkerLimits
from .._core.mergers import COMBINE_WORKER
from .._core.model import Backoff
from .._core.policy import NO_POLICY, WorkerPolicy
from .._runtime.executor import (
    Worker,
    WorkerFn,
)
from .._runtime.workers import WorkerTable

F = TypeVar("F", bound=WorkerFn)


class WorkerRegistry:
    """The worker registry and the start-up hooks of a
    :class:`~wm_async.WorkManager` (which is one).

    :param combine: the worker of a chain's combining step
    """

    def __init__(self, combine: WorkerFn) -> None:
        self._workers = WorkerTable({COMBINE_WORKER: Worker.wrap(COMBINE_WORKER, combine)})
        #: The flow limits of the workers that have some (what claims take).
        self._limits: dict[str, WorkerLimits] = {}
        self._on_start: list[Callable[[Self], Awaitable[None]]] = []

    def worker(
        self,
        name: str,
        *,
        retry_on: type[Exception] | Iterable[type[Exception]] = (),
        timeout: timedelta | float | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        max_running: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated async (or sync) function as the worker ``name``.

        The function receives a :class:`~wm_async.WorkContext` and returns a
        :class:`~wm_async.Result` or ``None`` (success); raising fails the work. Sync
        functions run in a worker thread.

        The keywords are the worker's retry policy, applied when its works run, by the
        process that runs them (so also to works a producer enqueued):

        - ``retry_on``: exception classes that, raised by the worker, mean
          ``Result.retry()`` instead of a failure (the error is shown in
          ``WorkInfo.error`` while the work waits; ``max_attempts`` still applies);
        - ``timeout``: the run time limit of works whose request sets none (before the
          manager's ``default_timeout``);
        - ``backoff``: the backoff of works whose request keeps the default one
          (``Backoff()``: a request that sets a backoff equal to it gets the worker's);
        - ``max_attempts``: the attempt limit of works whose request sets none.

        And its flow limits, applied when works are claimed (semantics 50):

        - ``max_running``: at most this many of its works run at once (across every
          process on PostgreSQL; in the scheduling process on SQLite and memory);
        - ``rate_limit``: at most ``RateLimit(n, per=…, burst=…)`` starts (across every
          process on PostgreSQL).

        :raises InvalidRequestError: if the name is invalid or already registered, or a
            policy value is bad (``retry_on`` not exception classes, a timeout not
            positive, ``max_attempts`` below 1, ``backoff`` not a ``Backoff``,
            ``max_running`` not an int from 1, ``rate_limit`` not a ``RateLimit``)
        """
        validators.check_name("worker", name)
        policy = WorkerPolicy.build(
            retry_on=retry_on,
            timeout=timeout,
            backoff=backoff,
            max_attempts=max_attempts,
            max_running=max_running,
            rate_limit=rate_limit,
        )

        def register(fn: F) -> F:
            self._register(name, fn, policy)
            return fn

        return register

    def register_worker(
        self,
        name: str,
        fn: WorkerFn,
        *,
        retry_on: type[Exception] | Iterable[type[Exception]] = (),
        timeout: timedelta | float | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        max_running: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        """Register ``fn`` as the worker ``name`` (the non-decorator form of
        :meth:`worker`, with the same policy and limit keywords).

        :raises InvalidRequestError: if the name is invalid or already registered, or a
            policy value is bad
        """
        policy = WorkerPolicy.build(
            retry_on=retry_on,
            timeout=timeout,
            backoff=backoff,
            max_attempts=max_attempts,
            max_running=max_running,
            rate_limit=rate_limit,
        )
        self._register(name, fn, policy)

    def _register(self, name: str, fn: WorkerFn, policy: WorkerPolicy) -> None:
        validators.check_name("worker", name)
        if not callable(fn):
            raise InvalidRequestError("worker", fn, "expected a callable")
        if name in self._workers:
            raise InvalidRequestError("worker", name, "a worker is already registered under it")
        if name == COMBINE_WORKER:
            raise InvalidRequestError("worker", name, "this name is reserved for chains")
        self._workers[name] = Worker.wrap(name, fn, policy)
        if policy.limits is not None:
            self._limits[name] = policy.limits

    def _register_worker_family(self, prefix: str, fn: WorkerFn) -> None:
        """Run every work whose worker name begins with ``prefix`` (and goes on) with
        ``fn``: for the Flutter facade (``wm_async.compat``), one worker name per task.

        :raises InvalidRequestError: if the prefix is taken or ``fn`` is not callable
        """
        validators.check_name("worker", prefix)
        if not callable(fn):
            raise InvalidRequestError("worker", fn, "expected a callable")
        families = self._workers.families
        if prefix in families:
            raise InvalidRequestError("worker", prefix, "a worker family is already registered")
        families[prefix] = (fn, NO_POLICY)

    def unregister_worker(self, name: str) -> None:
        """Remove a worker. Works enqueued for it fail when they run (with an error that
        says so)."""
        if name != COMBINE_WORKER:
            self._workers.pop(name, None)
            self._limits.pop(name, None)

    def on_start(
        self, hook: Callable[[Self], Awaitable[None]]
    ) -> Callable[[Self], Awaitable[None]]:
        """Register an async function the manager awaits each time it starts, once it
        serves calls (and before ``async with`` enters): the place to declare periodic
        and unique works next to their workers (``wm-async worker`` runs them too)::

            @manager.on_start
            async def declare(manager: WorkManager) -> None:
                await manager.enqueue_unique_periodic_work(
                    "nightly-report", ExistingPeriodicWorkPolicy.UPDATE, report_request
                )

        Hooks run in every process that starts the manager, in registration order, so
        what they declare must be idempotent (unique work does that). One that raises
        stops the manager, and ``async with`` raises its error.

        :raises InvalidRequestError: if ``hook`` is not an async function
        """
        if not inspect.iscoroutinefunction(hook):
            raise InvalidRequestError("hook", hook, "expected an async function")
        self._on_start.append(hook)
        return hook
