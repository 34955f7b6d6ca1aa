"""Priority on requests (semantics 48): among due works, expedited ones start first, then
higher priority, then earlier due; equal priorities keep due-time order. On every store,
on the virtual clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]
TIMEOUT = 30  # real seconds: a bound on each test's waits, never a measured time


async def until_finished(manager: wm.WorkManager, requests: list[wm.OneTimeWorkRequest]) -> None:
    """Wait (on real time, bounded by the caller) until every request's work finished."""
    while True:
        infos = [await manager.get_work_info(r.id) for r in requests]
        if all(i is not None and i.is_finished for i in infos):
            return
        await anyio.sleep(0.005)


def order_worker(manager: wm.WorkManager, started: list[str]) -> tuple[anyio.Event, anyio.Event]:
    """Register ``w`` (records its input's name when it starts) and ``blocker`` (sets
    the first event returned once running, then holds the one slot until the second is
    set)."""
    blocking, release = anyio.Event(), anyio.Event()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        started.append(str(ctx.input["name"]))
        return wm.Result.success()

    @manager.worker("blocker")
    async def block(ctx: wm.WorkContext) -> wm.Result:
        blocking.set()
        await release.wait()
        return wm.Result.success()

    return blocking, release


def req(name: str, **kw: object) -> wm.OneTimeWorkRequest:
    return wm.OneTimeWorkRequest("w", input={"name": name}, **kw)  # type: ignore[arg-type]


async def test_due_works_start_expedited_first_then_by_priority_then_by_due_time(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=1)
    started: list[str] = []
    blocking, release = order_worker(manager, started)
    # Due at t0 + delay; all due before the one slot frees.
    works = [
        req("plain-1s", initial_delay=1),
        req("high-3s", initial_delay=3, priority=5),
        req("low-0.5s", initial_delay=0.5, priority=-2),
        req("high-2s", initial_delay=2, priority=5),
        req("plain-4s", initial_delay=4),
        req("urgent-low", expedited=True, priority=-5),
        req("top-6s", initial_delay=6, priority=10),
        req("urgent-high", expedited=True, priority=3),
        req("plain-6s", initial_delay=6, priority=0),
    ]
    with anyio.fail_after(TIMEOUT):
        async with manager:
            blocker = wm.OneTimeWorkRequest("blocker")
            await manager.enqueue(blocker)
            await clock.advance(0)
            await blocking.wait()
            for work in works:
                await manager.enqueue(work)
            await clock.advance(10)
            assert started == []  # the slot is taken: nothing else started
            release.set()
            await until_finished(manager, works)
    assert started == [
        "urgent-high",
        "urgent-low",
        "top-6s",
        "high-2s",
        "high-3s",
        "plain-1s",
        "plain-4s",
        "plain-6s",
        "low-0.5s",
    ]


async def test_equal_priorities_keep_due_time_order(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=1)
    started: list[str] = []
    blocking, release = order_worker(manager, started)
    works = [req(f"p{p}-{d}", initial_delay=d, priority=p) for d in (5, 1, 3) for p in (-1, 4)]
    with anyio.fail_after(TIMEOUT):
        async with manager:
            blocker = wm.OneTimeWorkRequest("blocker")
            await manager.enqueue(blocker)
            await clock.advance(0)
            await blocking.wait()
            for work in works:
                await manager.enqueue(work)
            await clock.advance(6)
            release.set()
            await until_finished(manager, works)
    assert started == ["p4-1", "p4-3", "p4-5", "p-1-1", "p-1-3", "p-1-5"]


async def test_priority_is_shown_and_persisted_across_a_restart(
    make_manager: MakeManager, clock: VirtualClock, store_url: str
) -> None:
    if store_url.startswith("memory"):
        pytest.skip("nothing outlives a memory store")
    works = [
        req("low", priority=-10),
        req("plain"),
        req("high", priority=10),
        req("mid", priority=3),
    ]
    periodic = wm.PeriodicWorkRequest("p", repeat_interval=timedelta(hours=1), priority=-4)
    with anyio.fail_after(TIMEOUT):
        async with make_manager(run_work=False) as producer:
            for work in works:
                await producer.enqueue(work)
            await producer.enqueue(periodic)
        manager = make_manager(max_concurrency=1)
        started: list[str] = []
        order_worker(manager, started)

        @manager.worker("p")
        async def tick(ctx: wm.WorkContext) -> wm.Result:
            return wm.Result.success()

        async with manager:
            info = await manager.get_work_info(periodic.id)
            assert info is not None
            assert info.priority == -4
            await clock.advance(0)
            await until_finished(manager, works)
            infos = [await manager.get_work_info(w.id) for w in works]
    assert started == ["high", "mid", "plain", "low"]
    assert [i.priority for i in infos if i is not None] == [-10, 0, 10, 3]


async def test_update_work_changes_the_priority(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=1)
    started: list[str] = []
    blocking, release = order_worker(manager, started)
    first, second = req("first", initial_delay=1), req("second", initial_delay=2)
    with anyio.fail_after(TIMEOUT):
        async with manager:
            blocker = wm.OneTimeWorkRequest("blocker")
            await manager.enqueue(blocker)
            await clock.advance(0)
            await blocking.wait()
            await manager.enqueue(first)
            await manager.enqueue(second)
            raised = req("second", initial_delay=2, priority=6, id=second.id)
            result = await manager.update_work(raised)
            assert result is wm.UpdateResult.APPLIED_IMMEDIATELY
            info = await manager.get_work_info(second.id)
            assert info is not None
            assert info.priority == 6
            await clock.advance(3)
            release.set()
            await until_finished(manager, [first, second])
    assert started == ["second", "first"]


@pytest.mark.parametrize("bad", [11, -11, 1.5, True, "1", None, 10**30])
def test_a_priority_out_of_range_or_not_an_int_is_refused(bad: object) -> None:
    with pytest.raises(wm.InvalidRequestError, match="priority"):
        wm.OneTimeWorkRequest("w", priority=bad)  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError, match="priority"):
        wm.PeriodicWorkRequest("w", repeat_interval=60, priority=bad)  # type: ignore[arg-type]


def test_the_range_is_inclusive_and_the_default_is_zero() -> None:
    assert wm.OneTimeWorkRequest("w").priority == 0
    assert wm.PeriodicWorkRequest("w", repeat_interval=60).priority == 0
    assert wm.OneTimeWorkRequest("w", priority=-10).priority == -10
    assert wm.PeriodicWorkRequest("w", repeat_interval=60, priority=10).priority == 10
