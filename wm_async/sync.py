"""SyncClient: wm_async from synchronous code (Django and Flask views, management
commands, cron scripts), without an event loop of the caller's own.

A :class:`SyncClient` runs a producer :class:`~wm_async.WorkManager`
(``run_work=False``: it enqueues, observes, waits and cancels, and never runs a work) in
a private event loop on a daemon thread of its own, started on first use. Each call is
handed to that loop and blocks the calling thread until it is done, so any number of
threads (a web server's thread pool) can call one client at once.

A process that forks after using the client (``gunicorn --preload``, multiprocessing's
``fork``) gets a fresh loop thread and manager in the child on the child's first call;
the parent's are never touched there.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from ._api.manager import WorkManager
from ._api.requests import OneTimeWorkRequest, PeriodicWorkRequest
from ._core import validators
from ._core.errors import BlockingCallError, InvalidRequestError, NotRunningError
from ._core.event import Propagator
from ._core.model import (
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    UpdateResult,
    WorkInfo,
    WorkQuery,
)
from ._runtime.observers import CALLER_CONTEXT
from .stores import Store

__all__ = ("SyncClient",)

T = TypeVar("T")

#: How long a call waits for its result by default (``wait()`` has its own timeout).
DEFAULT_CALL_TIMEOUT = 60.0


class _Runner:
    """One private event loop on a daemon thread, running one producer manager: the
    client's state in one process (a forked child makes a new one)."""

    def __init__(self, manager: WorkManager) -> None:
        self.manager = manager
        self.pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="wm_async SyncClient", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            self.thread.join()
            raise self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001  # handed to the caller of start()
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        self.stop = asyncio.Event()
        async with self.manager:
            self.loop = asyncio.get_running_loop()
            self.ready.set()
            await self.stop.wait()

    def close(self) -> None:
        """Stop the manager and join the thread (nothing in a forked child: the
        parent's thread does not exist there). Idempotent."""
        if os.getpid() != self.pid:
            return
        loop, stop = self.loop, self.stop
        if loop is not None and stop is not None and self.thread.is_alive():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop already closed
                pass
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join()


