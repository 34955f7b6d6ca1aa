"""Pausing and resuming a worker name, durably and for every process using the store
(semantics 47): the methods :class:`~wm_async.WorkManager` inherits."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .._core import validators
from .._core.errors import UnknownWorkerError
from .._core.mergers import COMBINE_WORKER

if TYPE_CHECKING:
    from .._clock import Clock
    from .._runtime.services import Services
    from .._runtime.workers import WorkerTable
    from ..stores import Store


class WorkerPause:
    """``pause_worker``, ``resume_worker`` and ``paused_workers`` of a
    :class:`~wm_async.WorkManager` (which is one)."""

    if TYPE_CHECKING:
        _store: Store
        _clock: Clock
        _services: Services
        _workers: WorkerTable
        _require: Callable[[str], None]
        _serving: Callable[[str], AbstractContextManager[None]]
        known_workers: frozenset[str] | None
        run_work: bool

    def _is_known(self, name: str) -> bool:
        # The rule of enqueue: registered, or in known_workers; a producer without
        # known_workers knows any name.
        if name != COMBINE_WORKER and self._workers.find(name) is not None:
            return True
        if self.known_workers is not None:
            return name in self.known_workers
        return not self.run_work

    async def pause_worker(self, name: str) -> None:
        """Pause the worker ``name`` in every process using the store, durably (it stays
        paused across restarts until :meth:`resume_worker`). Its due works stay ENQUEUED
        (``explain()`` says the worker is paused), works already running finish, and
        new ones can still be enqueued. Idempotent.

        :raises InvalidRequestError: if ``name`` is not a valid worker name
        :raises UnknownWorkerError: if the name is neither registered nor in
            ``known_workers`` (a producer without ``known_workers`` accepts any name)
        :raises NotRunningError: if the manager is not started
        :raises StoreError: if the store fails
        """
        validators.check_name("worker", name)
        if not self._is_known(name):
            raise UnknownWorkerError(name)
        self._require("pause_worker")
        with self._serving("pause_worker"):
            await self._store.pause_worker(name, now=self._clock.now())
        services = self._services
        services.paused = services.paused | {name}

    async def resume_worker(self, name: str) -> None:
        """Resume the worker ``name`` in every process using the store: its due works
        are claimed at once (no polling). Resuming a worker that is not paused does
        nothing.

        :raises InvalidRequestError: if ``name`` is not a valid worker name
        :raises UnknownWorkerError: if the name is not paused and neither registered
            nor in ``known_workers``
        :raises NotRunningError: if the manager is not started
        :raises StoreError: if the store fails
        """
        validators.check_name("worker", name)
        self._require("resume_worker")
        with self._serving("resume_worker"):
            if not self._is_known(name) and name not in await self._store.paused_workers():
                raise UnknownWorkerError(name)
            await self._store.resume_worker(name)
        services = self._services
        services.paused = services.paused - {name}
        services.scheduler.wake()

    async def paused_workers(self) -> frozenset[str]:
        """The names of the paused workers, as the store has them now (paused by any
        process).

        :raises NotRunningError: if the manager is not started
        :raises StoreError: if the store fails
        """
        self._require("paused_workers")
        with self._serving("paused_workers"):
            paused = await self._store.paused_workers()
        return paused
