"""Pausing and resuming a worker name, durably and for every process using the store
(semantics 47), and what holds a work back (``explain``, ``WorkInfo.held_by``: semantics
47, 50): the methods :class:`~wm_async.WorkManager` inherits."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .._core import validators
from .._core.errors import UnknownWorkerError
from .._core.explanation import WorkExplanation
from .._core.mergers import COMBINE_WORKER
from .._core.model import WorkInfo, WorkState
from .operations import work_key

if TYPE_CHECKING:
    from .._clock import Clock
    from .._core.record import WorkRecord
    from .._runtime.constraints import SignalBoard
    from .._runtime.hooks import TestHooks
    from .._runtime.services import Services
    from .._runtime.workers import WorkerTable
    from ..stores import Store


class WorkerPause:
    """``pause_worker``, ``resume_worker``, ``paused_workers`` and ``explain`` of a
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
        max_concurrency: int
        _hooks: TestHooks
        _signals: SignalBoard

    def _infos(self, records: Sequence[WorkRecord]) -> list[WorkInfo]:
        """The WorkInfos of ``records``, with ``held_by`` where something holds them."""
        info = self._services.holds.info
        return [info(r) for r in records]

    async def explain(self, work_id: uuid.UUID | str) -> WorkExplanation | None:
        """Why a work is not running (or what it is doing), or ``None`` for an unknown id.

        It names the delay it waits out, each needed signal that does not hold now and
        why, whether its worker is paused or at its ``max_running`` or ``rate_limit``,
        and whether the concurrency limit is reached.
        """
        self._require("explain")
        with self._serving("explain"):
            found = await self._store.get([work_key(work_id)])
            paused = await self._store.paused_workers() if found else frozenset()
        if not found:
            return None
        record = found[0]
        now = self._clock.now()
        unmet: dict[str, str] = {}
        if not self._hooks.ignores_signals(record.id):
            for name in sorted(record.signal_names):
                if name in self._signals.blocked or not self._signals.is_registered(name):
                    unmet[name] = self._signals.describe(name)
        due = record.next_run_at if record.state is WorkState.ENQUEUED else None
        stats = self._services.scheduler.statistics()
        capacity_full = stats["claimable"] == 0
        info = self._services.holds.info(record, paused=paused)
        return WorkExplanation.build(
            info,
            now=now,
            due=due,
            unmet_signals=unmet,
            capacity_full=capacity_full,
            worker_paused=record.worker in paused,
            held_by=info.held_by,
        )

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
