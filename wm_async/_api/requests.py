"""Work requests: what an app enqueues (one-time and periodic)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, cast

import attrs

from .._core import validators
from .._core.data import (
    Data,
    JSONValue,
)
from .._core.errors import InvalidRequestError
from .._core.ids import new_id
from .._core.mergers import (
    ArrayCreatingInputMerger,
    OverwritingInputMerger,
)
from .._core.model import (
    DEFAULT_BACKOFF,
    NO_CONSTRAINTS,
    Backoff,
    Constraints,
    Periodicity,
    _check_bool,
    _duration,
    _to_tags,
)

if TYPE_CHECKING:
    from .._core.mergers import InputMerger


_NO_DELAY: Final = timedelta(0)
_NO_TAGS: Final[frozenset[str]] = frozenset()


def _initial_delay(value: timedelta | float) -> timedelta:
    if value is _NO_DELAY:  # the default: nothing to check (requests are built per work)
        return value
    return _duration("initial_delay", value)


def _tags(value: Iterable[str]) -> frozenset[str]:
    return _NO_TAGS if value is _NO_TAGS else _to_tags(value)


_DEFAULT_MERGER: type[InputMerger] = OverwritingInputMerger


def _timeout(value: timedelta | float | None) -> timedelta | None:
    if value is None:
        return None
    out = validators.to_timedelta("timeout", value)
    validators.check_positive("timeout", out)
    return out


def _to_input(value: Mapping[str, JSONValue] | None) -> Data:
    return validators.to_data("input", value)


def _to_id(value: uuid.UUID | str) -> uuid.UUID:
    if value.__class__ is uuid.UUID:
        return value
    return validators.to_uuid("id", value)


def _to_id_or_new(value: uuid.UUID | str | None) -> uuid.UUID:
    """``id=``: the UUID given (or its text), or a new one for ``None`` (the default)."""
    return new_id() if value is None else _to_id(value)


def _check_worker(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    validators.check_name("worker", value)


def _check_max_attempts(
    instance: object, attribute: attrs.Attribute[int | None], value: object
) -> None:
    validators.check_optional_positive_int("max_attempts", value)


def _check_priority(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    validators.check_priority("priority", value)


def _check_merger(
    instance: object, attribute: attrs.Attribute[type[InputMerger]], value: object
) -> None:
    if value is not OverwritingInputMerger and value is not ArrayCreatingInputMerger:
        raise InvalidRequestError(
            "input_merger", value, "expected OverwritingInputMerger or ArrayCreatingInputMerger"
        )


_EMPTY_INPUT: Final = cast("Data", validators.EMPTY_DATA)
#: Worker name -> its default tags; also the worker names already checked.
_WORKER_TAGS: dict[str, frozenset[str]] = {}
_MAX_CACHED_WORKERS: Final = 4096


def _worker_tags(worker: str) -> frozenset[str]:
    tags = frozenset((worker,))
    if len(_WORKER_TAGS) >= _MAX_CACHED_WORKERS:  # names built per request: stay bounded
        _WORKER_TAGS.clear()
    _WORKER_TAGS[worker] = tags
    return tags


@attrs.frozen(kw_only=True)
class _WorkRequest:
    """Fields shared by one-time and periodic requests."""

    worker: str = attrs.field(validator=_check_worker, kw_only=False)
    input: Data = attrs.field(default=None, converter=_to_input)
    constraints: Constraints = attrs.field(default=NO_CONSTRAINTS)
    initial_delay: timedelta = attrs.field(default=_NO_DELAY, converter=_initial_delay)
    backoff: Backoff = attrs.field(default=DEFAULT_BACKOFF)
    tags: frozenset[str] = attrs.field(default=_NO_TAGS, converter=_tags)
    timeout: timedelta | None = attrs.field(
        default=None,
        converter=_timeout,
    )
    max_attempts: int | None = attrs.field(default=None, validator=_check_max_attempts)
    priority: int = attrs.field(default=0, validator=_check_priority)
    id: uuid.UUID = attrs.field(default=None, converter=_to_id_or_new)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.constraints, Constraints):
            raise InvalidRequestError("constraints", self.constraints, "expected a Constraints")
        if not isinstance(self.backoff, Backoff):
            raise InvalidRequestError("backoff", self.backoff, "expected a Backoff")
        if self.worker not in self.tags:
            # semantics 1: the worker name is always among the tags. Normalising here keeps
            # the invariant true for every instance without a second public field.
            object.__setattr__(self, "tags", self.tags | {self.worker})


@attrs.frozen(kw_only=True, init=False)
class OneTimeWorkRequest(_WorkRequest):
    """A work that runs once (retrying as its result and backoff say).

    ``OneTimeWorkRequest("sync_feed", input={"url": u}, initial_delay=30)``

    :ivar worker: the registered worker name that runs it
    :ivar input: JSON object passed to the worker as ``ctx.input``
    :ivar constraints: conditions that must hold while it runs
    :ivar initial_delay: how long after enqueue (or after its prerequisites succeed) it
        becomes due
    :ivar backoff: retry delay policy
    :ivar tags: names to query and cancel by; always includes ``worker``
    :ivar timeout: run time limit; ``None`` uses the manager's ``default_timeout``
    :ivar max_attempts: fail instead of retrying once this many runs have happened
        (``None``: unlimited)
    :ivar priority: an int from -10 to 10 (default 0): among due works, higher is
        claimed first (after expedited works; see semantics 48)
    :ivar expedited: dispatched ahead of ordinary due work; no initial delay, and only
        network and storage constraints
    :ivar input_merger: how a chained work merges its prerequisites' outputs into its input
    :ivar id: the work's UUID (unless given, or given as ``None``, a new version-7 UUID:
        random, and ordered by creation time)
    """

    expedited: bool = attrs.field(default=False, validator=_check_bool)
    input_merger: type[InputMerger] = attrs.field(default=_DEFAULT_MERGER, validator=_check_merger)

    def __init__(
        self,
        worker: str,
        *,
        input: Mapping[str, JSONValue] | None = None,  # the public field name
        constraints: Constraints = NO_CONSTRAINTS,
        initial_delay: timedelta | float = _NO_DELAY,
        backoff: Backoff = DEFAULT_BACKOFF,
        tags: Iterable[str] = _NO_TAGS,
        timeout: timedelta | float | None = None,
        max_attempts: int | None = None,
        priority: int = 0,
        id: uuid.UUID | str | None = None,  # the public field name; None: a new id
        expedited: bool = False,
        input_merger: type[InputMerger] = _DEFAULT_MERGER,
    ) -> None:
        # Written by hand rather than generated by attrs: apps build one request per work,
        # and skipping the converters and validators of fields left at their defaults makes
        # this several times cheaper. Each field is checked as its attrs field declares.
        worker_tags = _WORKER_TAGS.get(worker) if worker.__class__ is str else None
        if worker_tags is None:
            _check_worker(self, _FIELD_WORKER, worker)
            worker_tags = _worker_tags(worker)
        input_data = _EMPTY_INPUT if input is None else _to_input(input)
        delay = _initial_delay(initial_delay)
        if tags is _NO_TAGS:
            tags = worker_tags
        else:
            tags = _to_tags(tags)
            if worker not in tags:  # semantics 1: the worker name is always a tag
                tags = tags | {worker}
        if timeout is not None:
            timeout = _timeout(timeout)
        if max_attempts is not None:
            _check_max_attempts(self, _FIELD_MAX_ATTEMPTS, max_attempts)
        if priority.__class__ is not int or priority != 0:
            _check_priority(self, _FIELD_PRIORITY, priority)
        work_id = new_id() if id is None else _to_id(id)
        if expedited is not False:
            _check_bool(self, _FIELD_EXPEDITED, expedited)
        if input_merger is not _DEFAULT_MERGER:
            _check_merger(self, _FIELD_MERGER, input_merger)
        if constraints is not NO_CONSTRAINTS and not isinstance(constraints, Constraints):
            raise InvalidRequestError("constraints", constraints, "expected a Constraints")
        if backoff is not DEFAULT_BACKOFF and not isinstance(backoff, Backoff):
            raise InvalidRequestError("backoff", backoff, "expected a Backoff")
        cls = self.__class__
        if cls is OneTimeWorkRequest:
            # Filled as a _FillableRequest (the same layout, with plain attribute stores), then
            # made a OneTimeWorkRequest again: frozen attrs sets each field through
            # object.__setattr__, and those eleven calls were a third of a request's cost.
            _set_class(self, _FillableRequest)
            filling: Any = self
            filling.worker = worker
            filling.input = input_data
            filling.constraints = constraints
            filling.initial_delay = delay
            filling.backoff = backoff
            filling.tags = tags
            filling.timeout = timeout
            filling.max_attempts = max_attempts
            filling.priority = priority
            filling.id = work_id
            filling.expedited = expedited
            filling.input_merger = input_merger
            filling.__class__ = cls
        else:  # a subclass (its layout may differ): field by field, by name
            values = {
                "worker": worker,
                "input": input_data,
                "constraints": constraints,
                "initial_delay": delay,
                "backoff": backoff,
                "tags": tags,
                "timeout": timeout,
                "max_attempts": max_attempts,
                "priority": priority,
                "id": work_id,
                "expedited": expedited,
                "input_merger": input_merger,
            }
            for name in _FIELD_NAMES:  # a field without a value here: KeyError, at once
                object.__setattr__(self, name, values[name])
        if expedited:
            self._check_expedited()

    def _check_expedited(self) -> None:
        if self.initial_delay > timedelta(0):
            raise InvalidRequestError(
                "initial_delay", self.initial_delay, "expedited work cannot be delayed"
            )
        c = self.constraints
        if (
            c.requires_charging
            or c.requires_battery_not_low
            or c.requires_device_idle
            or c.signals
        ):
            raise InvalidRequestError(
                "constraints", c, "expedited work accepts only network and storage constraints"
            )


class _FillableRequest(OneTimeWorkRequest):
    """A OneTimeWorkRequest being filled by its ``__init__`` (see there)."""

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


_set_class: Final = object.__dict__["__class__"].__set__
_FIELDS = attrs.fields(OneTimeWorkRequest)
_FIELD_NAMES: Final = tuple(f.name for f in _FIELDS)
_FIELD_WORKER: Final = _FIELDS.worker
_FIELD_MAX_ATTEMPTS: Final = _FIELDS.max_attempts
_FIELD_EXPEDITED: Final = _FIELDS.expedited
_FIELD_PRIORITY: Final = _FIELDS.priority
_FIELD_MERGER: Final = _FIELDS.input_merger


def unset_fields(request: attrs.AttrsInstance) -> list[str]:
    """The attrs fields of ``request`` that hold no value (an ``__init__`` written by
    hand must set every one)."""
    return [f.name for f in attrs.fields(type(request)) if not hasattr(request, f.name)]


def check_fills_every_field(build: Callable[[], attrs.AttrsInstance]) -> None:
    """Raise ``TypeError`` if an object ``build`` makes leaves a field unset: run at
    import for OneTimeWorkRequest's hand-written ``__init__``, whose fast path assigns
    the fields one by one, so a field added to the class and not to ``__init__`` fails
    the import instead of a read much later."""
    unset = unset_fields(build())
    if unset:
        raise TypeError(f"{type(build()).__name__}.__init__ leaves {unset} unset")


check_fills_every_field(lambda: OneTimeWorkRequest("w"))
check_fills_every_field(lambda: OneTimeWorkRequest("w", expedited=True, tags={"t"}, timeout=1))


def _optional_interval(field: str) -> Callable[[timedelta | float | None], timedelta | None]:
    def convert(value: timedelta | float | None) -> timedelta | None:
        if value is None:
            return None
        out = validators.to_timedelta(field, value)
        validators.check_positive(
            field, out
        )  # semantics 2: zero or negative is an error, not coerced
        return out

    return convert


def _to_repeat_interval(value: timedelta | float | None) -> timedelta | None:
    return _optional_interval("repeat_interval")(value)


def _to_flex_interval(value: timedelta | float | None) -> timedelta | None:
    return _optional_interval("flex_interval")(value)


def _to_cron(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError("cron", value, "expected a cron expression string")
    return " ".join(value.split())


@attrs.frozen(kw_only=True)
class PeriodicWorkRequest(_WorkRequest):
    """A work that repeats until cancelled: every ``repeat_interval`` (optionally within
    a ``flex_interval`` window at the end of each interval), or at the times a 5-field
    ``cron`` expression names in ``timezone``.

    ``PeriodicWorkRequest("sync", repeat_interval=timedelta(hours=1),
    flex_interval=timedelta(minutes=15))`` or ``PeriodicWorkRequest("report",
    cron="0 3 * * *", timezone="Europe/Berlin")``

    Each period's run ends the period whatever its result (success or failure); retries
    within a period use the backoff. Periodic work stores no output and cannot be chained
    or expedited.

    :ivar repeat_interval: the period (no minimum, unlike Android's 15 minutes)
    :ivar flex_interval: the window at the end of the first period in which it runs
        (defaults to the whole interval)
    :ivar cron: a 5-field cron expression (instead of ``repeat_interval``)
    :ivar timezone: the IANA timezone the cron expression is read in (default UTC)

    It takes the other fields of :class:`OneTimeWorkRequest` but ``expedited`` and
    ``input_merger``, ``priority`` included.
    """

    repeat_interval: timedelta | None = attrs.field(default=None, converter=_to_repeat_interval)
    flex_interval: timedelta | None = attrs.field(default=None, converter=_to_flex_interval)
    cron: str | None = attrs.field(default=None, converter=_to_cron)
    timezone: str = attrs.field(default="UTC")

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (self.repeat_interval is None) == (self.cron is None):
            raise InvalidRequestError(
                "repeat_interval",
                self.repeat_interval,
                "give exactly one of repeat_interval and cron",
            )
        if self.cron is not None:
            if self.flex_interval is not None:
                raise InvalidRequestError(
                    "flex_interval", self.flex_interval, "cron schedules take no flex window"
                )
            from .._core.cron import CronSchedule

            CronSchedule.parse(self.cron, self.timezone)  # raises InvalidRequestError
            return
        if self.timezone != "UTC":
            raise InvalidRequestError(
                "timezone", self.timezone, "only cron schedules are read in a timezone"
            )
        assert self.repeat_interval is not None
        if self.flex_interval is None:
            object.__setattr__(self, "flex_interval", self.repeat_interval)
        elif self.flex_interval > self.repeat_interval:
            raise InvalidRequestError(
                "flex_interval",
                self.flex_interval,
                f"must not exceed repeat_interval ({self.repeat_interval})",
            )

    @property
    def periodicity(self) -> Periodicity:
        """How this request repeats."""
        if self.cron is not None:
            return Periodicity(cron=self.cron, timezone=self.timezone)
        return Periodicity(interval=self.repeat_interval, flex=self.flex_interval)
