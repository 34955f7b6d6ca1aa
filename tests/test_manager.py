"""Public-API semantics of one-time work, run against every store with the virtual clock."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import timedelta

import anyio
import anyio.abc
import pytest

import wm_async as wm
from wm_async._core.record import WorkRecord
from wm_async.stores.memory import MemoryStore
from wm_async.testing import (
    TestDriver,
    VirtualClock,
)

MakeManager = Callable[..., wm.WorkManager]


@pytest.fixture
def manager(make_manager: MakeManager) -> wm.WorkManager:
    return make_manager()


def request(worker: str = "w", **kwargs: object) -> wm.OneTimeWorkRequest:
    return wm.OneTimeWorkRequest(worker, **kwargs)  # type: ignore[arg-type]


async def info(manager: wm.WorkManager, req: wm.OneTimeWorkRequest) -> wm.WorkInfo:
    found = await manager.get_work_info(req.id)
    assert found is not None
    return found


# -- running and results (semantics 7-9)


async def test_work_runs_once_and_succeeds_with_output(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    seen: list[tuple[object, int]] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        seen.append((ctx.input["x"], ctx.run_attempt_count))
        return wm.Result.success({"doubled": 2 * int(str(ctx.input["x"]))})

    req = request(input={"x": 21})
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        got = await info(manager, req)
    assert seen == [(21, 0)]
    assert got.state is wm.WorkState.SUCCEEDED
    assert got.output == {"doubled": 42}
    assert got.run_attempt_count == 1
    assert got.finished_at is not None
    assert got.started_at is not None
    assert got.next_schedule_time is None
    assert got.progress == {}


async def test_none_is_success_and_exception_is_failure_with_error(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    @manager.worker("ok")
    async def ok(ctx: wm.WorkContext) -> None:
        return None

    @manager.worker("boom")
    async def boom(ctx: wm.WorkContext) -> None:
        raise KeyError("missing thing")

    a, b = request("ok"), request("boom")
    async with manager:
        await manager.enqueue(a, b)
        await clock.advance(0)
        ia, ib = await info(manager, a), await info(manager, b)
    assert ia.state is wm.WorkState.SUCCEEDED
    assert ia.error is None
    assert ib.state is wm.WorkState.FAILED
    assert ib.error == wm.WorkError(type="KeyError", message="'missing thing'")
    assert ib.run_attempt_count == 1


async def test_result_failure_keeps_output(manager: wm.WorkManager, clock: VirtualClock) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.failure({"why": "bad input"})

    req = request()
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        got = await info(manager, req)
    assert got.state is wm.WorkState.FAILED
    assert got.output == {"why": "bad input"}
    assert got.error is None


async def test_wrong_return_type_fails_with_clear_error(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    async def work(ctx: wm.WorkContext) -> object:
        return 42

    manager.register_worker("w", work)  # type: ignore[arg-type]  # deliberately wrong

    req = request()
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        got = await info(manager, req)
    assert got.state is wm.WorkState.FAILED
    assert got.error is not None
    assert got.error.type == "TypeError"
    assert "returned int" in got.error.message


async def test_oversized_output_fails_the_work(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_data_bytes=100)

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"blob": "x" * 500})

    req = request()
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        got = await info(manager, req)
    assert got.state is wm.WorkState.FAILED
    assert got.error is not None
    assert got.error.type == "wm_async._errors.DataTooLargeError"
    assert got.output == {}


async def test_sync_worker_runs_in_a_thread(manager: wm.WorkManager, clock: VirtualClock) -> None:
    threads: list[int] = []

    @manager.worker("w")
    def work(ctx: wm.WorkContext) -> wm.Result:
        threads.append(threading.get_ident())
        return wm.Result.success({"sync": True})

    req = request()
    async with manager:
        await manager.enqueue(req)
        with anyio.fail_after(5):
            got = await manager.wait(req.id)
    assert got.output == {"sync": True}
    assert threads
    assert threads[0] != threading.get_ident()


# -- delays and backoff (semantics 10, 11)


async def test_initial_delay_is_respected(manager: wm.WorkManager, clock: VirtualClock) -> None:
    started: list[float] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        started.append(clock.now())

    req = request(initial_delay=timedelta(minutes=5))
    async with manager:
        t0 = clock.now()
        await manager.enqueue(req)
        got = await info(manager, req)
        assert got.state is wm.WorkState.ENQUEUED
        assert got.next_schedule_time is not None
        assert got.next_schedule_time.timestamp() == t0 + 300
        await clock.advance(299)
        assert started == []
        await clock.advance(1)
        assert started == [t0 + 300]


async def test_delayed_works_run_on_time_whatever_order_they_are_enqueued_in(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    # A delayed work enqueued while the dispatcher sleeps until an earlier due time does
    # not wake it (its next claim finds the work); one due earlier does.
    started: dict[str, float] = {}

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        started[str(ctx.id)] = clock.now()

    async with manager:
        t0 = clock.now()
        middle, later, earlier = (request(initial_delay=d) for d in (60, 120, 30))
        for req in (middle, later, earlier):
            await manager.enqueue(req)
        await clock.advance(29)
        assert started == {}
        await clock.advance(200)
        assert started == {
            str(earlier.id): t0 + 30,
            str(middle.id): t0 + 60,
            str(later.id): t0 + 120,
        }


@pytest.mark.parametrize(
    ("policy", "expected_gaps"),
    [
        (wm.BackoffPolicy.EXPONENTIAL, [10, 20, 40, 80, 100]),
        (wm.BackoffPolicy.LINEAR, [10, 20, 30, 40, 50]),
    ],
)
async def test_retry_backoff_timings_and_cap(
    manager: wm.WorkManager,
    clock: VirtualClock,
    policy: wm.BackoffPolicy,
    expected_gaps: list[int],
) -> None:
    runs: list[float] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        return wm.Result.success() if len(runs) == 6 else wm.Result.retry()

    backoff = wm.Backoff(policy, timedelta(seconds=10), max_delay=timedelta(seconds=100))
    req = request(backoff=backoff)
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        got = await info(manager, req)
        assert got.state is wm.WorkState.ENQUEUED
        assert got.run_attempt_count == 1
        assert got.output == {}
        await clock.advance(timedelta(hours=1))
        got = await info(manager, req)
    gaps = [round(b - a) for a, b in itertools.pairwise(runs)]
    assert gaps == expected_gaps
    assert got.state is wm.WorkState.SUCCEEDED
    assert got.run_attempt_count == 6


async def test_default_backoff_is_exponential_30s(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    runs: list[float] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        return wm.Result.retry()

    async with manager:
        await manager.enqueue(request(max_attempts=3))
        await clock.advance(timedelta(minutes=10))
    assert [round(b - a) for a, b in itertools.pairwise(runs)] == [30, 60]


async def test_max_attempts_turns_retry_into_failure(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.retry()

    req = request(max_attempts=3, backoff=wm.Backoff(delay=timedelta(seconds=1)))
    async with manager:
        await manager.enqueue(req)
        await clock.advance(timedelta(minutes=1))
        got = await info(manager, req)
    assert got.state is wm.WorkState.FAILED
    assert got.run_attempt_count == 3
    assert got.error is not None
    assert got.error.type == "wm_async.MaxAttemptsReached"


# -- timeouts (semantics 12)


async def test_timeout_cancels_and_reenqueues_without_backoff(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    runs: list[tuple[float, wm.StopReason]] = []
    stopped_with: list[wm.StopReason] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        runs.append((clock.now(), ctx.stop_reason))
        if ctx.run_attempt_count == 0:
            try:
                await anyio.sleep_forever()
            finally:
                stopped_with.append(ctx.stop_reason)

    req = request(timeout=timedelta(seconds=30))
    async with manager:
        t0 = clock.now()
        await manager.enqueue(req)
        await clock.advance(29)
        assert (await info(manager, req)).state is wm.WorkState.RUNNING
        await clock.advance(1)
        got = await info(manager, req)
    assert stopped_with == [wm.StopReason.TIMEOUT]
    # Re-enqueued due at once (no backoff), ran again at t0+30 and succeeded.
    assert [t for t, _ in runs] == [t0, t0 + 30]
    assert got.state is wm.WorkState.SUCCEEDED
    assert got.run_attempt_count == 2
    assert got.stop_reason is wm.StopReason.NOT_STOPPED  # the last run was not stopped


async def test_manager_default_timeout_applies(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(default_timeout=timedelta(seconds=5))

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        await anyio.sleep_forever()

    req = request(max_attempts=1)
    async with manager:
        await manager.enqueue(req)
        await clock.advance(5)
        got = await info(manager, req)
    assert got.state is wm.WorkState.FAILED
    assert got.stop_reason is wm.StopReason.TIMEOUT


# -- cancellation (semantics 29, 30)


async def test_cancel_waiting_work(manager: wm.WorkManager, clock: VirtualClock) -> None:
    ran: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append("x")

    req = request(initial_delay=60)
    async with manager:
        await manager.enqueue(req)
        assert await manager.cancel_work_by_id(req.id) is True
        await clock.advance(120)
        got = await info(manager, req)
        assert await manager.cancel_work_by_id(req.id) is False  # finished: no-op
    assert ran == []
    assert got.state is wm.WorkState.CANCELLED
    assert got.stop_reason is wm.StopReason.NOT_STOPPED


async def test_cancel_running_work_stops_worker_and_ignores_late_result(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    reasons: list[wm.StopReason] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            reasons.append(ctx.stop_reason)
        # Swallowing cancellation and returning a result anyway: it must be ignored.
        return wm.Result.success({"late": True})

    req = request()
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        assert (await info(manager, req)).state is wm.WorkState.RUNNING
        assert await manager.cancel_work_by_id(req.id)
        await clock.advance(0)
        got = await info(manager, req)
    assert reasons == [wm.StopReason.CANCELLED_BY_APP]
    assert got.state is wm.WorkState.CANCELLED
    assert got.stop_reason is wm.StopReason.CANCELLED_BY_APP
    assert got.output == {}


async def test_cancel_by_tag_and_cancel_all_touch_only_unfinished(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    done = request(tags={"a"})
    later_a = request(tags={"a"}, initial_delay=60)
    later_b = request(tags={"b"}, initial_delay=60)
    other = request(tags={"c"}, initial_delay=60)
    async with manager:
        await manager.enqueue(done)
        await clock.advance(0)
        await manager.enqueue(later_a, later_b, other)
        assert await manager.cancel_all_work_by_tag("a") == 1
        assert (await info(manager, done)).state is wm.WorkState.SUCCEEDED
        assert (await info(manager, later_a)).state is wm.WorkState.CANCELLED
        assert (await info(manager, later_b)).state is wm.WorkState.ENQUEUED
        assert await manager.cancel_all_work() == 2
        states = {i.state for i in await manager.get_work_infos(wm.WorkQuery(tags={"b", "c"}))}
    assert states == {wm.WorkState.CANCELLED}


# -- shutdown and recovery (semantics 14, 15)


async def test_graceful_shutdown_lets_quick_work_finish(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(shutdown_grace=timedelta(seconds=10))
    release = anyio.Event()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        await release.wait()

    req = request()
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        release.set()  # the run finishes during the grace period
    async with manager:
        got = await info(manager, req)
    assert got.state is wm.WorkState.SUCCEEDED
    assert got.run_attempt_count == 1


async def test_shutdown_interrupts_after_grace_and_reenqueues(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(shutdown_grace=timedelta(seconds=10))
    attempts: list[tuple[int, float]] = []
    stopped: list[wm.StopReason] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        attempts.append((ctx.run_attempt_count, clock.now()))
        if ctx.run_attempt_count == 0:
            try:
                await anyio.sleep_forever()
            finally:
                stopped.append(ctx.stop_reason)

    req = request()
    states: list[wm.RunState] = []

    async def move_time() -> None:
        await clock.advance(9)
        states.append(manager.state)
        assert stopped == []  # still inside the grace period
        await clock.advance(1)

    async with anyio.create_task_group() as tg, manager:
        t0 = clock.now()
        await manager.enqueue(req)
        await clock.advance(0)
        # Leaving `async with` waits the grace period on the manager's clock.
        tg.start_soon(move_time)
    assert states == [wm.RunState.STOPPING]
    assert stopped == [wm.StopReason.SHUTDOWN]
    got = await info_after_restart(manager, req)
    assert got.state is wm.WorkState.ENQUEUED
    assert got.stop_reason is wm.StopReason.SHUTDOWN
    assert got.run_attempt_count == 1
    async with manager:
        await clock.advance(0)
        got = await info(manager, req)
    assert got.state is wm.WorkState.SUCCEEDED
    assert attempts == [(0, t0), (1, t0 + 10)]


async def info_after_restart(manager: wm.WorkManager, req: wm.OneTimeWorkRequest) -> wm.WorkInfo:
    """Read a work from the store of a stopped manager."""
    assert manager.state is wm.RunState.STOPPED
    async with manager.store as store:
        records = await store.get([str(req.id)])
    return records[0].to_info()


async def test_not_running_manager_raises(manager: wm.WorkManager) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    with pytest.raises(wm.NotRunningError, match="stopped"):
        await manager.enqueue(request())
    async with manager:
        pass
    with pytest.raises(wm.NotRunningError):
        await manager.get_work_info(request().id)
    await manager.__aexit__(None, None, None)  # stopping twice is harmless


# -- enqueue validation


async def test_unknown_worker_raises_at_enqueue_and_stores_nothing(
    manager: wm.WorkManager,
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    good, bad = request("w"), request("nope")
    async with manager:
        with pytest.raises(wm.UnknownWorkerError, match="nope"):
            await manager.enqueue(good, bad)
        assert await manager.get_work_info(good.id) is None


async def test_oversized_input_raises_at_enqueue(make_manager: MakeManager) -> None:
    manager = make_manager(max_data_bytes=64)

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = request(input={"blob": "y" * 100})
    async with manager:
        with pytest.raises(wm.DataTooLargeError, match="max_data_bytes=64"):
            await manager.enqueue(req)
        assert await manager.get_work_info(req.id) is None


async def test_duplicate_id_is_rejected(manager: wm.WorkManager) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = request(initial_delay=60)
    async with manager:
        await manager.enqueue(req)
        with pytest.raises(wm.InvalidRequestError, match="already exists"):
            await manager.enqueue(request(id=req.id))


async def test_worker_removed_before_run_fails_the_work(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = request(initial_delay=10)
    async with manager:
        await manager.enqueue(req)
        manager.unregister_worker("w")
        await clock.advance(10)
        got = await info(manager, req)
    assert got.state is wm.WorkState.FAILED
    assert got.error is not None
    assert got.error.type == "wm_async._errors.UnknownWorkerError"
    assert "no worker registered as 'w'" in got.error.message


# -- capacity, expedited


async def test_max_concurrency_bounds_running_work(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=3)
    running = 0
    peak = 0
    release = anyio.Event()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    reqs = [request() for _ in range(10)]
    async with manager:
        await manager.enqueue(*reqs)
        await clock.advance(0)
        assert peak == 3
        running_now = await manager.get_work_infos(wm.WorkQuery(states={wm.WorkState.RUNNING}))
        assert len(running_now) == 3
        release.set()
        await clock.advance(0)
        infos = await manager.get_work_infos(wm.WorkQuery(ids={r.id for r in reqs}))
    assert {i.state for i in infos} == {wm.WorkState.SUCCEEDED}
    assert peak == 3


async def test_expedited_work_runs_ahead_of_ordinary_due_work(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=1)
    order: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        order.append(str(ctx.input["name"]))

    ordinary = [request(input={"name": f"o{i}"}) for i in range(3)]
    urgent = request(input={"name": "urgent"}, expedited=True)
    async with manager:
        await manager.enqueue(*ordinary, urgent)
        await clock.advance(0)
    assert order[0] == "urgent"
    assert sorted(order[1:]) == ["o0", "o1", "o2"]


# -- observation


async def test_progress_visible_while_running_and_cleared_after(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    step = anyio.Event()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        await ctx.set_progress({"done": 1})
        await step.wait()

    req = request()
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        assert (await info(manager, req)).progress == {"done": 1}
        step.set()
        await clock.advance(0)
        got = await info(manager, req)
    assert got.state is wm.WorkState.SUCCEEDED
    assert got.progress == {}


async def test_set_progress_rejects_bad_data(manager: wm.WorkManager, clock: VirtualClock) -> None:
    errors: list[BaseException] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        try:
            await ctx.set_progress({"bad": float("nan")})
        except wm.InvalidRequestError as exc:
            errors.append(exc)

    async with manager:
        await manager.enqueue(request())
        await clock.advance(0)
    assert len(errors) == 1
    assert "progress" in str(errors[0])


async def test_wait_returns_final_info(manager: wm.WorkManager, clock: VirtualClock) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"k": "v"})

    req = request(initial_delay=30)
    results: list[wm.WorkInfo] = []
    async with manager:
        await manager.enqueue(req)

        async def waiter() -> None:
            results.append(await manager.wait(req.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await clock.advance(30)
        never = request(initial_delay=3600)
        await manager.enqueue(never)
        with pytest.raises(TimeoutError):
            await manager.wait(never.id, timeout=0.01)
        with pytest.raises(wm.InvalidRequestError, match="no such work"):
            await manager.wait(request().id)
    assert results[0].state is wm.WorkState.SUCCEEDED
    assert results[0].output == {"k": "v"}


async def collect(watcher: wm.WorkWatcher, into: list[wm.WorkInfo]) -> None:
    async for got in watcher:
        into.append(got)  # noqa: PERF401  # each snapshot must be visible as it arrives


async def test_watch_yields_every_state_change_once(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.retry() if ctx.run_attempt_count == 0 else wm.Result.success()

    # A watcher delivers each work's latest state; it sees every change only while its
    # consumer keeps up. The delay holds the first run back until the watcher's first
    # snapshot (which advance() waits for) has been read.
    req = request(
        tags={"watched"}, initial_delay=1, backoff=wm.Backoff(delay=timedelta(seconds=5))
    )
    seen: list[wm.WorkInfo] = []
    async with manager:
        watcher = manager.watch(wm.WorkQuery(tags={"watched"}))
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, watcher, seen)
            await manager.enqueue(req, request())  # the second is not watched
            await clock.advance(0)
            assert [i.state for i in seen] == [wm.WorkState.ENQUEUED]
            await clock.advance(1)
            await clock.advance(5)
            await watcher.aclose()
    states = [(i.state, i.run_attempt_count) for i in seen]
    assert states == [
        (wm.WorkState.ENQUEUED, 0),
        (wm.WorkState.RUNNING, 1),
        (wm.WorkState.ENQUEUED, 1),
        (wm.WorkState.RUNNING, 2),
        (wm.WorkState.SUCCEEDED, 2),
    ]
    assert all(i.id == req.id for i in seen)
    assert all(a != b for a, b in itertools.pairwise(seen))


class GatedQueryStore(MemoryStore):
    """A memory store whose queries wait while the test holds the gate (a slow read)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: anyio.Event | None = None

    async def query(self, query: wm.WorkQuery) -> list[WorkRecord]:
        if self.gate is not None:
            await self.gate.wait()
        return await super().query(query)