class SyncClient:
    """wm_async from synchronous code: enqueue, observe, wait for and cancel works from
    plain threads (Django, Flask, management commands, cron scripts)::

        client = SyncClient("postgresql://app@db/app")   # once, at import

        def signup(request):                              # any thread, any time
            client.enqueue(OneTimeWorkRequest("send_welcome", input={"user": 42}))

        with SyncClient("sqlite:///app.db") as client:    # a script
            request = OneTimeWorkRequest("rebuild_index")
            client.enqueue(request)
            info = client.wait(request.id, timeout=600)

    The client runs a producer :class:`~wm_async.WorkManager` (``run_work=False``) in a
    private event loop on a daemon thread, started on the first call. It never runs a
    work: ``wm-async worker`` processes (or any manager with the workers registered) do.
    Its methods have the names of the manager's and block until done. It is safe to
    call from many threads at once; :meth:`close` (also run at interpreter exit) stops
    it. After ``os.fork()`` the child's first call starts a loop and manager of its own
    (pass a store URL for that: a :class:`~wm_async.stores.Store` object cannot be
    shared with a child).

    Errors raised by the manager (InvalidRequestError, UnknownWorkerError, StoreError,
    ``TimeoutError`` from :meth:`wait`) reach the caller unchanged. A call made in an
    event loop's thread raises :class:`~wm_async.BlockingCallError`: use the async API
    (``await manager.enqueue(...)``) there.

    :param store: a store URL (``sqlite:///path.db``, ``postgresql://…``) or a
        :class:`~wm_async.stores.Store`
    :param known_workers: worker names an enqueue accepts; any other raises
        UnknownWorkerError at the call. Without it any name is accepted, and a work no
        process has a worker for fails when a worker process claims it
    :param max_data_bytes: the limit on serialised input (as for the manager)
    :param call_timeout: how long a call other than :meth:`wait` may take before it
        raises ``TimeoutError`` (seconds; ``None``: no limit). The call may still
        complete in the background
    """

    def __init__(
        self,
        store: str | Store = "sqlite:///wm_async.db",
        *,
        known_workers: Iterable[str] | None = None,
        max_data_bytes: int = validators.DEFAULT_MAX_DATA_BYTES,
        call_timeout: timedelta | float | None = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if not isinstance(store, str | Store):
            raise InvalidRequestError("store", store, "expected a store URL or a Store")
        self._store_arg = store
        self._known_workers = None if known_workers is None else list(known_workers)
        self._max_data_bytes = max_data_bytes
        if call_timeout is None:
            self.call_timeout: float | None = None
        else:
            td = validators.to_timedelta("call_timeout", call_timeout)
            validators.check_positive("call_timeout", td)
            self.call_timeout = td.total_seconds()
        self._propagators: list[Propagator] = []
        # Built now so that bad arguments (a malformed URL, a bad worker name) raise here.
        self._first: WorkManager | None = self._new_manager(store)
        self._lock = threading.Lock()
        self._runner: _Runner | None = None
        self._closed = False
        _clients.add(self)

    def _new_manager(self, store: str | Store) -> WorkManager:
        manager = WorkManager(
            store,
            run_work=False,
            known_workers=self._known_workers,
            max_data_bytes=self._max_data_bytes,
            blocked_loop_warning=None,
        )
        for propagator in self._propagators:
            manager.add_propagator(propagator)
        return manager

    def add_propagator(self, propagator: Propagator) -> None:
        """Call ``propagator(carrier)`` at every enqueue, in the calling thread's context
        (its context variables: the current span, a request id), to fill the headers
        stored with the works (``WorkManager.add_propagator``; for OpenTelemetry,
        ``opentelemetry.propagate.inject``).

        :raises InvalidRequestError: if ``propagator`` is not a callable
        """
        runner = self._runner
        manager = runner.manager if runner is not None else self._first
        if manager is None:
            manager = self._new_manager(self._store_arg)
        manager.add_propagator(propagator)  # checks it
        self._propagators.append(propagator)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._runner else "not started"
        return f"SyncClient(store={self.store!r}, {state})"

    @property
    def store(self) -> Store:
        """The store of this process's manager."""
        runner = self._runner
        if runner is not None and runner.pid == os.getpid():
            return runner.manager.store
        return (self._first or self._new_manager(self._store_arg)).store

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- the loop thread

    def _started(self, operation: str) -> _Runner:
        """This process's runner, started if need be (one thread starts it; the others
        wait for it)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:  # an event loop's thread (the client's own included): blocking would hang it
            raise BlockingCallError(operation)
        runner = self._runner
        if runner is not None and runner.pid == os.getpid() and not self._closed:
            return runner
        with self._lock:
            if self._closed:
                raise _not_running(operation, "the SyncClient is closed; make a new one")
            runner = self._runner
            if runner is not None and runner.pid == os.getpid():
                return runner
            if runner is not None and isinstance(self._store_arg, Store):
                raise _not_running(
                    operation,
                    "a SyncClient given a Store object cannot be used in a forked child "
                    "process; give it a store URL instead",
                )
            # The first start uses the manager built by __init__; a forked child (or a
            # start after a failed one) builds its own, never reusing the parent's.
            manager = self._first or self._new_manager(self._store_arg)
            self._first = None
            runner = _Runner(manager)
            try:
                runner.start()
            except BaseException:
                if isinstance(self._store_arg, Store):
                    self._first = manager  # a manager can be started again
                raise
            self._runner = runner
            # A client dropped without close() still stops its manager and thread.
            weakref.finalize(self, runner.close)
            return runner

    def _call(
        self,
        operation: str,
        make: Callable[[WorkManager], Coroutine[Any, Any, T]],
        *,
        bounded: bool = True,
    ) -> T:
        """Run ``make(manager)`` in the loop thread and block for its result (for at
        most ``call_timeout`` if ``bounded``)."""
        runner = self._started(operation)
        assert runner.loop is not None
        limit = self.call_timeout if bounded else None
        # The manager's task runs in the loop thread: its propagators read this
        # thread's context variables through CALLER_CONTEXT.
        caller = contextvars.copy_context()

        async def call() -> T:
            CALLER_CONTEXT.set(caller)
            return await make(runner.manager)

        future = asyncio.run_coroutine_threadsafe(call(), runner.loop)
        try:
            return future.result(limit)
        except TimeoutError:
            if future.done():
                raise  # the manager's own (wait's timeout)
            future.cancel()
            raise TimeoutError(
                f"{operation} took longer than the SyncClient's call_timeout={limit}s"
            ) from None
        except concurrent.futures.CancelledError:
            # The loop ended under the call: close() from another thread.
            raise _not_running(operation, "the SyncClient was closed during the call") from None
        except BaseException:
            future.cancel()  # KeyboardInterrupt while blocked: stop the call
            raise

    def close(self) -> None:
        """Stop the manager gracefully and end the loop thread; later calls raise
        NotRunningError. Idempotent; also run at interpreter exit."""
        with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
        _clients.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock at the fork: the child's
        # copy would stay locked forever. The parent's runner stays in place (its pid
        # tells the child not to use it).
        self._lock = threading.Lock()

    # -- enqueue

    def enqueue(self, *requests: OneTimeWorkRequest | PeriodicWorkRequest) -> None:
        """Store the requests atomically (all or none); returns once they are durable.

        :raises InvalidRequestError: for an invalid request (nothing is stored)
        :raises UnknownWorkerError: for a worker name not in ``known_workers``
        :raises NotRunningError: after :meth:`close`
        """
        return self._call("enqueue", lambda m: m.enqueue(*requests))

    def enqueue_unique_work(
        self, name: str, policy: ExistingWorkPolicy | str, *requests: OneTimeWorkRequest
    ) -> bool:
        """Enqueue one-time works under a unique name, as ``policy`` (KEEP, REPLACE,
        APPEND, APPEND_OR_REPLACE) says; see :meth:`WorkManager.enqueue_unique_work`.

        :return: whether the requests were enqueued (False: KEEP kept the existing work)
        :raises InvalidRequestError: for an invalid name, policy or request
        """
        return self._call(
            "enqueue_unique_work", lambda m: m.enqueue_unique_work(name, policy, *requests)
        )

    def enqueue_unique_periodic_work(
        self, name: str, policy: ExistingPeriodicWorkPolicy | str, request: PeriodicWorkRequest
    ) -> bool:
        """Enqueue a periodic work under a unique name (KEEP, CANCEL_AND_REENQUEUE,
        UPDATE); see :meth:`WorkManager.enqueue_unique_periodic_work`.

        :return: whether the request was enqueued or applied
        """
        return self._call(
            "enqueue_unique_periodic_work",
            lambda m: m.enqueue_unique_periodic_work(name, policy, request),
        )

    def enqueue_chain(self, *steps: OneTimeWorkRequest | Sequence[OneTimeWorkRequest]) -> None:
        """Enqueue a chain in one transaction: each step (a request, or a sequence of
        requests run in parallel) starts once every work of the step before has
        succeeded, with their outputs merged into its inputs
        (``manager.begin_with(a).then(b, c).enqueue()``).

        :raises InvalidRequestError: for no step, an empty step or an invalid request
        """
        groups = [(s,) if isinstance(s, OneTimeWorkRequest) else tuple(s) for s in steps]
        if not groups:
            raise InvalidRequestError("steps", (), "a chain needs at least one step")

        async def enqueue(manager: WorkManager) -> None:
            chain = manager.begin_with(*groups[0])
            for group in groups[1:]:
                chain = chain.then(*group)
            await chain.enqueue()

        return self._call("enqueue_chain", enqueue)

    def update_work(self, request: OneTimeWorkRequest | PeriodicWorkRequest) -> UpdateResult:
        """Give the work with ``request.id`` the spec of ``request``; see
        :meth:`WorkManager.update_work`.

        :raises InvalidRequestError: for an unknown id or an invalid request
        """
        return self._call("update_work", lambda m: m.update_work(request))

    # -- queries

    def get_work_info(self, work_id: uuid.UUID | str) -> WorkInfo | None:
        """The work's current WorkInfo, or ``None`` for an unknown or pruned id."""
        return self._call("get_work_info", lambda m: m.get_work_info(work_id))

    def get_work_infos(self, query: WorkQuery) -> list[WorkInfo]:
        """WorkInfos of the works ``query`` selects, oldest first."""
        return self._call("get_work_infos", lambda m: m.get_work_infos(query))

    def wait(self, work_id: uuid.UUID | str, timeout: timedelta | float | None = None) -> WorkInfo:
        """Block until the work is SUCCEEDED, FAILED or CANCELLED and return its WorkInfo.

        ``call_timeout`` does not apply: ``timeout`` alone bounds the wait.

        :param timeout: give up after this long (real time; ``None``: wait as long as
            it takes)
        :raises TimeoutError: if the timeout passes first
        :raises InvalidRequestError: for an unknown id
        """
        return self._call("wait", lambda m: m.wait(work_id, timeout=timeout), bounded=False)

    # -- cancellation

    def cancel_work_by_id(self, work_id: uuid.UUID | str) -> bool:
        """Cancel a work (stopping it if it runs). Returns False if it was unknown or
        already finished."""
        return self._call("cancel_work_by_id", lambda m: m.cancel_work_by_id(work_id))

    def cancel_unique_work(self, name: str) -> int:
        """Cancel every unfinished work under the unique name; returns how many."""
        return self._call("cancel_unique_work", lambda m: m.cancel_unique_work(name))

    def cancel_all_work_by_tag(self, tag: str) -> int:
        """Cancel every unfinished work with this tag; returns how many."""
        return self._call("cancel_all_work_by_tag", lambda m: m.cancel_all_work_by_tag(tag))

    # -- pausing workers

    def pause_worker(self, name: str) -> None:
        """Pause the worker ``name`` in every process using the store, durably: its due
        works stay ENQUEUED until :meth:`resume_worker` (see
        :meth:`WorkManager.pause_worker`). Any valid name is accepted unless
        ``known_workers`` was given.

        :raises UnknownWorkerError: for a name not in ``known_workers``
        """
        return self._call("pause_worker", lambda m: m.pause_worker(name))

    def resume_worker(self, name: str) -> None:
        """Resume the worker ``name`` in every process: its due works start at once."""
        return self._call("resume_worker", lambda m: m.resume_worker(name))

    def paused_workers(self) -> frozenset[str]:
        """The names of the paused workers."""
        return self._call("paused_workers", lambda m: m.paused_workers())

    def run_again(self, work_id: uuid.UUID | str) -> WorkInfo:
        """Enqueue a FAILED or CANCELLED work again as a new work with the same spec
        (see :meth:`WorkManager.run_again`); returns the new work."""
        return self._call("run_again", lambda m: m.run_again(work_id))

    def run_now(self, work_id: uuid.UUID | str) -> WorkInfo:
        """Make an ENQUEUED work due now (see :meth:`WorkManager.run_now`)."""
        return self._call("run_now", lambda m: m.run_now(work_id))


def _not_running(operation: str, why: str) -> NotRunningError:
    """A NotRunningError saying ``why`` (instead of pointing to ``async with``)."""
    error = NotRunningError(operation, "closed")
    error.args = (f"cannot {operation}: {why}",)
    return error


#: Every open client, to close at exit and to fix up in a forked child.
_clients: weakref.WeakSet[SyncClient] = weakref.WeakSet()


def _close_all() -> None:
    for client in list(_clients):
        client.close()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
