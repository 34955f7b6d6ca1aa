"""The registries a WorkManager fills before it starts: its workers and its start-up
hooks."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Self, TypeVar

from .._core import validators
from .._core.errors import InvalidRequestError
from .._core.mergers import COMBINE_WORKER
from .._runtime.executor import (
    Worker,
    WorkerFn,
)

F = TypeVar("F", bound=WorkerFn)


class WorkerRegistry:
    """The worker registry and the start-up hooks of a
    :class:`~wm_async.WorkManager` (which is one).

    :param combine: the worker of a chain's combining step
    """

    def __init__(self, combine: WorkerFn) -> None:
        self._workers: dict[str, Worker] = {COMBINE_WORKER: Worker.wrap(COMBINE_WORKER, combine)}
        self._on_start: list[Callable[[Self], Awaitable[None]]] = []

    def worker(self, name: str) -> Callable[[F], F]:
        """Register the decorated async (or sync) function as the worker ``name``.

        The function receives a :class:`~wm_async.WorkContext` and returns a
        :class:`~wm_async.Result` or ``None`` (success); raising fails the work. Sync
        functions run in a worker thread.

        :raises InvalidRequestError: if the name is invalid or already registered
        """
        validators.check_name("worker", name)

        def register(fn: F) -> F:
            self.register_worker(name, fn)
            return fn

        return register

    def register_worker(self, name: str, fn: WorkerFn) -> None:
        """Register ``fn`` as the worker ``name`` (the non-decorator form of
        :meth:`worker`).

        :raises InvalidRequestError: if the name is invalid or already registered
        """
        validators.check_name("worker", name)
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
