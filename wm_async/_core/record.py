"""WorkRecord: a work as stores persist it (spec + runtime state), and its conversions."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import attrs

from .data import EMPTY_DATA, Data
from .mergers import OverwritingInputMerger
from .model import (
    DEFAULT_BACKOFF,
    Backoff,
    Constraints,
    Periodicity,
    StopReason,
    WorkError,
    WorkInfo,
    WorkState,
)

if TYPE_CHECKING:
    from .cron import CronSchedule
    from .limits import HeldBy

_T = TypeVar("_T", bound=attrs.AttrsInstance)
_EMPTY: Final[Data] = EMPTY_DATA  # type: ignore[assignment]  # read-only, shared


class _MergerName(Protocol):
    @property
    def name(self) -> str: ...


class RequestSpec(Protocol):
    """What a record is built from: the fields every request has (the requests live in
    the API layer, above this one, and satisfy this structurally)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def worker(self) -> str: ...
    @property
    def input(self) -> Data: ...
    @property
    def tags(self) -> frozenset[str]: ...
    @property
    def constraints(self) -> Constraints: ...
    @property
    def initial_delay(self) -> timedelta: ...
    @property
    def backoff(self) -> Backoff: ...
    @property
    def timeout(self) -> timedelta | None: ...
    @property
    def max_attempts(self) -> int | None: ...
    @property
    def priority(self) -> int: ...


class OneTimeSpec(RequestSpec, Protocol):
    """A one-time request's fields."""

    @property
    def expedited(self) -> bool: ...
    @property
    def input_merger(self) -> type[_MergerName] | _MergerName: ...


class PeriodicSpec(RequestSpec, Protocol):
    """A periodic request's fields."""

    @property
    def periodicity(self) -> Periodicity: ...


def id_text(work_id: uuid.UUID) -> str:
    """``str(work_id)``, the canonical 8-4-4-4-12 form, at three quarters of the cost
    (one per enqueued work): the hex digits in groups of four, five dashes dropped."""
    h = work_id.int.to_bytes(16, "big").hex("-", 2)  # 8 groups of 4, 7 dashes
    return h[:4] + h[5:29] + h[30:34] + h[35:]


#: Fields that lifecycle transitions change. Everything else is the work's spec, changed
#: only by ``update_work`` (which bumps ``generation``).
RUNTIME_FIELDS: Final = (
    "state",
    "run_attempt_count",
    "next_run_at",
    "last_enqueue_time",
    "started_at",
    "finished_at",
    "output",
    "progress",
    "stop_reason",
    "error",
    "period_count",
    "owner",
)


@attrs.define(kw_only=True, eq=True)
class WorkRecord:
    """One work as stored. Times are UTC epoch seconds.

    Records are values: nothing changes one once built. The lifecycle computes new
    records with :func:`evolve`; stores persist them. (The class is not frozen only
    because a frozen class's copies go through ``object.__setattr__`` per field, which
    made copying a record cost more than the rest of a run of a trivial worker;
    ``tests/test_lifecycle.py`` checks that transitions leave their input untouched.)
    """

    # -- spec
    #: str(UUID): str keys hash at C speed (UUID.__hash__ is Python code), and the
    #: stores persist the text form anyway. WorkInfo converts back to UUID.
    id: str
    worker: str
    input: Data
    tags: frozenset[str]
    constraints: Constraints
    initial_delay: float
    backoff: Backoff
    timeout: float | None
    max_attempts: int | None
    expedited: bool
    input_merger: str
    unique_name: str | None
    generation: int
    enqueued_at: float
    # -- runtime
    state: WorkState
    run_attempt_count: int
    next_run_at: float | None
    last_enqueue_time: float
    started_at: float | None
    finished_at: float | None
    output: Data
    progress: Data
    stop_reason: StopReason
    error: WorkError | None
    period_count: int
    owner: str | None
    # -- spec, periodic work only (last, so one-time records need not mention it)
    periodic: Periodicity | None = None
    #: -- spec: higher is claimed first among due works (semantics 48)
    priority: int = 0
    #: -- spec: what the app's propagators stored at enqueue (a trace context, say), as
    #: string values; a run sees them as ``ctx.headers`` (semantics 52)
    headers: Data = _EMPTY

    @classmethod
    def from_request(
        cls, request: OneTimeSpec, *, now: float, unique_name: str | None = None
    ) -> WorkRecord:
        """A new ENQUEUED record, due ``initial_delay`` from ``now``."""
        return _from_one_time(request, now, unique_name)

    @classmethod
    def from_periodic_request(
        cls, request: PeriodicSpec, *, now: float, unique_name: str | None = None
    ) -> WorkRecord:
        """A new ENQUEUED periodic record, due as semantics 3 and 4 say: ``initial_delay``
        plus ``interval - flex`` from now, or the first cron time after the delay."""
        return _from_periodic(request, now, unique_name)

    @property
    def signal_names(self) -> frozenset[str]:
        """The signal names this work's constraints wait on."""
        return self.constraints.signal_names()  # cached per distinct Constraints

    def to_info(self, held_by: HeldBy | None = None) -> WorkInfo:
        """The public snapshot of this record (semantics 16 and 31 applied), with
        ``held_by`` as the caller knows it (semantics 50)."""
        state = self.state
        return WorkInfo(
            id=uuid.UUID(self.id),
            state=state,
            worker=self.worker,
            tags=self.tags,
            input=self.input,
            output=self.output if state in (WorkState.SUCCEEDED, WorkState.FAILED) else _EMPTY,
            progress=self.progress if state is WorkState.RUNNING else _EMPTY,
            run_attempt_count=self.run_attempt_count,
            generation=self.generation,
            constraints=self.constraints,
            initial_delay=timedelta(seconds=self.initial_delay),
            next_schedule_time=(
                _dt(self.next_run_at)
                if state is WorkState.ENQUEUED and self.next_run_at is not None
                else None
            ),
            unique_name=self.unique_name,
            stop_reason=self.stop_reason,
            periodicity=self.periodicity,
            period_count=self.period_count,
            enqueued_at=_dt(self.enqueued_at),
            started_at=None if self.started_at is None else _dt(self.started_at),
            finished_at=None if self.finished_at is None else _dt(self.finished_at),
            error=self.error,
            priority=self.priority,
            held_by=held_by,
        )

    @property
    def periodicity(self) -> Periodicity | None:
        """How this work repeats (``None``: one-time)."""
        return self.periodic


