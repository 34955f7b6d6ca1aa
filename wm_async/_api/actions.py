"""Running a finished work again, and running a waiting work now (semantics 51): the
methods :class:`~wm_async.WorkManager` inherits (the dashboard's "run again" and "run
now")."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .._core import lifecycle
from .._core.data import EMPTY_DATA, Data
from .._core.errors import InvalidRequestError, UnknownWorkerError
from .._core.ids import new_id
from .._core.model import StopReason, WorkInfo, WorkState
from .._core.record import WorkRecord, evolve, first_period_due, id_text
from .operations import work_key

if TYPE_CHECKING:
    from .._clock import Clock
    from .._runtime.services import Services
    from ..stores import Store
    from .operations import Operations

#: The states a work may be run again from.
_AGAIN: frozenset[WorkState] = frozenset({WorkState.FAILED, WorkState.CANCELLED})


_EMPTY: Data = EMPTY_DATA  # type: ignore[assignment]  # read-only, shared


def fresh_copy(record: WorkRecord, *, now: float) -> WorkRecord:
    """A new ENQUEUED work with ``record``'s spec (worker, input, tags, constraints,
    delay, backoff, timeout, attempts limit, priority, unique name, schedule): a new id,
    no attempt yet, due its initial delay from ``now`` (a periodic one: its first
    period, semantics 3)."""
    start = now + record.initial_delay
    due = start if record.periodic is None else first_period_due(record.periodic, start)
    return evolve(
        record,
        id=id_text(new_id()),
        generation=0,
        enqueued_at=now,
        state=WorkState.ENQUEUED,
        run_attempt_count=0,
        next_run_at=due,
        last_enqueue_time=now,
        started_at=None,
        finished_at=None,
        output=_EMPTY,
        progress=_EMPTY,
        stop_reason=StopReason.NOT_STOPPED,
        error=None,
        period_count=0,
        owner=None,
    )


class WorkActions:
    """``run_again`` and ``run_now`` of a :class:`~wm_async.WorkManager` (which is
    one)."""

    if TYPE_CHECKING:
        _store: Store
        _clock: Clock
        _services: Services
        _ops: Operations
        _require: Callable[[str], None]
        _serving: Callable[[str], AbstractContextManager[None]]

        def _is_known(self, name: str) -> bool: ...

    async def run_again(self, work_id: uuid.UUID | str) -> WorkInfo:
        """Enqueue a FAILED or CANCELLED work again, as a **new work** with the same
        spec (semantics 51): a new id, no attempt counted, due its initial delay from
        now, under the same unique name. The original stays as it finished (a finished
        work never runs again), and so do the dependents it failed or cancelled.

        :return: the new work
        :raises InvalidRequestError: for an unknown id, a work that is not FAILED or
            CANCELLED, a chained work whose prerequisites have not all succeeded (run
            the failed one again instead), or a unique name another unfinished work
            holds
        :raises UnknownWorkerError: if the worker is neither registered nor in
            ``known_workers`` (as for :meth:`enqueue`)
        :raises NotRunningError: if the manager is not running
        """
        self._require("run_again")
        key = work_key(work_id)
        with self._serving("run_again"):
            found = await self._store.get([key])
            if not found:
                raise InvalidRequestError("id", key, "no such work")
            record = found[0]
            if record.state not in _AGAIN:
                raise InvalidRequestError(
                    "id",
                    key,
                    f"only a FAILED or CANCELLED work can run again; it is {record.state.value}",
                )
            if not self._is_known(record.worker):
                raise UnknownWorkerError(record.worker)
            pids = [p for p, w in await self._store.edges([key]) if w == key]
            if pids:
                prerequisites = {r.id: r for r in await self._store.get(pids)}
                waiting = [
                    p
                    for p in pids
                    if getattr(prerequisites.get(p), "state", None) is not WorkState.SUCCEEDED
                ]
                if waiting:
                    raise InvalidRequestError(
                        "id",
                        key,
                        f"its prerequisite {waiting[0]} did not succeed; run "
                        "that one again (this work would miss its output)",
                    )
            new = fresh_copy(record, now=self._clock.now())
            written = await self._insert(new)
        services = self._services
        services.signals.require(new.signal_names)
        services.publish(written)
        services.scheduler.wake()
        return new.to_info()

    async def _insert(self, new: WorkRecord) -> list[WorkRecord]:
        name = new.unique_name
        if name is None:
            return await self._store.insert([new])

        def plan(existing: list[WorkRecord], leaves: list[WorkRecord]) -> lifecycle.UniquePlan:
            if any(not r.state.is_finished for r in existing):
                return lifecycle.UniquePlan()
            return lifecycle.UniquePlan(inserts=(new,))

        decided, written = await self._store.enqueue_unique(name, plan)
        if not decided.inserts:
            raise InvalidRequestError(
                "unique_name", name, "an unfinished work holds the name; cancel it first"
            )
        return written

    async def run_now(self, work_id: uuid.UUID | str) -> WorkInfo:
        """Make an ENQUEUED work due now, skipping what is left of its initial delay,
        backoff or period (semantics 51). Nothing else is skipped: its constraints, a
        paused worker and ``max_concurrency`` still hold it back, and its attempt count
        is unchanged. A work already due is left as it is.

        :return: the work as it is now
        :raises InvalidRequestError: for an unknown id or a work that is not ENQUEUED
        :raises NotRunningError: if the manager is not running
        """
        self._require("run_now")
        key = work_key(work_id)
        with self._serving("run_now"):
            found = await self._store.get([key])
        if not found:
            raise InvalidRequestError("id", key, "no such work")
        if found[0].state is not WorkState.ENQUEUED:
            raise InvalidRequestError(
                "id", key, f"only an ENQUEUED work can run now; it is {found[0].state.value}"
            )
        return await self._ops.apply_one(key, lambda r, now: lifecycle.delay_met(r, now=now))
