"""Bad input, fuzzed, through every public entry point that takes user data.

Every refusal must be a WorkManagerError (an InvalidRequestError for a bad value, an
UnknownWorkerError for an unregistered worker) whose message names the field and shows
the bad value, and a refused call must leave the store exactly as it was (read before and
after, on both stores). Anything else escaping (TypeError, KeyError, RecursionError,
UnicodeEncodeError...) fails the test.

One manager per store lives for the whole module on a loop in a blocking portal, so
hypothesis runs each example as a plain call.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wm_async as wm
from wm_async.testing import VirtualClock

T = TypeVar("T")
ALL = wm.WorkQuery(states=set(wm.WorkState))
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- strategies -----------------------------------------------------------------------------

SQL_NASTY = [
    "'); DROP TABLE wm_work; --",
    "w' OR '1'='1",
    'w"; DELETE FROM wm_work_tag; --',
    "%",
    "_",
    "a,b",
    "\\",
    "x" * 256,
    "",
    " ",
    "\x00",
    "\n",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "é€😀",
]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.sampled_from(SQL_NASTY),
)
not_json = st.one_of(
    st.binary(max_size=4),
    st.sets(st.integers(), max_size=2),
    st.builds(object),
    st.timedeltas(),
    st.complex_numbers(),
    st.just(10**5000),  # an int longer than Python formats
)
anything = st.one_of(json_scalars, not_json, st.lists(json_scalars, max_size=3))
names = st.one_of(st.sampled_from(SQL_NASTY), st.text(max_size=12), anything)


def nested(depth: int) -> object:
    value: object = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


data_values = st.one_of(
    json_scalars,
    not_json,
    st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c)),
    st.integers(60, 80).map(nested),  # around MAX_DATA_DEPTH
    st.integers(1, 3000).map(lambda n: "€" * n),  # near and over max_data_bytes
)
payloads = st.one_of(
    anything,
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), data_values),
    st.dictionaries(st.sampled_from(SQL_NASTY), data_values, max_size=3),
)
durations = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.timedeltas(),
    st.integers(-(10**12), 10**12),
    anything,
)
crons = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.one_of(
            st.sampled_from(["*", "*/0", "*/99999999999", "1-0", "60", "-1", "?", "L", "W"]),
            st.integers(-5, 100).map(str),
            st.text(alphabet="0123456789*/-,", min_size=1, max_size=6),
        ),
        min_size=4,
        max_size=6,
    ).map(" ".join),
    st.sampled_from(["0 0 31 2 *", "0 0 30 2 *", "@reboot", "* * * * * *", "0 3 * * MON-FRI"]),
    anything,
)
timezones = st.one_of(
    st.sampled_from(
        ["UTC", "Europe/Berlin", "../../etc/passwd", "/etc/localtime", "UTC\x00", "", "Mars/Base"]
    ),
    st.text(max_size=30),
    anything,
)
policies = st.one_of(
    st.sampled_from(list(wm.ExistingWorkPolicy)),
    st.sampled_from(["keep", "REPLACE", "append", "bogus", "", "KEEP; DROP TABLE wm_work"]),
    anything,
)
periodic_policies = st.one_of(
    st.sampled_from(list(wm.ExistingPeriodicWorkPolicy)),
    st.sampled_from(["update", "CANCEL_AND_REENQUEUE", "REPLACE", "bogus"]),
    anything,
)
common_fields: dict[str, st.SearchStrategy[Any]] = {
    "input": payloads,
    "initial_delay": durations,
    "timeout": st.one_of(st.none(), durations),
    "max_attempts": st.one_of(st.none(), st.integers(-3, 2**40), anything),
    "tags": st.one_of(st.lists(names, max_size=3), names),
    "backoff": st.one_of(anything, st.builds(wm.Backoff, st.sampled_from(list(wm.BackoffPolicy)))),
    "constraints": st.one_of(
        anything,
        st.builds(wm.Constraints),
        st.builds(lambda s: {"signals": s}, st.lists(names, max_size=2)),
    ),
    "id": st.one_of(st.uuids(), st.text(max_size=40), anything),
}
one_time_fields = st.fixed_dictionaries(
    {},
    optional={
        **common_fields,
        "expedited": st.one_of(st.booleans(), anything),
        "input_merger": st.one_of(
            st.sampled_from([wm.OverwritingInputMerger, wm.ArrayCreatingInputMerger]),
            st.sampled_from(["overwriting", "os.system", dict]),
            anything,
        ),
    },
)
periodic_fields = st.fixed_dictionaries(
    {},
    optional={
        **common_fields,
        "repeat_interval": st.one_of(st.none(), durations),
        "flex_interval": st.one_of(st.none(), durations),
        "cron": st.one_of(st.none(), crons),
        "timezone": timezones,
    },
)

# -- checks ---------------------------------------------------------------------------------


def check_error(exc: BaseException, given: dict[str, Any] | None = None) -> None:
    """The refusal is a WorkManagerError that names the field and shows the value."""
    assert isinstance(exc, wm.WorkManagerError), f"{type(exc).__name__} leaked: {exc!r}"
    if isinstance(exc, wm.UnknownWorkerError):
        assert repr(exc.name) in str(exc)
        return
    assert isinstance(exc, wm.InvalidRequestError), repr(exc)
    message = str(exc)
    assert exc.field
    assert exc.field in message
    try:
        shown = repr(exc.value)
    except Exception:  # noqa: BLE001  # an unprintable value: the message says so
        assert "repr() failed" in message
    else:
        assert shown[:150] in message
    if given is None:
        return
    top = exc.field.split(".")[0]
    if top in given and exc.field in ("worker", "timezone", "max_attempts", "expedited"):
        # A top-level scalar field: the value shown is the one given.
        assert exc.value is given[top] or exc.value == given[top] or _is_nan(given[top])


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def build(kind: Callable[..., T], worker: object, kwargs: dict[str, Any]) -> T | None:
    """Construct a request; None when construction rightly refuses."""
    try:
        return kind(worker, **kwargs)
    except Exception as exc:  # noqa: BLE001  # check_error fails on anything not ours
        check_error(exc, {"worker": worker, **kwargs})
        return None


# -- the module's managers ------------------------------------------------------------------


class Harness:
    """A running manager on a portal loop, with a virtual clock that nobody advances
    except :meth:`snapshot` (by zero, to let due works finish before a read)."""

    def __init__(self, portal: BlockingPortal, manager: wm.WorkManager, clock: VirtualClock):
        self.portal = portal
        self.manager = manager
        self.clock = clock

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return self.portal.call(fn)

    async def snapshot(self) -> list[wm.WorkInfo]:
        await self.clock.advance(0)
        return await self.manager.get_work_infos(ALL)

    def refused_without_change(self, operation: Callable[[], Awaitable[object]]) -> object:
        """Run ``operation``; if it raises, check the error and that nothing changed.
        Returns what it returned, or the exception."""

        async def run() -> object:
            before = await self.snapshot()
            try:
                result = await operation()
            except Exception as exc:  # noqa: BLE001  # checked just below
                check_error(exc)
                after = await self.snapshot()
                assert after == before, "a refused call changed the store"
                return exc
            return result

        return self.call(run)


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    url = "memory://"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'wm.db'}"
    clock = VirtualClock()
    manager = wm.WorkManager(url, clock=clock, shutdown_grace=0, max_data_bytes=2048)

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"echo": ctx.input})

    @manager.worker("'); DROP TABLE wm_work; --")
    async def hostile(ctx: wm.WorkContext) -> None:
        return None

    # The manager's task group must be entered and left in one task: the portal runs
    # the context manager in a task of its own.
    with start_blocking_portal("asyncio") as portal, portal.wrap_async_context_manager(manager):
        yield Harness(portal, manager, clock)


# -- requests -------------------------------------------------------------------------------


@SETTINGS
@given(worker=names, kwargs=one_time_fields)
def test_one_time_requests(harness: Harness, worker: object, kwargs: dict[str, Any]) -> None:
    req = build(wm.OneTimeWorkRequest, worker, kwargs)
    if req is None:
        return
    anchor = wm.OneTimeWorkRequest("w", initial_delay=3600)
    result = harness.refused_without_change(lambda: harness.manager.enqueue(anchor, req))
    if isinstance(result, Exception):
        return

    async def check() -> None:
        got = await harness.manager.get_work_info(req.id)
        assert got is not None
        assert got.input == req.input
        assert got.tags == req.tags
        assert got.worker == req.worker

    harness.call(check)


@SETTINGS
@given(worker=names, kwargs=periodic_fields)
def test_periodic_requests(harness: Harness, worker: object, kwargs: dict[str, Any]) -> None:
    req = build(wm.PeriodicWorkRequest, worker, kwargs)
    if req is None:
        return
    result = harness.refused_without_change(lambda: harness.manager.enqueue(req))
    if isinstance(result, Exception):
        return

    async def check() -> None:
        got = await harness.manager.get_work_info(req.id)
        assert got is not None
        assert got.periodicity == req.periodicity
        assert got.next_schedule_time is not None or got.state is not wm.WorkState.ENQUEUED
        await harness.manager.cancel_work_by_id(req.id)  # periodic work never ends

    harness.call(check)


@SETTINGS
@given(output=payloads)
def test_result_and_progress_data(harness: Harness, output: object) -> None:
    try:
        wm.Result.success(output)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001  # checked
        check_error(exc)
    try:
        wm.Result.failure(output)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001  # checked
        check_error(exc)


# -- queries, names, policies ---------------------------------------------------------------


@SETTINGS
@given(
    ids=st.one_of(st.lists(st.one_of(st.uuids(), st.text(max_size=40), anything)), anything),
    tags=st.one_of(st.lists(names, max_size=3), names),
    unique_names=st.one_of(st.lists(names, max_size=3), names),
    states=st.one_of(
        st.lists(st.one_of(st.sampled_from(list(wm.WorkState)), names), max_size=3), names
    ),
)
def test_queries(
    harness: Harness, ids: object, tags: object, unique_names: object, states: object
) -> None:
    try:
        query = wm.WorkQuery(ids=ids, tags=tags, unique_names=unique_names, states=states)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001  # checked
        check_error(exc)
        return

    async def run() -> None:
        infos = await harness.manager.get_work_infos(query)
        assert all(query.matches(i) for i in infos)
        everything = await harness.manager.get_work_infos(ALL)
        assert {i.id for i in infos} == {i.id for i in everything if query.matches(i)}

    harness.call(run)


@SETTINGS
@given(name=names, policy=policies, worker=st.sampled_from(["w", "nobody"]))
def test_enqueue_unique_work(harness: Harness, name: object, policy: object, worker: str) -> None:
    req = wm.OneTimeWorkRequest(worker, initial_delay=3600)
    result = harness.refused_without_change(
        lambda: harness.manager.enqueue_unique_work(name, policy, req)  # type: ignore[arg-type]
    )
    if isinstance(result, Exception):
        return

    async def check() -> None:
        got = await harness.manager.get_work_info(req.id)
        if result:
            assert got is not None
            assert got.unique_name == name
        await harness.manager.cancel_unique_work(name)  # type: ignore[arg-type]

    harness.call(check)


@SETTINGS
@given(name=names, policy=periodic_policies, request_kind=st.sampled_from(["periodic", "once"]))
def test_enqueue_unique_periodic_work(
    harness: Harness, name: object, policy: object, request_kind: str
) -> None:
    req: object = (
        wm.PeriodicWorkRequest("w", repeat_interval=3600)
        if request_kind == "periodic"
        else wm.OneTimeWorkRequest("w")
    )
    result = harness.refused_without_change(
        lambda: harness.manager.enqueue_unique_periodic_work(name, policy, req)  # type: ignore[arg-type]
    )
    if not isinstance(result, Exception):
        harness.call(lambda: harness.manager.cancel_unique_work(name))  # type: ignore[arg-type]


@SETTINGS
@given(
    target=st.sampled_from(["once", "periodic", "unknown"]),
    kind=st.sampled_from(["once", "periodic"]),
    worker=st.sampled_from(["w", "nobody"]),
    kwargs=one_time_fields,
)
def test_update_work(
    harness: Harness, target: str, kind: str, worker: str, kwargs: dict[str, Any]
) -> None:
    work_id = uuid.uuid4()
    existing = (
        wm.PeriodicWorkRequest("w", repeat_interval=3600, id=work_id)
        if target == "periodic"
        else wm.OneTimeWorkRequest("w", initial_delay=3600, id=work_id)
    )
    if target != "unknown":
        harness.call(lambda: harness.manager.enqueue(existing))
    kwargs = {k: v for k, v in kwargs.items() if k not in ("expedited", "input_merger")}
    kwargs["id"] = work_id
    if kind == "periodic":
        kwargs["repeat_interval"] = 7200
    new: wm.OneTimeWorkRequest | wm.PeriodicWorkRequest | None
    if kind == "periodic":
        new = build(wm.PeriodicWorkRequest, worker, kwargs)
    else:
        new = build(wm.OneTimeWorkRequest, worker, kwargs)
    if new is None:
        return
    checked = new
    result = harness.refused_without_change(lambda: harness.manager.update_work(checked))
    if not isinstance(result, Exception):
        assert result is wm.UpdateResult.APPLIED_IMMEDIATELY
        harness.call(lambda: harness.manager.cancel_work_by_id(work_id))
    else:
        assert (
            target == "unknown"
            or worker == "nobody"
            or (kind == "periodic") != (target == "periodic")
        ), f"a valid update was refused: {result!r}"


# -- chains ---------------------------------------------------------------------------------

step_items = st.one_of(
    st.just("new"),
    st.just("new-nobody"),
    st.just("periodic"),
    st.just("repeat"),  # a request already in the chain
    anything,
)


@SETTINGS
@given(steps=st.lists(st.lists(step_items, max_size=3), min_size=1, max_size=4))
def test_chains(harness: Harness, steps: list[list[object]]) -> None:
    seen: list[wm.OneTimeWorkRequest] = []

    def make(item: object) -> object:
        if item == "new":
            seen.append(wm.OneTimeWorkRequest("w", initial_delay=3600))
            return seen[-1]
        if item == "new-nobody":
            return wm.OneTimeWorkRequest("nobody")
        if item == "periodic":
            return wm.PeriodicWorkRequest("w", repeat_interval=60)
        if item == "repeat" and seen:
            return seen[0]
        return item

    chain: wm.WorkContinuation | None = None
    try:
        for step in steps:
            requests = [make(i) for i in step]
            chain = (
                harness.manager.begin_with(*requests)  # type: ignore[arg-type]
                if chain is None
                else chain.then(*requests)  # type: ignore[arg-type]
            )
    except Exception as exc:  # noqa: BLE001  # checked
        check_error(exc)
        return
    assert chain is not None
    built = chain
    result = harness.refused_without_change(built.enqueue)
    if not isinstance(result, Exception):
        ids = built.ids
        harness.call(lambda: harness.manager.cancel_work_by_id(ids[0]))


# -- manager options and the rest -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    option=st.sampled_from(
        [
            "max_concurrency",
            "shutdown_grace",
            "keep_results_for",
            "max_data_bytes",
            "default_timeout",
            "prune_interval",
            "blocked_loop_warning",
        ]
    ),
    value=st.one_of(anything, durations),
)
def test_manager_options(option: str, value: object) -> None:
    error: Exception | None = None
    try:
        wm.WorkManager("memory://", **{option: value})  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001  # checked below
        error = exc
    if error is not None:
        check_error(error, {option: value})
        assert isinstance(error, wm.InvalidRequestError)
        assert error.field == option


@settings(max_examples=150, deadline=None)
@given(cron=crons, timezone=timezones)
def test_cron_and_timezone_alone(cron: object, timezone: object) -> None:
    try:
        req = wm.PeriodicWorkRequest("w", cron=cron, timezone=timezone)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001  # checked
        check_error(exc)
        return
    # Accepted: the schedule yields a next time (or refuses the same way), never hangs.
    from wm_async._core.cron import CronSchedule

    assert req.cron is not None
    schedule = CronSchedule.parse(req.cron, req.timezone)
    try:
        schedule.next_after(1_900_000_000.0)
    except Exception as exc:  # noqa: BLE001  # checked
        check_error(exc)


@settings(max_examples=100, deadline=None)
@given(
    work_id=st.one_of(st.text(max_size=40), anything),
    tag=names,
    name=names,
)
def test_ids_and_names_of_lookups(
    harness: Harness, work_id: object, tag: object, name: object
) -> None:
    m = harness.manager
    for call in (
        lambda: m.get_work_info(work_id),  # type: ignore[arg-type]
        lambda: m.cancel_work_by_id(work_id),  # type: ignore[arg-type]
        lambda: m.explain(work_id),  # type: ignore[arg-type]
        lambda: m.cancel_all_work_by_tag(tag),  # type: ignore[arg-type]
        lambda: m.cancel_unique_work(name),  # type: ignore[arg-type]
    ):
        harness.refused_without_change(call)


def test_the_harness_detects_a_changed_store(harness: Harness) -> None:
    """refused_without_change must notice a refused call that did write something."""
    m = harness.manager

    async def writes_then_fails() -> None:
        await m.enqueue(wm.OneTimeWorkRequest("w", initial_delay=3600))
        raise wm.InvalidRequestError("x", 1, "made up")

    with pytest.raises(AssertionError, match="changed the store"):
        harness.refused_without_change(writes_then_fails)
    harness.call(m.cancel_all_work)
