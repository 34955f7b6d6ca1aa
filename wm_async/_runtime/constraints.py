"""The signal board: which signals exist, which ones works wait on, and their values.

One watcher task per signal that some unfinished work needs (never per work): it awaits
``wait_changed()`` and reports each change, so parked work costs nothing until a signal
it needs changes. Signals nobody needs are not watched, so an unused built-in (say the
network probe) never polls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._clock import Clock
from .._core.model import (
    SIGNAL_BATTERY_NOT_LOW,
    SIGNAL_CHARGING,
    SIGNAL_DEVICE_IDLE,
    SIGNAL_NETWORK,
    SIGNAL_STORAGE_NOT_LOW,
    StopReason,
)
from ..signals import (
    Predicate,
    Signal,
    bind_clock,
)

logger = logging.getLogger("wm_async.signals")

_STOP_REASONS: Final = {
    SIGNAL_NETWORK: StopReason.CONSTRAINT_CONNECTIVITY,
    SIGNAL_CHARGING: StopReason.CONSTRAINT_CHARGING,
    SIGNAL_BATTERY_NOT_LOW: StopReason.CONSTRAINT_BATTERY_NOT_LOW,
    SIGNAL_STORAGE_NOT_LOW: StopReason.CONSTRAINT_STORAGE_NOT_LOW,
    SIGNAL_DEVICE_IDLE: StopReason.CONSTRAINT_DEVICE_IDLE,
}


def stop_reason_for(name: str) -> StopReason:
    """The stop reason recorded when the signal ``name`` turns false under a run."""
    if name.startswith("network_"):
        return StopReason.CONSTRAINT_CONNECTIVITY
    return _STOP_REASONS.get(name, StopReason.CONSTRAINT_SIGNAL)


def _read(name: str, signal: Signal) -> bool:
    try:
        value: object = signal.value  # app code: may raise or return anything
    except Exception:
        logger.exception("signal %s: reading its value failed; counts as false", name)
        return False
    if not isinstance(value, bool):
        logger.warning("signal %s: value %r is not a bool; counts as false", name, value)
        return False
    return value


class SignalBoard:
    """Registered signals, their watchers and the set of blocked signal names.

    :param clock: bound to clock-aware signals (Predicate, TimeWindow)
    :param on_change: called with ``(name, value)`` after a watched signal changes
    """

    def __init__(self, clock: Clock, on_change: Callable[[str, bool], None]) -> None:
        self._clock = clock
        self._on_change = on_change
        self._signals: dict[str, Signal] = {}
        self._values: dict[str, bool] = {}
        self._watchers: dict[str, anyio.CancelScope] = {}
        self._in_use: set[str] = set()
        self._blocked: frozenset[str] = frozenset()
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()

    def __repr__(self) -> str:
        return f"SignalBoard(watched={sorted(self._watchers)}, blocked={sorted(self._blocked)})"

    @property
    def blocked(self) -> frozenset[str]:
        """Names that unfinished works need and that are not true right now."""
        return self._blocked

    def is_registered(self, name: str) -> bool:
        """Whether a signal is registered under ``name``."""
        return name in self._signals

    def register(self, name: str, signal: Signal) -> None:
        """Add or replace a signal; a watched one is re-watched with the new signal."""
        bind_clock(signal, self._clock)
        self._signals[name] = signal
        scope = self._watchers.pop(name, None)
        if scope is not None:
            scope.cancel()
        self._values.pop(name, None)
        if name in self._in_use:
            self._start_watcher(name)
        self._recompute()

    def require(self, names: Iterable[str]) -> None:
        """Note that unfinished works need these signals; watch the new ones."""
        new = [n for n in names if n not in self._in_use]
        if not new:
            return
        self._in_use.update(new)
        for name in new:
            self._start_watcher(name)
        self._recompute()

    def _start_watcher(self, name: str) -> None:
        if self._tg is None or name not in self._signals or name in self._watchers:
            return
        scope = anyio.CancelScope()
        self._watchers[name] = scope
        self._tg.start_soon(
            self._watch, name, self._signals[name], scope, name=f"wm_async signal {name!r}"
        )

    def prepare(self) -> None:
        """Forget the previous start's :meth:`stop` (called as the manager starts).

        A stop made before :meth:`run` begins still ends it: a shutdown can overtake a
        standby's takeover, which starts the board afterwards."""
        self._stop = anyio.Event()

    def stop(self) -> None:
        """End :meth:`run` and its watchers (at once if it has not begun yet)."""
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the watcher tasks until :meth:`stop`."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for name in sorted(self._in_use):
                self._start_watcher(name)
            task_status.started()
            try:
                await self._stop.wait()
            finally:
                self._tg = None
                self._watchers.clear()
                self._values.clear()
                tg.cancel_scope.cancel()

    async def _watch(self, name: str, signal: Signal, scope: anyio.CancelScope) -> None:
        with scope:
            self._set(name, _read(name, signal))
            while True:
                try:
                    await signal.wait_changed()
                except Exception:
                    # A broken signal must not take the manager down: it reads as false
                    # and is retried after a pause.
                    logger.exception("signal %s: wait_changed() failed; retrying", name)
                    self._set(name, False)
                    await self._clock.sleep_until(self._clock.now() + 1.0, anyio.Event())
                self._set(name, _read(name, signal))

    def _set(self, name: str, value: bool) -> None:
        if self._values.get(name) is value:
            return
        self._values[name] = value
        logger.info("signal %s is now %s", name, value)
        self._recompute()
        self._on_change(name, value)

    def _recompute(self) -> None:
        self._blocked = frozenset(n for n in self._in_use if self._values.get(n) is not True)

    def describe(self, name: str) -> str:
        """Why ``name`` does not hold, in words (for ``explain``)."""
        signal = self._signals.get(name)
        if signal is None:
            return "no signal is registered under this name"
        if name not in self._values:
            return "not evaluated yet"
        if isinstance(signal, Predicate) and signal.last_error:
            return f"false: {signal.last_error}"
        return "false" if not self._values[name] else "true"
