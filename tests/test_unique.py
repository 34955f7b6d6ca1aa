"""Unique work (semantics 22-24, 26, 28) on every store, with the virtual clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


def register(manager: wm.WorkManager, release: anyio.Event | None = None) -> list[str]:
    ran: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(str(ctx.id))
        if release is not None:
            await release.wait()

    return ran


async def under(manager: wm.WorkManager, name: str) -> list[wm.WorkInfo]:
    return await manager.get_work_infos(wm.WorkQuery(unique_names={name}))


async def test_keep_is_a_no_op_while_unfinished_then_replaces_finished(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    register(manager)
    first = wm.OneTimeWorkRequest("w", initial_delay=60)
    second = wm.OneTimeWorkRequest("w")
    third = wm.OneTimeWorkRequest("w")
    async with manager:
        assert await manager.enqueue_unique_work("feed", wm.ExistingWorkPolicy.KEEP, first)
        assert not await manager.enqueue_unique_work("feed", "KEEP", second)
        assert [i.id for i in await under(manager, "feed")] == [first.id]
        assert await manager.get_work_info(second.id) is None
        await clock.advance(60)  # first succeeds: finished works no longer block KEEP
        assert await manager.enqueue_unique_work("feed", wm.ExistingWorkPolicy.KEEP, third)
        infos = await under(manager, "feed")
    assert [i.id for i in infos] == [third.id]  # the finished one was removed from the name
    assert infos[0].unique_name == "feed"


async def test_replace_cancels_running_work_and_enqueues_the_new(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    release = anyio.Event()
    ran = register(manager, release)
    old, new = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w")
    seen: list[wm.WorkInfo] = []
    async with manager:
        await manager.enqueue_unique_work("job", wm.ExistingWorkPolicy.REPLACE, old)
        await clock.advance(0)
        assert (await under(manager, "job"))[0].state is wm.WorkState.RUNNING
        watcher = manager.watch(wm.WorkQuery(ids={old.id}))
        async with anyio.create_task_group() as tg:

            async def collect() -> None:
                async for info in watcher:
                    seen.append(info)  # noqa: PERF401  # visible as they arrive

            tg.start_soon(collect)
            await clock.advance(0)
            assert await manager.enqueue_unique_work("job", wm.ExistingWorkPolicy.REPLACE, new)
            await clock.advance(0)
            await watcher.aclose()
        release.set()
        await clock.advance(0)
        infos = await under(manager, "job")
    assert [i.id for i in infos] == [new.id]
    assert infos[0].state is wm.WorkState.SUCCEEDED
    assert seen[-1].state is wm.WorkState.CANCELLED
    assert seen[-1].stop_reason is wm.StopReason.CANCELLED_BY_APP
    assert ran == [str(old.id), str(new.id)]


async def test_fifty_concurrent_keeps_leave_exactly_one(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    register(manager)
    outcomes: list[bool] = []
    async with manager:

        async def attempt() -> None:
            req = wm.OneTimeWorkRequest("w", initial_delay=3600)
            outcomes.append(await manager.enqueue_unique_work("one", "KEEP", req))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(attempt)
        infos = await under(manager, "one")
    assert outcomes.count(True) == 1
    assert len(infos) == 1
    assert infos[0].state is wm.WorkState.ENQUEUED


async def test_periodic_policies(make_manager: MakeManager, clock: VirtualClock) -> None:
    manager = make_manager()
    register(manager)
    hourly = wm.PeriodicWorkRequest("w", repeat_interval=timedelta(hours=1), tags={"v1"})
    async with manager:
        assert await manager.enqueue_unique_periodic_work(
            "sync", wm.ExistingPeriodicWorkPolicy.KEEP, hourly
        )
        await clock.advance(0)  # period 1 runs
        other = wm.PeriodicWorkRequest("w", repeat_interval=60)
        assert not await manager.enqueue_unique_periodic_work("sync", "KEEP", other)
        updated = wm.PeriodicWorkRequest("w", repeat_interval=timedelta(minutes=30), tags={"v2"})
        assert await manager.enqueue_unique_periodic_work("sync", "UPDATE", updated)
        [info] = await under(manager, "sync")
        assert info.id == hourly.id  # updated in place
        assert info.generation == 1
        assert info.period_count == 1
        assert info.tags == {"w", "v2"}
        fresh = wm.PeriodicWorkRequest("w", repeat_interval=120)
        assert await manager.enqueue_unique_periodic_work(
            "sync", wm.ExistingPeriodicWorkPolicy.CANCEL_AND_REENQUEUE, fresh
        )
        [info] = await under(manager, "sync")
        assert info.id == fresh.id
        assert info.period_count == 0


async def test_cancel_unique_work_and_bad_input(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    register(manager)
    a, b = wm.OneTimeWorkRequest("w", initial_delay=60), wm.OneTimeWorkRequest("w")
    async with manager:
        await manager.enqueue_unique_work("pair", "REPLACE", a, b)
        await clock.advance(0)
        assert await manager.cancel_unique_work("pair") == 1  # b already finished
        states = sorted(i.state.value for i in await under(manager, "pair"))
        assert states == ["CANCELLED", "SUCCEEDED"]
        with pytest.raises(wm.InvalidRequestError, match="policy"):
            await manager.enqueue_unique_work("pair", "SOMETIMES", a)
        with pytest.raises(wm.InvalidRequestError, match="already exists"):
            await manager.enqueue_unique_work("other", wm.ExistingWorkPolicy.APPEND, a)
        with pytest.raises(wm.InvalidRequestError, match="unique_name"):
            await manager.enqueue_unique_work("", "KEEP", a)
        with pytest.raises(wm.UnknownWorkerError):
            await manager.enqueue_unique_work("pair", "REPLACE", wm.OneTimeWorkRequest("nope"))
        assert len(await under(manager, "pair")) == 2  # nothing changed by the failures


async def test_periodic_update_refuses_a_name_held_by_one_time_work(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    register(manager)
    async with manager:
        await manager.enqueue_unique_work(
            "mixed", "KEEP", wm.OneTimeWorkRequest("w", initial_delay=60)
        )
        with pytest.raises(wm.InvalidRequestError, match="CANCEL_AND_REENQUEUE"):
            await manager.enqueue_unique_periodic_work(
                "mixed", "UPDATE", wm.PeriodicWorkRequest("w", repeat_interval=60)
            )
        assert len(await under(manager, "mixed")) == 1
