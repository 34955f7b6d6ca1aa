"""Signals: async booleans that constraints wait on.

A work's constraints name signals (``Constraints(signals={"db_up"})``, or the built-in
fields that map to ``network``, ``charging``, ``battery_not_low``, ``storage_not_low``,
``device_idle``). The manager watches each registered signal with one task, whatever the
number of works waiting on it: due work whose signals are false is parked (it costs
nothing) and is looked at again only when one of them changes; a running work whose
signal turns false is stopped and re-enqueued with the constraint's stop reason.

Writing a signal takes a few lines: anything with a ``value`` property and an async
``wait_changed()`` method (which may return spuriously) is a :class:`Signal`::

    class DatabaseUp:
        def __init__(self) -> None:
            self.value = False
            self._changed = anyio.Event()

        async def wait_changed(self) -> None:
            await self._changed.wait()

The built-in sources need no psutil. On Linux they read ``/proc`` and ``/sys`` directly
(each reader takes the path to read, so tests inject fake files). Elsewhere:

- ``network`` (``NetworkType.CONNECTED``) asks the operating system for a route to the
  internet (a UDP socket "connected" to a documentation address: no packet is sent), on
  macOS, Windows and the BSDs alike;
- ``device_idle`` reads the load average with :func:`os.getloadavg` (Unix; on Windows it
  is never true: register your own);
- ``charging`` and ``battery_not_low`` find no ``/sys/class/power_supply`` and count the
  machine as on mains power (register your own on a laptop);
- ``storage_not_low`` uses :func:`shutil.disk_usage`, which is portable.

``NetworkType.UNMETERED``, ``NOT_ROAMING`` and ``METERED`` have no built-in signal on any
platform (no operating system API tells them portably): a work that needs one is refused
at enqueue until the app registers ``network_unmetered`` (or ``network_not_roaming``,
``network_metered``) with :meth:`WorkManager.register_signal`.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import shutil
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio

from ._clock import (
    Clock,
    SystemClock,
)
from ._core import validators
from ._core.errors import InvalidRequestError

__all__ = (
    "Flag",
    "Predicate",
    "Signal",
    "TimeWindow",
    "all_of",
    "any_of",
    "battery_level",
    "battery_not_low",
    "bind_clock",
    "charging",
    "default_signals",
    "device_idle",
    "has_default_route",
    "has_internet_route",
    "negate",
    "network",
    "on_mains_power",
    "storage_not_low",
)

logger = logging.getLogger("wm_async.signals")


@runtime_checkable
class Signal(Protocol):
    """An async boolean condition."""

    @property
    def value(self) -> bool:
        """The current value."""
        ...

    async def wait_changed(self) -> None:
        """Return when the value may have changed (spurious returns are allowed)."""
        ...


class _ClockBound:
    """Signals that measure time use the manager's clock (a virtual one in tests)."""

    _clock: Clock = SystemClock()

    def bind_clock(self, clock: Clock) -> None:
        """Called by the manager when the signal is registered."""
        self._clock = clock


def bind_clock(signal: Signal, clock: Clock) -> None:
    """Give ``signal`` (and the signals it combines) the manager's clock."""
    if isinstance(signal, _ClockBound):
        signal.bind_clock(clock)


class Flag:
    """A signal the app sets and clears: ``flag.set()``, ``flag.clear()``.

    :param value: the initial value
    """

    def __init__(self, value: bool = False) -> None:
        self._value = bool(value)
        self._changed = anyio.Event()

    def __repr__(self) -> str:
        return f"Flag({self._value})"

    @property
    def value(self) -> bool:
        """The current value."""
        return self._value

    def set(self) -> None:
        """Make the flag true."""
        self._update(True)

    def clear(self) -> None:
        """Make the flag false."""
        self._update(False)

    def _update(self, value: bool) -> None:
        if value != self._value:
            self._value = value
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_changed(self) -> None:
        """Return at the next set/clear that changes the value."""
        await self._changed.wait()


CheckFn = Callable[[], bool | Awaitable[bool]]


