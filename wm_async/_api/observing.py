"""Hooking into a manager (semantics 52): middleware around every worker call, listeners
of every state transition, propagators of headers stored with each work; the methods
:class:`~wm_async.WorkManager` inherits."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from .._core.errors import InvalidRequestError

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from .._core.event import Listener, Propagator
    from .._core.model import WorkState
    from .._runtime.executor import Middleware
    from .._runtime.services import Services
    from ..stores import Store


def _is_async(fn: object) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004  # callable objects with async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class Observing:
    """``add_middleware``, ``add_listener``, ``remove_listener``, ``add_propagator`` and
    ``count_works`` of a :class:`~wm_async.WorkManager` (which is one)."""

    if TYPE_CHECKING:
        _services: Services
        _store: Store
        _require: Callable[[str], None]
        _serving: Callable[[str], AbstractContextManager[None]]

    async def count_works(self) -> dict[tuple[str, WorkState], int]:
        """How many works each worker name has in each state, as the store has them now
        (every process's works; pairs with none are left out). One query (a scan of the
        works table on SQLite and PostgreSQL): for metrics and dashboards, not a loop.

        :raises NotRunningError: if the manager is not started
        :raises StoreError: if the store fails
        """
        self._require("count_works")
        with self._serving("count_works"):
            return await self._store.count_works()

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every run's worker call in ``middleware``, an ``async def mw(ctx,
        call_next)`` that awaits ``call_next()`` and returns what it returned (or
        raises what it raised): a span, a metric, an error report, a context variable
        set for the run. Middleware added first is outermost. What it raises or
        returns is taken as the worker's doing (a failure, a result); a sync worker is
        called in its thread by the innermost ``call_next``. Applies to runs that start
        after the call (it may be called while the manager runs).

        :raises InvalidRequestError: if ``middleware`` is not an async callable
        """
        if not _is_async(middleware):
            raise InvalidRequestError(
                "middleware", middleware, "expected an async callable (ctx, call_next)"
            )
        observers = self._services.observers
        observers.middleware = (*observers.middleware, middleware)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with a :class:`~wm_async.WorkEvent` for every state
        transition this process writes (or reads back from another process, flagged
        ``external``), in the event loop, right after the write and before ``wait()``
        and ``watch()`` hear of it. It must return quickly and not block; what it raises
        is logged (logger ``wm_async.events``) and ignored.

        :raises InvalidRequestError: if ``listener`` is not a plain (sync) callable
        """
        if not callable(listener) or _is_async(listener):  # type: ignore[redundant-expr]
            raise InvalidRequestError(
                "listener", listener, "expected a sync callable taking a WorkEvent"
            )
        self._services.observers.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (nothing happens if it was not added)."""
        listeners = self._services.observers.listeners
        if listener in listeners:
            listeners.remove(listener)

    def add_propagator(self, propagator: Propagator) -> None:
        """Call ``propagator(carrier)`` at every enqueue, in the enqueuing task, to fill
        ``carrier`` (a ``dict[str, str]``) with headers stored with the works enqueued:
        a trace context, a request id. A run sees them as ``ctx.headers``, in whichever
        process it runs. ``opentelemetry.propagate.inject`` is one. What it raises is
        logged and the work is stored without its headers.

        :raises InvalidRequestError: if ``propagator`` is not a callable
        """
        if not callable(propagator) or _is_async(propagator):  # type: ignore[redundant-expr]
            raise InvalidRequestError(
                "propagator", propagator, "expected a sync callable filling a dict[str, str]"
            )
        self._services.observers.propagators.append(propagator)
