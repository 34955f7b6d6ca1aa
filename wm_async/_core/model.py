"""Public value types: requests, constraints, backoff, results, WorkInfo, queries, enums."""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import attrs

from . import validators
from .data import Data, JSONValue
from .errors import (
    InvalidRequestError,
    StoreCorruptError,
)
from .jsonform import to_json as _json_form
from .limits import HeldBy


class WorkState(enum.Enum):
    """Where a work is in its lifecycle."""

    #: Waiting to run: its delay has not passed, its constraints do not hold, or no capacity
    #: is free. Left by the scheduler (→ RUNNING) or by cancellation (→ CANCELLED).
    ENQUEUED = "ENQUEUED"
    #: A worker is executing it. Ends in SUCCEEDED/FAILED, or back to ENQUEUED on retry,
    #: timeout, lost constraint, shutdown or crash recovery (the attempt counts).
    RUNNING = "RUNNING"
    #: Terminal: the worker succeeded (one-time work only; periodic work re-enqueues).
    SUCCEEDED = "SUCCEEDED"
    #: Terminal: the worker failed, a prerequisite failed, or max_attempts was reached.
    FAILED = "FAILED"
    #: Waiting for prerequisites to succeed (chains). → ENQUEUED when they all succeed.
    BLOCKED = "BLOCKED"
    #: Terminal: cancelled by the app, or a prerequisite was cancelled.
    CANCELLED = "CANCELLED"

    @property
    def is_finished(self) -> bool:
        """True for the terminal states SUCCEEDED, FAILED and CANCELLED."""
        return self in _FINISHED


_FINISHED: Final = frozenset({WorkState.SUCCEEDED, WorkState.FAILED, WorkState.CANCELLED})
UNFINISHED_STATES: Final = frozenset({WorkState.ENQUEUED, WorkState.RUNNING, WorkState.BLOCKED})
FINISHED_STATES: Final = _FINISHED


class StopReason(enum.Enum):
    """Why the last run of a work was stopped before it returned a result."""

    #: The last run was not stopped (or the work never ran).
    NOT_STOPPED = "NOT_STOPPED"
    #: The app cancelled the work while it ran.
    CANCELLED_BY_APP = "CANCELLED_BY_APP"
    #: The run exceeded its timeout; the work was re-enqueued, the attempt counted.
    TIMEOUT = "TIMEOUT"
    #: The manager shut down while the work ran; it runs again on the next start.
    SHUTDOWN = "SHUTDOWN"
    #: The process died while the work ran (found RUNNING at start-up).
    UNKNOWN = "UNKNOWN"
    #: The network constraint stopped holding.
    CONSTRAINT_CONNECTIVITY = "CONSTRAINT_CONNECTIVITY"
    #: The charging constraint stopped holding.
    CONSTRAINT_CHARGING = "CONSTRAINT_CHARGING"
    #: The battery-not-low constraint stopped holding.
    CONSTRAINT_BATTERY_NOT_LOW = "CONSTRAINT_BATTERY_NOT_LOW"
    #: The storage-not-low constraint stopped holding.
    CONSTRAINT_STORAGE_NOT_LOW = "CONSTRAINT_STORAGE_NOT_LOW"
    #: The device-idle constraint stopped holding.
    CONSTRAINT_DEVICE_IDLE = "CONSTRAINT_DEVICE_IDLE"
    #: An app-defined signal stopped holding.
    CONSTRAINT_SIGNAL = "CONSTRAINT_SIGNAL"
    #: PostgreSQL: this process lost the work's lease to another process.
    LEASE_LOST = "LEASE_LOST"


class BackoffPolicy(enum.Enum):
    """How the delay before a retry grows with the number of attempts."""

    #: delay · 2^(n-1), n = attempts so far.
    EXPONENTIAL = "EXPONENTIAL"
    #: delay · n.
    LINEAR = "LINEAR"