class Predicate(_ClockBound):
    """A signal computed by polling a sync or async callable every ``every``.

    One poller runs per Predicate, however many works wait on it. A check that raises,
    returns a non-bool or takes longer than ``timeout`` counts as false; the error is
    logged once per change and kept in :attr:`last_error` (``manager.explain`` shows it).
    Sync callables run in a worker thread.

    :param fn: the check
    :param every: the polling interval
    :param timeout: the longest a check may take
    :param name: a name for logs (defaults to the callable's)
    """

    def __init__(
        self,
        fn: CheckFn,
        *,
        every: timedelta | float = timedelta(seconds=5),
        timeout: timedelta | float = timedelta(seconds=10),
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise InvalidRequestError("fn", fn, "expected a callable")
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004  # objects with an async __call__
        )
        self.every = _positive("every", every)
        self.timeout = _positive("timeout", timeout)
        self.name = name or getattr(fn, "__name__", repr(fn))
        self._value = False
        self._checked = False
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"Predicate({self.name}, every={self.every}s, value={self._value})"

    @property
    def value(self) -> bool:
        """The last check's result (false until the first check)."""
        return self._value

    async def check(self) -> bool:
        """Run the check once now, update :attr:`value` and return it."""
        error: str | None = None
        result: object = False
        with anyio.move_on_after(self.timeout) as scope:
            try:
                if self._is_async:
                    result = await self._fn()  # type: ignore[misc]  # is_async checked
                else:
                    result = await anyio.to_thread.run_sync(self._fn, abandon_on_cancel=True)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:  # noqa: BLE001  # any failing check means "not met"
                error = f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            error = f"check timed out after {self.timeout}s"
        elif error is None and not isinstance(result, bool):
            error = f"check returned {type(result).__name__}, expected bool"
        value = result is True and error is None
        if error != self.last_error:
            if error is not None:
                logger.warning("signal %s check failed (counts as false): %s", self.name, error)
            self.last_error = error
        self._value = value
        self._checked = True
        return value

    async def wait_changed(self) -> None:
        """Poll until the value changes (the first call checks at once)."""
        if not self._checked:
            before = self._value
            if await self.check() != before:
                return
        while True:
            wake = anyio.Event()
            await self._clock.sleep_until(self._clock.now() + self.every, wake)
            before = self._value
            if await self.check() != before:
                return


def _positive(field: str, value: timedelta | float) -> float:
    td = validators.to_timedelta(field, value)
    validators.check_positive(field, td)
    return td.total_seconds()


class TimeWindow(_ClockBound):
    """True during a daily local-time window, e.g. off-peak hours 22:00-06:00.

    The window may cross midnight (``start > end``). Local times are read in
    ``timezone`` with zoneinfo, so the window follows DST changes: on a day whose clocks
    jump past ``start``, the window opens at the first valid instant after it.

    :param start: the local time the window opens
    :param end: the local time it closes
    :param timezone: an IANA timezone name
    """

    def __init__(self, start: time, end: time, *, timezone: str = "UTC") -> None:
        values: tuple[tuple[str, object], ...] = (("start", start), ("end", end))
        for field, value in values:
            if not isinstance(value, time) or value.tzinfo is not None:
                raise InvalidRequestError(field, value, "expected a naive datetime.time")
        if start == end:
            raise InvalidRequestError("end", end, "must differ from start")
        try:
            self._tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidRequestError("timezone", timezone, "unknown IANA timezone") from None
        self.start, self.end, self.timezone = start, end, timezone

    def __repr__(self) -> str:
        return f"TimeWindow({self.start}, {self.end}, timezone={self.timezone!r})"

    def _instant(self, day: date, at: time) -> float:
        """UTC epoch of local ``at`` on ``day``: its first occurrence if the clocks go back,
        the first valid instant after the gap if they jump past it."""
        naive = datetime.combine(day, at)
        ts = naive.replace(tzinfo=self._tz).timestamp()  # fold=0
        if datetime.fromtimestamp(ts, self._tz).replace(tzinfo=None) == naive:
            return ts
        # In a gap: fold=1 lands before the transition and fold=0 after it; the
        # transition is the first instant whose local time is past ``at``.
        lo = naive.replace(tzinfo=self._tz, fold=1).timestamp()
        hi = ts
        while hi - lo > 1e-3:
            mid = (lo + hi) / 2
            if datetime.fromtimestamp(mid, self._tz).replace(tzinfo=None) > naive:
                hi = mid
            else:
                lo = mid
        return float(math.ceil(hi))

    def _boundaries(self, ts: float) -> list[tuple[float, time]]:
        day = datetime.fromtimestamp(ts, self._tz).date()
        return sorted(
            (self._instant(day + timedelta(days=offset), at), at)
            for offset in range(-2, 3)
            for at in (self.start, self.end)
        )

    def value_at(self, ts: float) -> bool:
        """Whether the window is open at UTC epoch ``ts``."""
        last = [at for instant, at in self._boundaries(ts) if instant <= ts][-1]
        return last == self.start

    @property
    def value(self) -> bool:
        """Whether the window is open now."""
        return self.value_at(self._clock.now())

    def next_change(self, ts: float) -> float:
        """The first UTC epoch second after ``ts`` at which the value flips."""
        current = self.value_at(ts)
        for instant, _ in self._boundaries(ts):
            if instant > ts and self.value_at(instant) != current:
                return instant
        return ts + 86_400.0  # unreachable for start != end; a bounded fallback

    async def wait_changed(self) -> None:
        """Sleep until the next boundary."""
        now = self._clock.now()
        await self._clock.sleep_until(self.next_change(now), anyio.Event())