def _generate(name: str, src: str, cls: type = WorkRecord, **names: object) -> Callable[..., Any]:
    namespace: dict[str, object] = {"_new": object.__new__, "_Record": cls, **names}
    exec(src, namespace)  # noqa: S102  # code generated from our own field names only
    return namespace[name]  # type: ignore[return-value]


def builder(
    cls: type[_T],
    name: str,
    params: str,
    sources: Mapping[str, str],
    *,
    prelude: str = "",
    **names: object,
) -> Callable[..., _T]:
    """Generate ``name(<params>)`` building a ``cls`` with plain slot stores, each field
    set to the expression ``sources`` gives it (``prelude`` runs first).

    The table must name every field of ``cls``, no more and no fewer, so adding a field
    to the class without saying where its value comes from fails at import (a
    ``TypeError`` naming it), and the stores follow the class's own field order, so no
    value can land in another field. (Generated because a record is built once per
    enqueued work: slot stores cost a fraction of attrs' ``__init__``, and far less than
    a call with keyword arguments.)
    """
    fields = [a.name for a in attrs.fields(cls)]
    missing, extra = set(fields) - set(sources), set(sources) - set(fields)
    if missing or extra:
        raise TypeError(
            f"{name}: every field of {cls.__name__} needs one source; missing "
            f"{sorted(missing)}, unknown {sorted(extra)}"
        )
    body = "".join(f"    new.{f} = {sources[f]}\n" for f in fields)
    src = f"def {name}({params}):\n{prelude}    new = _new(_Record)\n{body}    return new\n"
    return _generate(name, src, cls, **names)


def _copier(changed: tuple[str, ...]) -> Callable[[WorkRecord, dict[str, object]], WorkRecord]:
    # The lifecycle copies records on every transition, several per run: plain slot
    # stores in code generated once per set of changed fields are several times faster
    # than attrs.evolve, which introspects the class and calls __init__.
    body = "".join(
        f"    new.{n} = c[{n!r}]\n" if n in changed else f"    new.{n} = r.{n}\n" for n in _FIELDS
    )
    return _generate("copy", f"def copy(r, c):\n    new = _new(_Record)\n{body}    return new\n")


_COPIERS: dict[tuple[str, ...], Callable[[WorkRecord, dict[str, object]], WorkRecord]] = {}


def evolve(record: WorkRecord, **changes: object) -> WorkRecord:
    """A copy of ``record`` with some fields replaced (what ``attrs.evolve`` does)."""
    key = tuple(changes)
    copier = _COPIERS.get(key)
    if copier is None:
        unknown = set(key) - set(_FIELDS)
        if unknown:
            raise TypeError(f"WorkRecord has no field(s) {sorted(unknown)}")
        copier = _COPIERS[key] = _copier(key)
    return copier(record, changes)