async def test_advance_waits_for_a_watchers_first_read(clock: VirtualClock) -> None:
    # While a watcher's first read is in flight, time must not move: works run past a
    # snapshot nobody has yet, and the watcher would deliver only their latest state.
    store = GatedQueryStore()
    manager = wm.WorkManager(store, clock=clock, shutdown_grace=0)

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = request(initial_delay=1)
    seen: list[wm.WorkInfo] = []
    advanced = anyio.Event()

    async def advance() -> None:
        await clock.advance(1)
        advanced.set()

    start = clock.now()
    async with manager:
        await manager.enqueue(req)
        store.gate = gate = anyio.Event()
        watcher = manager.watch(wm.WorkQuery(ids={req.id}))
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, watcher, seen)
            tg.start_soon(advance)
            for _ in range(100):
                await anyio.lowlevel.checkpoint()
            assert not advanced.is_set()  # held by the read in flight
            assert clock.now() == start
            assert seen == []
            gate.set()
            await advanced.wait()
            await clock.advance(0)
            await watcher.aclose()
    assert [i.state for i in seen] == [
        wm.WorkState.ENQUEUED,
        wm.WorkState.RUNNING,
        wm.WorkState.SUCCEEDED,
    ]


async def test_watch_starts_with_current_state_and_ends_on_stop(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = request(initial_delay=60)
    seen: list[wm.WorkInfo] = []
    async with anyio.create_task_group() as tg, manager:
        await manager.enqueue(req)
        watcher = manager.watch(wm.WorkQuery(ids={req.id}))
        tg.start_soon(collect, watcher, seen)
        await clock.advance(0)
        # Leaving the manager ended the iteration, so the task group can finish.
    assert [i.state for i in seen] == [wm.WorkState.ENQUEUED]


async def test_queries_combine_fields(manager: wm.WorkManager, clock: VirtualClock) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    a = request(tags={"x"})
    b = request(tags={"y"}, initial_delay=60)
    c = request(tags={"x", "y"}, initial_delay=60)
    async with manager:
        await manager.enqueue(a, b, c)
        await clock.advance(0)
        by_tag = await manager.get_work_infos(wm.WorkQuery(tags={"x"}))
        assert {i.id for i in by_tag} == {a.id, c.id}
        enq_x = await manager.get_work_infos(
            wm.WorkQuery(tags={"x"}, states={wm.WorkState.ENQUEUED})
        )
        assert [i.id for i in enq_x] == [c.id]
        by_ids = await manager.get_work_infos(wm.WorkQuery(ids={a.id, b.id}))
        assert {i.id for i in by_ids} == {a.id, b.id}
        assert await manager.get_work_info(request().id) is None


# -- retention (semantics 34)


async def test_pruning_at_start_periodically_and_on_demand(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(
        keep_results_for=timedelta(hours=2), prune_interval=timedelta(minutes=30)
    )

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    old, pending = request(), request(initial_delay=timedelta(days=7))
    async with manager:
        await manager.enqueue(old, pending)
        await clock.advance(0)
        await clock.advance(timedelta(hours=1, minutes=59))
        assert await manager.get_work_info(old.id) is not None
        await clock.advance(timedelta(minutes=31))  # the pruner runs every 30 min
        assert await manager.get_work_info(old.id) is None
        assert await manager.get_work_info(pending.id) is not None
        fresh = request()
        await manager.enqueue(fresh)
        await clock.advance(0)
        assert await manager.prune_work() == 1
        assert await manager.get_work_info(fresh.id) is None
        assert await manager.get_work_info(pending.id) is not None


async def test_set_initial_delay_met(manager: wm.WorkManager, clock: VirtualClock) -> None:
    ran: list[float] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(clock.now())

    req = request(initial_delay=timedelta(days=1))
    async with manager:
        await manager.enqueue(req)
        await TestDriver(manager).set_initial_delay_met(req.id)
        await clock.advance(0)
        got = await info(manager, req)
    assert got.state is wm.WorkState.SUCCEEDED
    assert len(ran) == 1


async def test_errors_inside_async_with_propagate_unwrapped(manager: wm.WorkManager) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    with pytest.raises(wm.UnknownWorkerError):
        async with manager:
            await manager.enqueue(request("missing"))
    assert manager.state is wm.RunState.STOPPED
    with pytest.raises(ZeroDivisionError):
        async with manager:
            _ = 1 / 0


async def test_second_manager_on_one_sqlite_file_stands_by_then_takes_over(
    tmp_path: object,
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    first, second = wm.WorkManager(url), wm.WorkManager(url)
    ran: list[str] = []
    for manager in (first, second):

        def record(ctx: wm.WorkContext, m: wm.WorkManager = manager) -> None:
            ran.append(m.role)

        manager.register_worker("w", record)
    stop_first = anyio.Event()

    async def run_first(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with first:
            task_status.started()
            await stop_first.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(run_first)
            async with second:
                # Both serve calls; only the first schedules.
                assert (first.role, second.role) == ("scheduler", "standby")
                assert first.is_scheduling
                assert not second.is_scheduling
                assert second.statistics()["role"] == "standby"
                stop_first.set()
                work = wm.OneTimeWorkRequest("w")
                await second.enqueue(work)
                # The lock went with the first manager: the second takes over, runs it.
                assert (await second.wait(work.id)).state is wm.WorkState.SUCCEEDED
                assert second.role == "scheduler"
    assert ran == ["scheduler"]


async def test_zero_backoff_retries_are_reclaimed_while_the_last_run_records(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    runs: list[int] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        runs.append(ctx.run_attempt_count)
        return wm.Result.retry() if ctx.run_attempt_count < 20 else wm.Result.success()

    reqs = [request(backoff=wm.Backoff(delay=timedelta(0))) for _ in range(5)]
    async with manager:
        await manager.enqueue(*reqs)
        await clock.advance(0)
        infos = await manager.get_work_infos(wm.WorkQuery(ids={r.id for r in reqs}))
    assert {i.state for i in infos} == {wm.WorkState.SUCCEEDED}
    assert {i.run_attempt_count for i in infos} == {21}
    assert len(runs) == 5 * 21


async def test_wait_ends_with_not_running_when_the_manager_stops(
    manager: wm.WorkManager, clock: VirtualClock
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = request(initial_delay=3600)
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await manager.wait(req.id)
        except wm.NotRunningError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, manager:
            await manager.enqueue(req)
            tg.start_soon(waiter)
            await clock.advance(0)
    assert len(errors) == 1