class _Combined(_ClockBound):
    def __init__(self, signals: Sequence[Signal], combine: Callable[[list[bool]], bool]) -> None:
        if not signals:
            raise InvalidRequestError("signals", (), "combine at least one signal")
        for s in signals:
            if not isinstance(s, Signal):
                raise InvalidRequestError("signals", s, "expected Signal objects")
        self._signals = tuple(signals)
        self._combine = combine

    def bind_clock(self, clock: Clock) -> None:
        super().bind_clock(clock)
        for s in self._signals:
            bind_clock(s, clock)

    @property
    def value(self) -> bool:
        """The combined value."""
        return self._combine([s.value for s in self._signals])

    async def wait_changed(self) -> None:
        """Return when any combined signal changes."""
        async with anyio.create_task_group() as tg:

            async def first(signal: Signal) -> None:
                await signal.wait_changed()
                tg.cancel_scope.cancel()

            for s in self._signals:
                tg.start_soon(first, s)


def all_of(*signals: Signal) -> Signal:
    """True while every signal is true."""
    return _Combined(signals, all)


def any_of(*signals: Signal) -> Signal:
    """True while at least one signal is true."""
    return _Combined(signals, any)


def negate(signal: Signal) -> Signal:
    """True while ``signal`` is false."""
    return _Combined([signal], lambda values: not values[0])


# -- built-in sources (Linux /proc and /sys; portable fallbacks elsewhere)


def has_default_route(route_file: str | os.PathLike[str] = "/proc/net/route") -> bool:
    """Whether the kernel's IPv4 or IPv6 routing table has an up default route."""
    try:
        lines = Path(route_file).read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        # Destination 00000000, flags with RTF_UP (0x1)
        if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 0x1:
            return True
    ipv6 = Path(route_file).with_name("ipv6_route")
    try:
        for line in ipv6.read_text().splitlines():
            fields = line.split()
            # destination ::/0, not the loopback device
            if fields and fields[0] == "0" * 32 and fields[1] == "00" and fields[-1] != "lo":
                return True
    except OSError:
        pass
    return False


#: Addresses reserved for documentation (RFC 5737, RFC 3849): routed like any address on
#: the internet, never answered. Connecting a UDP socket to one sends nothing.
_INTERNET_PROBES: Sequence[tuple[socket.AddressFamily, str]] = (
    (socket.AF_INET, "192.0.2.1"),
    (socket.AF_INET6, "2001:db8::1"),
)
_LINUX_ROUTES = "/proc/net/route"


def has_internet_route(
    probes: Sequence[tuple[socket.AddressFamily, str]] = _INTERNET_PROBES,
) -> bool:
    """Whether the operating system has a route to an internet address (IPv4 or IPv6): a
    UDP socket is "connected" to a documentation address, which picks a route and sends
    nothing. Portable (Linux, macOS, Windows, BSD); fails only without any route beyond
    the local network."""
    for family, address in probes:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((address, 9))
                local = sock.getsockname()[0]
        except OSError:
            continue
        if local not in ("0.0.0.0", "::"):
            return True
    return False


