"""A worker's retry policy, declared at registration (semantics 46): ``retry_on``, and
defaults for ``timeout``, ``backoff`` and ``max_attempts`` that a request overrides;
``Result.retry(delay=)``. On every store, on the virtual clock."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing import VirtualClock
from wm_async.testing.conformance._helpers import record, running

MakeManager = Callable[..., wm.WorkManager]
TIMEOUT = 30  # real seconds: a bound on each test's waits, never a measured time


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


async def info(manager: wm.WorkManager, req: wm.OneTimeWorkRequest) -> wm.WorkInfo:
    found = await manager.get_work_info(req.id)
    assert found is not None
    return found


class Flaky(ConnectionError):
    """A listed exception's subclass."""


# -- retry_on


@pytest.mark.parametrize("raised", [ConnectionError, Flaky])
async def test_a_listed_exception_retries_after_the_backoff_and_is_shown_meanwhile(
    make_manager: MakeManager, clock: VirtualClock, raised: type[Exception]
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("w", retry_on=(TimeoutError, ConnectionError))
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        if len(runs) == 1:
            raise raised("the service is down")
        return wm.Result.success({"ok": True})

    req = wm.OneTimeWorkRequest("w", backoff=wm.Backoff(delay=timedelta(seconds=10)))
    with anyio.fail_after(TIMEOUT):
        async with manager:
            t0 = clock.now()
            await manager.enqueue(req)
            await clock.advance(0)
            waiting = await info(manager, req)
            assert waiting.state is wm.WorkState.ENQUEUED
            assert waiting.run_attempt_count == 1
            assert waiting.error is not None
            assert waiting.error.type.endswith(raised.__qualname__)
            assert waiting.error.message == "the service is down"
            assert waiting.next_schedule_time == datetime.fromtimestamp(t0 + 10, UTC)
            await clock.advance(9.9)
            assert len(runs) == 1
            await clock.advance(0.1)
            done = await info(manager, req)
    assert runs == [t0, t0 + 10]
    assert done.state is wm.WorkState.SUCCEEDED
    assert done.output == {"ok": True}
    assert done.error is None  # a success clears it


async def test_an_unlisted_exception_fails_the_work(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("w", retry_on=ConnectionError, max_attempts=5)
    async def work(ctx: wm.WorkContext) -> None:
        runs.append(clock.now())
        raise ValueError("bad input")

    req = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(TIMEOUT):
        async with manager:
            await manager.enqueue(req)
            await clock.advance(timedelta(hours=1))
            got = await info(manager, req)
    assert len(runs) == 1
    assert got.state is wm.WorkState.FAILED
    assert got.error == wm.WorkError(type="ValueError", message="bad input")


async def test_the_workers_max_attempts_ends_the_retries(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker(
        "w",
        retry_on=(ConnectionError,),
        max_attempts=3,
        backoff=wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(seconds=5)),
    )
    async def work(ctx: wm.WorkContext) -> None:
        runs.append(clock.now())
        raise ConnectionError("still down")

    req = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(TIMEOUT):
        async with manager:
            await manager.enqueue(req)
            await clock.advance(timedelta(hours=1))
            got = await info(manager, req)
    assert gaps(runs) == [5, 10]  # the worker's backoff, LINEAR from 5 s
    assert got.state is wm.WorkState.FAILED
    assert got.run_attempt_count == 3
    assert got.error is not None
    assert got.error.type == "wm_async.MaxAttemptsReached"
    assert "ConnectionError: still down" in got.error.message
    assert "max_attempts=3" in got.error.message


async def test_a_sync_workers_listed_exception_retries_too(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[int] = []

    def work(ctx: wm.WorkContext) -> None:  # runs in a thread
        runs.append(ctx.run_attempt_count)
        if len(runs) == 1:
            raise TimeoutError("slow upstream")

    manager.register_worker("w", work, retry_on=TimeoutError, backoff=wm.Backoff(delay=1))
    req = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(TIMEOUT):
        async with manager, manager.watch(wm.WorkQuery(ids={req.id})) as watcher:
            await manager.enqueue(req)
            await clock.advance(0)
            # The thread's run ends in its own time (a virtual clock does not wait for
            # threads): wait for the retry to be recorded before moving time on.
            async for first in watcher:
                if first.state is wm.WorkState.ENQUEUED and first.run_attempt_count == 1:
                    break
            await clock.advance(1)
            got = await manager.wait(req.id)
    assert first.state is wm.WorkState.ENQUEUED
    assert first.error == wm.WorkError(type="TimeoutError", message="slow upstream")
    assert runs == [0, 1]
    assert got.state is wm.WorkState.SUCCEEDED


async def test_the_workers_max_attempts_bounds_interruptions_too(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("w", timeout=5, max_attempts=2)
    async def work(ctx: wm.WorkContext) -> None:
        runs.append(clock.now())
        await anyio.sleep_forever()

    req = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(TIMEOUT):
        async with manager:
            t0 = clock.now()
            await manager.enqueue(req)
            await clock.advance(timedelta(minutes=5))
            got = await info(manager, req)
    assert runs == [t0, t0 + 5]  # a timeout re-enqueues at once (no backoff)
    assert got.state is wm.WorkState.FAILED
    assert got.stop_reason is wm.StopReason.TIMEOUT
    assert got.error is not None
    assert got.error.type == "wm_async.MaxAttemptsReached"
    assert "max_attempts=2" in got.error.message


# -- the request overrides the worker's defaults


@pytest.mark.parametrize(("requested", "expected_runs"), [(None, 2), (4, 4), (1, 1)])
async def test_the_requests_max_attempts_overrides_the_workers(
    make_manager: MakeManager, clock: VirtualClock, requested: int | None, expected_runs: int
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("w", max_attempts=2)
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        return wm.Result.retry()

    req = wm.OneTimeWorkRequest("w", max_attempts=requested)
    with anyio.fail_after(TIMEOUT):
        async with manager:
            await manager.enqueue(req)
            await clock.advance(timedelta(hours=6))
            got = await info(manager, req)
    assert len(runs) == expected_runs
    assert got.state is wm.WorkState.FAILED
    assert got.run_attempt_count == expected_runs


@pytest.mark.parametrize(
    ("backoff", "expected_gaps"),
    [
        (None, [10, 20, 30]),  # the worker's: LINEAR from 10 s
        (wm.Backoff(delay=timedelta(seconds=3)), [3, 6, 12]),  # the request's
    ],
)
async def test_the_workers_backoff_applies_unless_the_request_sets_one(
    make_manager: MakeManager,
    clock: VirtualClock,
    backoff: wm.Backoff | None,
    expected_gaps: list[float],
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("w", backoff=wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(seconds=10)))
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        return wm.Result.success() if len(runs) == 4 else wm.Result.retry()

    req = (
        wm.OneTimeWorkRequest("w")
        if backoff is None
        else wm.OneTimeWorkRequest("w", backoff=backoff)
    )
    with anyio.fail_after(TIMEOUT):
        async with manager:
            await manager.enqueue(req)
            await clock.advance(timedelta(hours=1))
            assert (await info(manager, req)).state is wm.WorkState.SUCCEEDED
    assert gaps(runs) == expected_gaps


@pytest.mark.parametrize(("requested", "expected"), [(None, 5), (20, 20)])
async def test_the_workers_timeout_applies_unless_the_request_sets_one(
    make_manager: MakeManager, clock: VirtualClock, requested: int | None, expected: float
) -> None:
    manager = make_manager(default_timeout=timedelta(seconds=100))
    stopped: list[tuple[float, wm.StopReason]] = []

    @manager.worker("w", timeout=timedelta(seconds=5))
    async def work(ctx: wm.WorkContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.append((clock.now(), ctx.stop_reason))

    req = wm.OneTimeWorkRequest("w", timeout=requested, max_attempts=1)
    with anyio.fail_after(TIMEOUT):
        async with manager:
            t0 = clock.now()
            await manager.enqueue(req)
            await clock.advance(expected - 0.5)
            assert (await info(manager, req)).state is wm.WorkState.RUNNING
            await clock.advance(0.5)
            got = await info(manager, req)
    assert stopped == [(t0 + expected, wm.StopReason.TIMEOUT)]
    assert got.state is wm.WorkState.FAILED
    assert got.stop_reason is wm.StopReason.TIMEOUT


async def test_without_a_worker_timeout_the_managers_default_applies(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(default_timeout=timedelta(seconds=7))
    stopped: list[float] = []

    @manager.worker("w", max_attempts=1)  # a policy, but no timeout in it
    async def work(ctx: wm.WorkContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.append(clock.now())

    with anyio.fail_after(TIMEOUT):
        async with manager:
            t0 = clock.now()
            await manager.enqueue(wm.OneTimeWorkRequest("w"))
            await clock.advance(60)
    assert stopped == [t0 + 7]


# -- Result.retry(delay=)


@pytest.mark.parametrize("delay", [timedelta(seconds=3), 3, 3.0])
async def test_result_retry_delay_replaces_the_backoff_once(
    make_manager: MakeManager, clock: VirtualClock, delay: timedelta | float
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("w", backoff=wm.Backoff(delay=timedelta(seconds=10)))
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        if len(runs) == 1:
            return wm.Result.retry(delay=delay)
        return wm.Result.success() if len(runs) == 4 else wm.Result.retry()

    req = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(TIMEOUT):
        async with manager:
            await manager.enqueue(req)
            await clock.advance(2.9)
            assert len(runs) == 1
            await clock.advance(0.1)
            assert len(runs) == 2
            await clock.advance(timedelta(hours=1))
            assert (await info(manager, req)).state is wm.WorkState.SUCCEEDED
    # 3 s once, then the backoff for attempts 2 and 3: 10 · 2 and 10 · 4.
    assert gaps(runs) == [3, 20, 40]


async def test_result_retry_delay_zero_runs_again_at_once_and_respects_max_attempts(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("w", max_attempts=3)
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        return wm.Result.retry(delay=0)

    req = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(TIMEOUT):
        async with manager:
            t0 = clock.now()
            await manager.enqueue(req)
            await clock.advance(0)
            got = await info(manager, req)
    assert runs == [t0, t0, t0]
    assert got.state is wm.WorkState.FAILED
    assert got.error is not None
    assert got.error.type == "wm_async.MaxAttemptsReached"


# -- the policy is applied by the process that runs the work


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
async def test_a_producers_works_get_the_workers_policy_where_they_run(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    producer = make_manager(run_work=False)  # no registry: no policy known here
    worker = make_manager(default_timeout=timedelta(seconds=100))
    flaky_runs: list[float] = []
    stuck_stops: list[float] = []

    @worker.worker(
        "flaky",
        retry_on=(ConnectionError,),
        backoff=wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(seconds=10)),
        max_attempts=3,
    )
    async def flaky(ctx: wm.WorkContext) -> None:
        flaky_runs.append(clock.now())
        raise ConnectionError("down")

    @worker.worker("stuck", timeout=timedelta(seconds=5), max_attempts=1)
    async def stuck(ctx: wm.WorkContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stuck_stops.append(clock.now())

    first, second = wm.OneTimeWorkRequest("flaky"), wm.OneTimeWorkRequest("stuck")
    with anyio.fail_after(TIMEOUT):
        async with producer:
            await producer.enqueue(first, second)
        async with worker:
            t0 = clock.now()
            await clock.advance(0)
            await clock.advance(timedelta(minutes=5))
            done = [await worker.wait(r.id) for r in (first, second)]
    assert gaps(flaky_runs) == [10, 20]
    assert stuck_stops == [t0 + 5]
    assert [d.state for d in done] == [wm.WorkState.FAILED, wm.WorkState.FAILED]
    assert done[0].error is not None
    assert done[0].error.type == "wm_async.MaxAttemptsReached"
    assert done[1].stop_reason is wm.StopReason.TIMEOUT


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_crash_recovered_work_past_the_workers_max_attempts_fails_unrun(
    make_manager: MakeManager, clock: VirtualClock, tmp_path: Path
) -> None:
    # The store's crash recovery (semantics 15) knows only the request's max_attempts:
    # a work whose one allowed run was lost to a crash is claimed again, and then fails
    # without running.
    async with SQLiteStore(tmp_path / "wm.db") as store:
        orphan = await running(store, record("w", at=clock.now()), now=clock.now())
    assert orphan.run_attempt_count == 1
    manager = make_manager()
    ran: list[str] = []

    @manager.worker("w", max_attempts=1)
    async def work(ctx: wm.WorkContext) -> None:
        ran.append("x")

    with anyio.fail_after(TIMEOUT):
        async with manager:
            await clock.advance(0)
            got = await manager.wait(orphan.id)
    assert ran == []
    assert got.state is wm.WorkState.FAILED
    assert got.run_attempt_count == 1
    assert got.error is not None
    assert got.error.type == "wm_async.MaxAttemptsReached"


# -- bad input, refused at the call


class NotAnError:
    pass


BAD_POLICIES: list[dict[str, object]] = [
    {"retry_on": "ValueError"},
    {"retry_on": ValueError("x")},
    {"retry_on": (ValueError, 1)},
    {"retry_on": [NotAnError]},
    {"retry_on": (KeyboardInterrupt,)},
    {"retry_on": 3},
    {"timeout": 0},
    {"timeout": -1},
    {"timeout": timedelta(seconds=-5)},
    {"timeout": math.nan},
    {"timeout": "10"},
    {"max_attempts": 0},
    {"max_attempts": -2},
    {"max_attempts": 1.5},
    {"max_attempts": True},
    {"backoff": 10},
    {"backoff": "EXPONENTIAL"},
]


@pytest.mark.parametrize("store_url", ["memory"], indirect=True)
@pytest.mark.parametrize("bad", BAD_POLICIES, ids=repr)
def test_a_bad_policy_raises_at_registration(
    make_manager: MakeManager, bad: dict[str, object]
) -> None:
    manager = make_manager()

    async def work(ctx: wm.WorkContext) -> None:
        pass

    with pytest.raises(wm.InvalidRequestError) as caught:
        manager.worker("w", **bad)  # type: ignore[arg-type]
    assert caught.value.field == next(iter(bad))
    with pytest.raises(wm.InvalidRequestError):
        manager.register_worker("w", work, **bad)  # type: ignore[arg-type]
    manager.register_worker("w", work)  # nothing was registered under the name


@pytest.mark.parametrize("store_url", ["memory"], indirect=True)
def test_good_policies_are_accepted(make_manager: MakeManager) -> None:
    manager = make_manager()

    async def work(ctx: wm.WorkContext) -> None:
        pass

    manager.register_worker("a", work, retry_on=ValueError, timeout=0.5, max_attempts=1)
    manager.register_worker("b", work, retry_on=[OSError, Flaky], backoff=wm.Backoff())
    manager.worker("c", retry_on=(), timeout=timedelta(minutes=1))(work)


@pytest.mark.parametrize(
    "delay", [-1, timedelta(seconds=-1), math.nan, math.inf, "3", True, timedelta(days=40000)]
)
def test_result_retry_refuses_a_bad_delay(delay: object) -> None:
    with pytest.raises(wm.InvalidRequestError):
        wm.Result.retry(delay=delay)  # type: ignore[arg-type]


def test_only_a_retry_has_a_delay() -> None:
    assert wm.Result.retry(delay=2).retry_delay == timedelta(seconds=2)
    assert wm.Result.retry().retry_delay is None
    with pytest.raises(wm.InvalidRequestError):
        wm.Result(kind=wm.ResultKind.SUCCESS, retry_delay=timedelta(seconds=1))