def transition(*changed: str) -> Callable[..., WorkRecord]:
    """A function ``(record, *values)`` returning a copy of ``record`` with the fields
    ``changed`` set to ``values``, in that order: :func:`evolve` for the hot transitions,
    without building and reading a dict of changes."""
    unknown = set(changed) - set(_FIELDS)
    if unknown:
        raise TypeError(f"WorkRecord has no field(s) {sorted(unknown)}")
    body = "".join(f"    new.{n} = {n if n in changed else 'r.' + n}\n" for n in _FIELDS)
    return _generate(
        "copy",
        f"def copy(r, {', '.join(changed)}):\n    new = _new(_Record)\n{body}    return new\n",
    )


def _make_new() -> Callable[..., WorkRecord]:
    # A positional constructor storing slots directly (see _copier for why).
    names = [a.name for a in attrs.fields(WorkRecord)]
    body = "".join(f"    new.{n} = {n}\n" for n in names)
    return _generate(
        "new", f"def new({', '.join(names)}):\n    new = _new(_Record)\n{body}    return new\n"
    )


_FIELDS: Final = tuple(a.name for a in attrs.fields(WorkRecord))
_new: Final = _make_new()

#: ``WorkRecord`` from every field, positionally in field order (no keyword parsing):
#: for stores decoding rows.
record_new: Final = _new


def first_period_due(periodic: Periodicity, start: float) -> float:
    """When the first period's run is due, counting from ``start`` (enqueue + delay)."""
    if periodic.cron is not None:
        return _cron(periodic).next_after(start)
    assert periodic.interval is not None
    assert periodic.flex is not None
    return start + max(0.0, (periodic.interval - periodic.flex).total_seconds())


def next_period_due(periodic: Periodicity, finished: float) -> float:
    """When the next period's run is due after a period ended at ``finished``
    (semantics 3: ``finish + interval``, flex ignored; cron: the next time after it)."""
    if periodic.cron is not None:
        return _cron(periodic).next_after(finished)
    assert periodic.interval is not None
    return finished + periodic.interval.total_seconds()


@functools.lru_cache(maxsize=256)
def _cron(periodic: Periodicity) -> CronSchedule:
    from .cron import CronSchedule

    return CronSchedule.parse(periodic.cron or "", periodic.timezone or "UTC")


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


__all__ = ["DEFAULT_BACKOFF", "RUNTIME_FIELDS", "WorkRecord", "evolve", "record_new", "transition"]


#: Where each field of a new one-time record comes from (``WorkRecord.from_request``).
_NEW_ONE_TIME: Final = {
    "id": "id_text(request.id)",
    "worker": "request.worker",
    "input": "request.input",
    "tags": "request.tags",
    "constraints": "request.constraints",
    "initial_delay": "delay",
    "backoff": "request.backoff",
    "timeout": "None if timeout is None else timeout.total_seconds()",
    "max_attempts": "request.max_attempts",
    "expedited": "request.expedited",
    "input_merger": "request.input_merger.name",
    "unique_name": "unique_name",
    "generation": "0",
    "enqueued_at": "now",
    "state": "ENQUEUED",
    "run_attempt_count": "0",
    "next_run_at": "now + delay",
    "last_enqueue_time": "now",
    "started_at": "None",
    "finished_at": "None",
    "output": "EMPTY",
    "progress": "EMPTY",
    "stop_reason": "NOT_STOPPED",
    "error": "None",
    "period_count": "0",
    "owner": "None",
    "periodic": "None",
    "priority": "request.priority",
    "headers": "EMPTY",
}
#: ... and of a new periodic one (``WorkRecord.from_periodic_request``).
_NEW_PERIODIC: Final = {
    **_NEW_ONE_TIME,
    "expedited": "False",
    "input_merger": "OVERWRITING",
    "next_run_at": "first_period_due(periodic, now + delay)",
    "periodic": "periodic",
}
_PRELUDE: Final = (
    "    delay = request.initial_delay.total_seconds()\n    timeout = request.timeout\n"
)
_CONSTANTS: Final = {
    "id_text": id_text,
    "ENQUEUED": WorkState.ENQUEUED,
    "NOT_STOPPED": StopReason.NOT_STOPPED,
    "EMPTY": _EMPTY,
    "OVERWRITING": OverwritingInputMerger.name,
    "first_period_due": first_period_due,
}
_from_one_time: Final = builder(
    WorkRecord,
    "from_one_time",
    "request, now, unique_name",
    _NEW_ONE_TIME,
    prelude=_PRELUDE,
    **_CONSTANTS,
)
_from_periodic: Final = builder(
    WorkRecord,
    "from_periodic",
    "request, now, unique_name",
    _NEW_PERIODIC,
    prelude=_PRELUDE + "    periodic = request.periodicity\n",
    **_CONSTANTS,
)