class NetworkType(enum.Enum):
    """The network a work needs. Only CONNECTED has a built-in signal; the others map to
    signal names (``network_<type>``) that an app may register."""

    NOT_REQUIRED = "NOT_REQUIRED"
    CONNECTED = "CONNECTED"
    UNMETERED = "UNMETERED"
    NOT_ROAMING = "NOT_ROAMING"
    METERED = "METERED"


class ExistingWorkPolicy(enum.Enum):
    """What ``enqueue_unique_work`` does when works already exist under the name."""

    REPLACE = "REPLACE"
    KEEP = "KEEP"
    APPEND = "APPEND"
    APPEND_OR_REPLACE = "APPEND_OR_REPLACE"


class ExistingPeriodicWorkPolicy(enum.Enum):
    """What ``enqueue_unique_periodic_work`` does when the name is taken."""

    KEEP = "KEEP"
    CANCEL_AND_REENQUEUE = "CANCEL_AND_REENQUEUE"
    UPDATE = "UPDATE"


class UpdateResult(enum.Enum):
    """The outcome of ``update_work``."""

    NOT_APPLIED = "NOT_APPLIED"
    APPLIED_IMMEDIATELY = "APPLIED_IMMEDIATELY"
    APPLIED_FOR_NEXT_RUN = "APPLIED_FOR_NEXT_RUN"


def _to_network(value: NetworkType | str) -> NetworkType:
    return validators.to_enum("required_network", NetworkType, value)


def _to_signals(value: Iterable[str]) -> frozenset[str]:
    return validators.to_names("signals", value)


