"""update_work (semantics 27) on every store, with the virtual clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


async def info_of(manager: wm.WorkManager, work_id: object) -> wm.WorkInfo:
    found = await manager.get_work_info(work_id)  # type: ignore[arg-type]
    assert found is not None
    return found


async def test_enqueued_work_is_updated_immediately(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    seen: list[object] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        seen.append((clock.now(), ctx.input["v"]))

    old = wm.OneTimeWorkRequest("w", input={"v": 1}, initial_delay=60, tags={"old"})
    async with manager:
        t0 = clock.now()
        await manager.enqueue(old)
        await clock.advance(10)
        new = wm.OneTimeWorkRequest("w", id=old.id, input={"v": 2}, initial_delay=30, tags={"new"})
        assert await manager.update_work(new) is wm.UpdateResult.APPLIED_IMMEDIATELY
        info = await info_of(manager, old.id)
        assert info.generation == 1
        assert info.tags == {"w", "new"}
        assert info.next_schedule_time is not None
        assert info.next_schedule_time.timestamp() == t0 + 30  # the delay counts from enqueue
        assert [i.id for i in await manager.get_work_infos(wm.WorkQuery(tags={"new"}))] == [old.id]
        assert await manager.get_work_infos(wm.WorkQuery(tags={"old"})) == []
        await clock.advance(60)
    assert seen == [(t0 + 30, 2)]


async def test_running_work_keeps_its_spec_until_the_next_run(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    release = anyio.Event()
    seen: list[object] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        seen.append(ctx.input["v"])
        if len(seen) == 1:
            await release.wait()
            return wm.Result.retry()
        return wm.Result.success()

    old = wm.OneTimeWorkRequest("w", input={"v": 1}, backoff=wm.Backoff(delay=timedelta(0)))
    async with manager:
        await manager.enqueue(old)
        await clock.advance(0)
        new = wm.OneTimeWorkRequest("w", id=old.id, input={"v": 2})
        assert await manager.update_work(new) is wm.UpdateResult.APPLIED_FOR_NEXT_RUN
        release.set()
        await clock.advance(0)
        info = await info_of(manager, old.id)
    assert seen == [1, 2]
    assert info.state is wm.WorkState.SUCCEEDED
    assert info.generation == 1
    assert info.run_attempt_count == 2


async def test_finished_unknown_and_kind_changes(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    done = wm.OneTimeWorkRequest("w")
    async with manager:
        await manager.enqueue(done)
        await clock.advance(0)
        assert await manager.update_work(done) is wm.UpdateResult.NOT_APPLIED
        assert (await info_of(manager, done.id)).generation == 0
        with pytest.raises(wm.InvalidRequestError, match="no such work"):
            await manager.update_work(wm.OneTimeWorkRequest("w"))
        periodic = wm.PeriodicWorkRequest("w", repeat_interval=60, initial_delay=600)
        await manager.enqueue(periodic)
        with pytest.raises(wm.InvalidRequestError, match="periodic work into a one-time"):
            await manager.update_work(wm.OneTimeWorkRequest("w", id=periodic.id))
        with pytest.raises(wm.UnknownWorkerError):
            await manager.update_work(wm.OneTimeWorkRequest("missing", id=done.id))


async def test_periodic_update_keeps_the_period_clock(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> None:
        runs.append(clock.now())

    req = wm.PeriodicWorkRequest("tick", repeat_interval=timedelta(hours=1))
    async with manager:
        t0 = clock.now()
        await manager.enqueue(req)
        await clock.advance(0)  # period 1 at t0; next due t0 + 1h
        faster = wm.PeriodicWorkRequest("tick", id=req.id, repeat_interval=timedelta(minutes=10))
        assert await manager.update_work(faster) is wm.UpdateResult.APPLIED_IMMEDIATELY
        info = await info_of(manager, req.id)
        assert info.periodicity == wm.Periodicity(
            interval=timedelta(minutes=10), flex=timedelta(minutes=10)
        )
        assert info.period_count == 1
        await clock.advance(timedelta(minutes=20))
    assert runs == [t0, t0 + 600, t0 + 1200]