def network(
    probe: tuple[str, int] | None = None,
    *,
    every: timedelta | float = timedelta(seconds=5),
    route_file: str | os.PathLike[str] | None = None,
) -> Predicate:
    """``NetworkType.CONNECTED``: a default route exists and, if ``probe`` is given, a TCP
    connection to that host and port succeeds within the check timeout.

    :param route_file: the Linux routing table to read (:func:`has_default_route`); by
        default ``/proc/net/route`` where it exists, and elsewhere (macOS, Windows, BSD)
        the operating system is asked for a route (:func:`has_internet_route`)
    """
    if route_file is None and not Path(_LINUX_ROUTES).exists():

        def routed() -> bool:
            return has_internet_route()
    else:
        routes = _LINUX_ROUTES if route_file is None else route_file

        def routed() -> bool:
            return has_default_route(routes)

    async def connected() -> bool:
        if not await anyio.to_thread.run_sync(routed):
            return False
        if probe is None:
            return True
        try:
            stream = await anyio.connect_tcp(*probe)
        except OSError:
            return False
        await stream.aclose()
        return True

    return Predicate(connected, every=every, name="network")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _supplies(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() or p.is_symlink())
    except OSError:
        return []


def _is_system_battery(supply: Path) -> bool:
    # HID peripherals (mice, headsets) report their batteries with scope "Device".
    return _read(supply / "type") == "Battery" and _read(supply / "scope") != "Device"


def on_mains_power(root: str | os.PathLike[str] = "/sys/class/power_supply") -> bool:
    """True if an external supply is online, a battery charges or is full, or there is no
    battery at all (a server on mains power)."""
    supplies = _supplies(Path(root))
    batteries = [p for p in supplies if _is_system_battery(p)]
    for p in supplies:
        if _read(p / "type") in ("Mains", "USB", "USB_C", "USB_PD") and _read(p / "online") == "1":
            return True
    if not batteries:
        return True
    return any(_read(b / "status") in ("Charging", "Full") for b in batteries)


def battery_level(root: str | os.PathLike[str] = "/sys/class/power_supply") -> float | None:
    """The lowest battery capacity in percent, or None without a battery."""
    levels = []
    for p in _supplies(Path(root)):
        if _is_system_battery(p):
            raw = _read(p / "capacity")
            if raw.isdigit():
                levels.append(float(raw))
    return min(levels) if levels else None


def charging(
    *,
    root: str | os.PathLike[str] = "/sys/class/power_supply",
    every: timedelta | float = timedelta(seconds=30),
) -> Predicate:
    """``requires_charging``: on mains power (see :func:`on_mains_power`)."""
    return Predicate(lambda: on_mains_power(root), every=every, name="charging")


def battery_not_low(
    *,
    threshold: float = 15.0,
    root: str | os.PathLike[str] = "/sys/class/power_supply",
    every: timedelta | float = timedelta(seconds=30),
) -> Predicate:
    """``requires_battery_not_low``: battery at or above ``threshold`` percent, or
    charging, or no battery."""

    def not_low() -> bool:
        level = battery_level(root)
        return level is None or level >= threshold or on_mains_power(root)

    return Predicate(not_low, every=every, name="battery_not_low")


def storage_not_low(
    path: str | os.PathLike[str] = ".",
    *,
    min_free_bytes: int = 256 * 2**20,
    min_free_ratio: float = 0.02,
    every: timedelta | float = timedelta(seconds=60),
) -> Predicate:
    """``requires_storage_not_low``: the volume holding ``path`` (the store's file) has at
    least ``min_free_bytes`` and ``min_free_ratio`` of its size free."""

    def not_low() -> bool:
        usage = shutil.disk_usage(path)
        return usage.free >= min_free_bytes and usage.free >= min_free_ratio * usage.total

    return Predicate(not_low, every=every, name="storage_not_low")


def device_idle(
    *,
    max_load_per_cpu: float = 0.3,
    loadavg_file: str | os.PathLike[str] | None = None,
    cpus: int | None = None,
    every: timedelta | float = timedelta(seconds=30),
) -> Predicate:
    """``requires_device_idle``: the 1-minute load average per CPU is below a threshold.

    :param loadavg_file: a file in ``/proc/loadavg``'s format to read; by default
        :func:`os.getloadavg` (Linux, macOS, BSD; Windows has none, so there the signal is
        false and logs why: register your own)
    """
    count = cpus or os.cpu_count() or 1

    def idle() -> bool:
        if loadavg_file is None:
            load = os.getloadavg()[0]
        else:
            load = float(Path(loadavg_file).read_text().split()[0])
        return load / count < max_load_per_cpu

    return Predicate(idle, every=every, name="device_idle")


def default_signals(store_path: str | None) -> dict[str, Signal]:
    """The built-in signals a manager registers under their constraint names."""
    return {
        "network": network(),
        "charging": charging(),
        "battery_not_low": battery_not_low(),
        "storage_not_low": storage_not_low(store_path or "."),
        "device_idle": device_idle(),
    }