def _check_bool(instance: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidRequestError(attribute.name, value, "expected True or False")


#: Signal names the built-in constraints map to.
SIGNAL_NETWORK: Final = "network"
SIGNAL_CHARGING: Final = "charging"
SIGNAL_BATTERY_NOT_LOW: Final = "battery_not_low"
SIGNAL_STORAGE_NOT_LOW: Final = "storage_not_low"
SIGNAL_DEVICE_IDLE: Final = "device_idle"


@attrs.frozen(kw_only=True, cache_hash=True)
class Constraints:
    """Conditions that must hold for a work to start, and keep holding while it runs.

    Each condition is a named signal; the built-in fields map to the signals registered by
    default (``network``, ``charging``, ``battery_not_low``, ``storage_not_low``,
    ``device_idle``), and ``signals`` names app-registered ones.

    :ivar required_network: the network the work needs
    :ivar requires_charging: the machine must be on mains power
    :ivar requires_battery_not_low: the battery must not be low
    :ivar requires_storage_not_low: the store's volume must have free space
    :ivar requires_device_idle: the machine must be idle (low load)
    :ivar signals: names of app-registered signals that must all be true
    """

    required_network: NetworkType = attrs.field(
        default=NetworkType.NOT_REQUIRED, converter=_to_network
    )
    requires_charging: bool = attrs.field(default=False, validator=_check_bool)
    requires_battery_not_low: bool = attrs.field(default=False, validator=_check_bool)
    requires_storage_not_low: bool = attrs.field(default=False, validator=_check_bool)
    requires_device_idle: bool = attrs.field(default=False, validator=_check_bool)
    signals: frozenset[str] = attrs.field(default=frozenset(), converter=_to_signals)

    def signal_names(self) -> frozenset[str]:
        """Every signal name this work waits on, built-in and app-defined."""
        if self is NO_CONSTRAINTS:  # the common case, asked several times per run
            return _NO_SIGNALS
        return _signal_names(self)

    def _compute_signal_names(self) -> frozenset[str]:
        names = set(self.signals)
        if self.required_network is NetworkType.CONNECTED:
            names.add(SIGNAL_NETWORK)
        elif self.required_network is not NetworkType.NOT_REQUIRED:
            names.add(f"network_{self.required_network.value.lower()}")
        if self.requires_charging:
            names.add(SIGNAL_CHARGING)
        if self.requires_battery_not_low:
            names.add(SIGNAL_BATTERY_NOT_LOW)
        if self.requires_storage_not_low:
            names.add(SIGNAL_STORAGE_NOT_LOW)
        if self.requires_device_idle:
            names.add(SIGNAL_DEVICE_IDLE)
        return frozenset(names)

    def to_json(self) -> dict[str, object]:
        """The persisted form (only non-default fields)."""
        out: dict[str, object] = {}
        if self.required_network is not NetworkType.NOT_REQUIRED:
            out["required_network"] = self.required_network.value
        for name in (
            "requires_charging",
            "requires_battery_not_low",
            "requires_storage_not_low",
            "requires_device_idle",
        ):
            if getattr(self, name):
                out[name] = True
        if self.signals:
            out["signals"] = sorted(self.signals)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Constraints:
        """Rebuild from :meth:`to_json` output."""
        if not data:
            return NO_CONSTRAINTS
        known = {a.name for a in attrs.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise StoreCorruptError(f"stored constraints have unknown fields {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]  # keys checked above


NO_CONSTRAINTS: Final = Constraints()
_NO_SIGNALS: Final[frozenset[str]] = frozenset()


@functools.lru_cache(maxsize=4096)
def _signal_names(constraints: Constraints) -> frozenset[str]:
    # Constraints are frozen and few distinct ones exist: the claim path asks per work.
    return constraints._compute_signal_names()


def _duration(field: str, value: timedelta | float) -> timedelta:
    out = validators.to_timedelta(field, value)
    validators.check_non_negative(field, out)
    return out


def _backoff_delay(value: timedelta | float) -> timedelta:
    return _duration("backoff.delay", value)


def _backoff_max_delay(value: timedelta | float) -> timedelta:
    return _duration("backoff.max_delay", value)


def _to_policy(value: BackoffPolicy | str) -> BackoffPolicy:
    return validators.to_enum("backoff.policy", BackoffPolicy, value)


@attrs.frozen
class Backoff:
    """Retry delay policy: ``Backoff(BackoffPolicy.LINEAR, timedelta(seconds=10))``.

    :ivar policy: EXPONENTIAL (default) or LINEAR
    :ivar delay: the base delay (default 30 s; zero means retry at once)
    :ivar max_delay: the cap on any single delay (default 5 h)
    """

    policy: BackoffPolicy = attrs.field(default=BackoffPolicy.EXPONENTIAL, converter=_to_policy)
    delay: timedelta = attrs.field(
        default=timedelta(seconds=30),
        converter=_backoff_delay,
    )
    max_delay: timedelta = attrs.field(
        default=timedelta(hours=5),
        converter=_backoff_max_delay,
        kw_only=True,
    )

    def __attrs_post_init__(self) -> None:
        if self.max_delay < self.delay:
            raise InvalidRequestError(
                "backoff.max_delay", self.max_delay, f"must be >= delay ({self.delay})"
            )

    def delay_for(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` runs have failed (attempts >= 1)."""
        base = self.delay.total_seconds()
        n = max(1, attempts)
        if self.policy is BackoffPolicy.LINEAR:
            raw = base * n
        else:
            # 2**(n-1) overflows a float past ~1024 attempts; the cap applies long before.
            raw = base * 2.0 ** min(n - 1, 1000)
        return min(raw, self.max_delay.total_seconds())


DEFAULT_BACKOFF: Final = Backoff()


def _to_tags(value: Iterable[str]) -> frozenset[str]:
    return validators.to_names("tags", value)


@attrs.frozen(kw_only=True)
class Periodicity:
    """How a periodic work repeats: an interval (with a flex window) or a cron schedule.

    :ivar interval: the repeat interval (``None`` for cron schedules)
    :ivar flex: the flex window at the end of each interval
    :ivar cron: a 5-field cron expression, if scheduled by cron
    :ivar timezone: the IANA timezone the cron expression is read in
    """

    interval: timedelta | None = None
    flex: timedelta | None = None
    cron: str | None = None
    timezone: str | None = None

    def to_json(self) -> dict[str, object]:
        """The persisted form."""
        if self.cron is not None:
            return {"cron": self.cron, "timezone": self.timezone or "UTC"}
        assert self.interval is not None
        assert self.flex is not None
        return {"interval": self.interval.total_seconds(), "flex": self.flex.total_seconds()}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Periodicity:
        """Rebuild from :meth:`to_json` output."""
        if "cron" in data:
            return cls(cron=str(data["cron"]), timezone=str(data.get("timezone", "UTC")))
        return cls(
            interval=timedelta(seconds=float(data["interval"])),  # type: ignore[arg-type]
            flex=timedelta(seconds=float(data["flex"])),  # type: ignore[arg-type]
        )


class ResultKind(enum.Enum):
    """What a worker's :class:`Result` asks for."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    RETRY = "RETRY"


def _to_kind(value: ResultKind | str) -> ResultKind:
    return validators.to_enum("kind", ResultKind, value)


def _to_output(value: Mapping[str, JSONValue] | None) -> Data:
    return validators.to_data("output", value)


def _to_retry_delay(value: timedelta | float | None) -> timedelta | None:
    return None if value is None else _duration("delay", value)


@attrs.frozen(kw_only=True)
class Result:
    """What a worker returns. Use :meth:`success`, :meth:`failure` or :meth:`retry`.

    Returning ``None`` means success with no output; raising means failure.

    :ivar kind: SUCCESS, FAILURE or RETRY
    :ivar output: JSON object stored with a SUCCEEDED or FAILED work
    :ivar retry_delay: for RETRY, the wait before the next run instead of the backoff's
    """

    kind: ResultKind = attrs.field(converter=_to_kind)
    output: Data = attrs.field(default=None, converter=_to_output)
    retry_delay: timedelta | None = attrs.field(default=None, converter=_to_retry_delay)

    def __attrs_post_init__(self) -> None:
        if self.retry_delay is not None and self.kind is not ResultKind.RETRY:
            raise InvalidRequestError("retry_delay", self.retry_delay, "only a RETRY has one")

    @classmethod
    def success(cls, output: Mapping[str, JSONValue] | None = None) -> Result:
        """The work succeeded; ``output`` is stored and passed to dependents."""
        return cls(kind=ResultKind.SUCCESS, output=output)

    @classmethod
    def failure(cls, output: Mapping[str, JSONValue] | None = None) -> Result:
        """The work failed for good; dependents fail too."""
        return cls(kind=ResultKind.FAILURE, output=output)

    @classmethod
    def retry(cls, delay: timedelta | float | None = None) -> Result:
        """Run the work again after its backoff delay, or after ``delay`` (a timedelta
        or seconds) this once; the backoff applies again to later retries.

        :raises InvalidRequestError: if ``delay`` is negative, NaN or infinite
        """
        return cls(kind=ResultKind.RETRY, retry_delay=delay)


@attrs.frozen(kw_only=True)
class WorkError:
    """The exception that failed a run.

    :ivar type: the exception's qualified class name
    :ivar message: ``str(exception)``
    """

    type: str
    message: str


@attrs.frozen(kw_only=True)
class WorkInfo:
    """A snapshot of a work's state, as returned by queries and ``watch()``.

    :ivar id: the work's UUID
    :ivar state: its :class:`WorkState`
    :ivar worker: the worker name
    :ivar tags: its tags (worker name included)
    :ivar input: its input data
    :ivar output: output data; empty unless SUCCEEDED or FAILED
    :ivar progress: the last ``set_progress`` data; empty unless RUNNING
    :ivar run_attempt_count: how many runs have started (also :attr:`runs_started`; not
        ``WorkContext.run_attempt_count``, which counts the runs *before* the current one)
    :ivar generation: incremented by ``update_work``
    :ivar constraints: its constraints
    :ivar initial_delay: its initial delay
    :ivar next_schedule_time: when it is next due (UTC); set only while ENQUEUED
    :ivar unique_name: the unique-work name it was enqueued under, if any
    :ivar stop_reason: why its last run was stopped
    :ivar periodicity: how it repeats, for periodic work
    :ivar period_count: completed periods, for periodic work
    :ivar enqueued_at: when it was first enqueued (UTC)
    :ivar started_at: when its last run started (UTC)
    :ivar finished_at: when it reached a terminal state (UTC)
    :ivar error: the exception of the failed run, if it FAILED by raising
    :ivar priority: its priority (higher is claimed first among due works)
    :ivar held_by: what holds back this due ENQUEUED work (its worker paused, or at its
        ``max_running`` or ``rate_limit``: semantics 50), as the manager that answers
        knows it; ``None`` otherwise
    """

    id: uuid.UUID
    state: WorkState
    worker: str
    tags: frozenset[str]
    input: Data
    output: Data
    progress: Data
    run_attempt_count: int
    generation: int
    constraints: Constraints
    initial_delay: timedelta
    next_schedule_time: datetime | None
    unique_name: str | None
    stop_reason: StopReason
    periodicity: Periodicity | None
    period_count: int
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: WorkError | None
    priority: int = 0
    held_by: HeldBy | None = None

    @property
    def is_finished(self) -> bool:
        """True once the work is SUCCEEDED, FAILED or CANCELLED."""
        return self.state.is_finished

    @property
    def runs_started(self) -> int:
        """How many runs have started, a running one included: ``WorkContext.runs_started``
        of the current run (the clear name of ``run_attempt_count``)."""
        return self.run_attempt_count

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as JSON-ready data (``json.dumps(info.to_dict())``), as ``wm-async
        show --json`` prints it: times in ISO 8601, durations in seconds, enums as values."""
        form: dict[str, Any] = _json_form(self)
        return form


class _Selectable(Protocol):
    @property
    def id(self) -> uuid.UUID | str: ...
    @property
    def tags(self) -> frozenset[str]: ...
    @property
    def unique_name(self) -> str | None: ...
    @property
    def state(self) -> WorkState: ...


def _to_ids(value: Iterable[uuid.UUID | str]) -> frozenset[uuid.UUID]:
    if isinstance(value, str | bytes | uuid.UUID) or not isinstance(value, Iterable):
        raise InvalidRequestError("ids", value, "expected a collection of UUIDs")
    return frozenset(validators.to_uuid("ids", i) for i in value)


def _to_states(value: Iterable[WorkState | str]) -> frozenset[WorkState]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidRequestError("states", value, "expected a collection of WorkState")
    return frozenset(validators.to_enum("states", WorkState, s) for s in value)


def _to_unique_names(value: Iterable[str]) -> frozenset[str]:
    return validators.to_names("unique_names", value)


@attrs.frozen(kw_only=True)
class WorkQuery:
    """Selects works: OR within a field, AND across fields. An empty query is an error.

    ``WorkQuery(tags={"sync"}, states={WorkState.FAILED})``

    :ivar ids: work ids
    :ivar tags: tags
    :ivar unique_names: unique-work names
    :ivar states: states
    """

    ids: frozenset[uuid.UUID] = attrs.field(default=frozenset(), converter=_to_ids)
    tags: frozenset[str] = attrs.field(default=frozenset(), converter=_to_tags)
    unique_names: frozenset[str] = attrs.field(default=frozenset(), converter=_to_unique_names)
    states: frozenset[WorkState] = attrs.field(default=frozenset(), converter=_to_states)

    @property
    def id_keys(self) -> frozenset[str]:
        """The ids in their text form (as stores key works)."""
        return frozenset(str(i) for i in self.ids)

    def __attrs_post_init__(self) -> None:
        if not (self.ids or self.tags or self.unique_names or self.states):
            raise InvalidRequestError(
                "query", self, "a WorkQuery needs at least one of ids, tags, unique_names, states"
            )

    def matches(self, info: _Selectable) -> bool:
        """True if ``info`` is selected by this query."""
        wid = info.id
        return (
            (not self.ids or (wid if isinstance(wid, uuid.UUID) else uuid.UUID(wid)) in self.ids)
            and (not self.tags or not self.tags.isdisjoint(info.tags))
            and (not self.unique_names or info.unique_name in self.unique_names)
            and (not self.states or info.state in self.states)
        )
