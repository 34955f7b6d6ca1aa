"""What holds back due works, as this process knows it (semantics 47, 50): the paused
worker names it last read, and the workers whose limit its scheduler's last claim found
full. ``WorkInfo.held_by`` (``get_work_info``, ``get_work_infos``, ``explain()`` and the
snapshots of ``watch()``) comes from here, without reading the store; a change is told
to the event hub, which gives watchers a new snapshot of the works it holds or frees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .._core.limits import HeldBy
from .._core.model import WorkState

if TYPE_CHECKING:
    from .._clock import Clock
    from .._core.model import WorkInfo
    from .._core.record import WorkRecord


class Holds:
    """The paused workers and the limits that hold works back in this process.

    :param clock: the manager's clock (a limit holds only works due now)
    """

    __slots__ = ("_clock", "_limited", "_paused", "changed")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._paused: frozenset[str] = frozenset()
        self._limited: Mapping[str, HeldBy] = {}
        #: Called with the worker names whose hold changed.
        self.changed: Callable[[frozenset[str]], None] = lambda workers: None

    def __repr__(self) -> str:
        return f"Holds(paused={sorted(self._paused)!r}, limited={dict(self._limited)!r})"

    @property
    def paused(self) -> frozenset[str]:
        """The paused worker names, as this process last read them (at start, on its own
        pause and resume, and when another process's write may have changed them)."""
        return self._paused

    @paused.setter
    def paused(self, names: frozenset[str]) -> None:
        before, self._paused = self._paused, names
        if before != names:
            self.changed(before ^ names)

    @property
    def limited(self) -> Mapping[str, HeldBy]:
        """The limited workers whose due works the scheduler's last claim held back, and
        by what (empty in a process that does not schedule)."""
        return self._limited

    def claimed(self, held: Mapping[str, HeldBy]) -> None:
        """Take what a claim found held back (:attr:`~wm_async.stores.Claimed.held`)."""
        before = self._limited
        if held == before:
            return
        self._limited = held
        self.changed(frozenset(w for w in {*before, *held} if before.get(w) != held.get(w)))

    def forget_limits(self) -> None:
        """A new start: no claim has held anything back yet (no watcher is open)."""
        self._limited = {}

    def held_by(
        self,
        worker: str,
        state: WorkState,
        next_run_at: float | None,
        *,
        paused: frozenset[str] | None = None,
    ) -> HeldBy | None:
        """What holds back a work of ``worker`` in ``state``, due at ``next_run_at``: its
        worker paused (due or not), or, due now, its limit as the last claim found it.

        :param paused: the paused names to go by (default: :attr:`paused`)
        """
        if state is not WorkState.ENQUEUED or next_run_at is None:
            return None
        if worker in (self._paused if paused is None else paused):
            return HeldBy.PAUSED
        held = self._limited.get(worker)
        if held is None or next_run_at > self._clock.now():
            return None
        return held

    def info(self, record: WorkRecord, *, paused: frozenset[str] | None = None) -> WorkInfo:
        """The WorkInfo of ``record``, with ``held_by`` where something holds it."""
        if not self._paused and not self._limited and not paused:
            return record.to_info()
        return record.to_info(
            self.held_by(record.worker, record.state, record.next_run_at, paused=paused)
        )
