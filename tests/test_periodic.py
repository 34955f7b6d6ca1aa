"""Periodic work (semantics 2, 3) on every store, with the virtual clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async.testing import (
    TestDriver,
    VirtualClock,
)

MakeManager = Callable[..., wm.WorkManager]
HOUR = 3600.0


async def info_of(manager: wm.WorkManager, work_id: object) -> wm.WorkInfo:
    found = await manager.get_work_info(work_id)  # type: ignore[arg-type]
    assert found is not None
    return found


async def test_first_run_waits_delay_plus_interval_minus_flex_then_every_interval(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> wm.Result:
        runs.append(clock.now())
        return wm.Result.success({"ignored": True})

    req = wm.PeriodicWorkRequest(
        "tick",
        repeat_interval=timedelta(hours=1),
        flex_interval=timedelta(minutes=15),
        initial_delay=timedelta(minutes=10),
    )
    async with manager:
        t0 = clock.now()
        await manager.enqueue(req)
        info = await info_of(manager, req.id)
        assert info.periodicity == wm.Periodicity(
            interval=timedelta(hours=1), flex=timedelta(minutes=15)
        )
        assert info.next_schedule_time is not None
        assert info.next_schedule_time.timestamp() == t0 + 600 + 2700  # delay + (1h - 15m)
        await clock.advance(timedelta(hours=3, minutes=55))
        info = await info_of(manager, req.id)
    assert runs == [t0 + 3300, t0 + 3300 + HOUR, t0 + 3300 + 2 * HOUR, t0 + 3300 + 3 * HOUR]
    assert info.state is wm.WorkState.ENQUEUED
    assert info.period_count == 4
    assert info.run_attempt_count == 0
    assert info.output == {}  # periodic work never stores output
    assert info.next_schedule_time is not None
    assert info.next_schedule_time.timestamp() == runs[-1] + HOUR


async def test_failure_ends_the_period_and_retry_uses_backoff(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    script = iter(["fail", "retry", "ok", "ok"])
    runs: list[tuple[float, int]] = []

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> wm.Result | None:
        runs.append((clock.now(), ctx.run_attempt_count))
        step = next(script)
        if step == "fail":
            raise RuntimeError("upstream down")
        return wm.Result.retry() if step == "retry" else None

    req = wm.PeriodicWorkRequest(
        "tick",
        repeat_interval=HOUR,
        backoff=wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(seconds=60)),
    )
    async with manager:
        t0 = clock.now()
        await manager.enqueue(req)  # no flex: the first period is due at once
        await clock.advance(0)  # period 1 raises: next period, not FAILED
        info = await info_of(manager, req.id)
        assert info.state is wm.WorkState.ENQUEUED
        assert info.period_count == 1
        assert info.error == wm.WorkError(type="RuntimeError", message="upstream down")
        assert info.next_schedule_time is not None
        assert info.next_schedule_time.timestamp() == t0 + HOUR
        await clock.advance(HOUR + 60)  # period 2: retry after the 60 s backoff, then ok
        info = await info_of(manager, req.id)
    assert runs == [(t0, 0), (t0 + HOUR, 0), (t0 + HOUR + 60, 1)]
    assert info.period_count == 2
    assert info.run_attempt_count == 0
    assert info.error is None


async def test_thousand_periods_with_flex_never_twice_never_skipped(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(prune_interval=timedelta(days=365))
    runs: list[float] = []

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> None:
        runs.append(clock.now())

    req = wm.PeriodicWorkRequest(
        "tick", repeat_interval=timedelta(minutes=15), flex_interval=timedelta(minutes=5)
    )
    async with manager:
        t0 = clock.now()
        await manager.enqueue(req)
        await clock.advance(timedelta(minutes=10) + 999 * timedelta(minutes=15))
        info = await info_of(manager, req.id)
    assert len(runs) == 1000
    assert runs[0] == t0 + 600
    assert all(b - a == 900 for a, b in itertools.pairwise(runs))
    assert info.period_count == 1000


async def test_cancel_is_the_only_way_to_finish(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.failure({"x": 1})

    req = wm.PeriodicWorkRequest("tick", repeat_interval=60)
    async with manager:
        await manager.enqueue(req)
        await clock.advance(600)
        assert (await info_of(manager, req.id)).state is wm.WorkState.ENQUEUED
        assert await manager.cancel_work_by_id(req.id)
        await clock.advance(600)
        info = await info_of(manager, req.id)
    assert info.state is wm.WorkState.CANCELLED
    assert info.period_count == 11  # at t0, t0+60, ..., t0+600


async def test_set_period_delay_met(make_manager: MakeManager, clock: VirtualClock) -> None:
    manager = make_manager()
    runs: list[float] = []

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> None:
        runs.append(clock.now())

    req = wm.PeriodicWorkRequest("tick", repeat_interval=timedelta(days=1))
    async with manager:
        t0 = clock.now()
        await manager.enqueue(req)
        await clock.advance(0)  # the first period runs at once (flex = interval)
        assert runs == [t0]
        # Each call makes the next period due now. (Called before the first run is
        # recorded, the first call would find the work due already and do nothing.)
        await TestDriver(manager).set_period_delay_met(req.id)
        await clock.advance(0)
        assert runs == [t0, t0]
        await TestDriver(manager).set_period_delay_met(req.id)
        await clock.advance(0)
    assert runs == [t0, t0, t0]


async def test_interrupted_period_runs_again_in_the_same_period(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    attempts: list[int] = []

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> None:
        attempts.append(ctx.run_attempt_count)
        if ctx.run_attempt_count == 0:
            await anyio.sleep_forever()

    req = wm.PeriodicWorkRequest("tick", repeat_interval=HOUR, timeout=timedelta(seconds=30))
    async with manager:
        await manager.enqueue(req)
        await clock.advance(HOUR)  # timed out at +30 s, ran again at once, period over
        info = await info_of(manager, req.id)
    assert attempts == [0, 1]
    assert info.period_count == 1
    assert info.run_attempt_count == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"repeat_interval": 0}, "repeat_interval"),
        ({"repeat_interval": -5}, "repeat_interval"),
        ({"repeat_interval": 60, "flex_interval": 0}, "flex_interval"),
        ({"repeat_interval": 60, "flex_interval": 61}, "flex_interval"),
        ({}, "repeat_interval"),
        ({"repeat_interval": 60, "timezone": "Europe/Berlin"}, "timezone"),
    ],
)
def test_invalid_periods_raise_at_construction(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(wm.InvalidRequestError, match=field):
        wm.PeriodicWorkRequest("tick", **kwargs)  # type: ignore[arg-type]


def test_no_fifteen_minute_minimum() -> None:
    req = wm.PeriodicWorkRequest("tick", repeat_interval=1)
    assert req.repeat_interval == timedelta(seconds=1)
    assert req.flex_interval == timedelta(seconds=1)
    assert "tick" in req.tags


async def test_periodic_work_survives_a_restart(clock: VirtualClock, tmp_path: Path) -> None:
    # SQLite only: surviving a restart is what a durable store is for.
    url = f"sqlite:///{tmp_path}/restart.db"
    runs: list[float] = []

    def make() -> wm.WorkManager:
        manager = wm.WorkManager(url, clock=clock, shutdown_grace=0)

        @manager.worker("tick")
        async def tick(ctx: wm.WorkContext) -> None:
            runs.append(clock.now())

        return manager

    req = wm.PeriodicWorkRequest("tick", repeat_interval=HOUR)
    async with make() as first:
        t0 = clock.now()
        await first.enqueue(req)
        await clock.advance(HOUR)
    await clock.advance(5 * HOUR)  # the process is down over five periods
    async with make() as second:
        await clock.advance(0)  # the missed period runs once at start-up, not five times
        await clock.advance(HOUR)
        info = await info_of(second, req.id)
    assert runs == [t0, t0 + HOUR, t0 + 6 * HOUR, t0 + 7 * HOUR]
    assert info.period_count == 4


def _utc(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (  # spring forward: 02:30 does not exist on 03-29, it runs once at the gap's end
            "2026-03-27T00:00:00+00:00",
            ["2026-03-27T01:30Z", "2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z"],
        ),
        (  # fall back: 02:30 happens twice on 10-25, it runs once, at the first
            "2026-10-24T00:00:00+00:00",
            ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z", "2026-10-27T01:30Z"],
        ),
    ],
)
async def test_cron_periodic_work_across_dst(
    store_url: str, start: str, expected: list[str]
) -> None:
    from datetime import datetime

    clock = VirtualClock(datetime.fromisoformat(start))
    manager = wm.WorkManager(store_url, clock=clock, shutdown_grace=0)
    runs: list[float] = []

    @manager.worker("report")
    async def report(ctx: wm.WorkContext) -> None:
        runs.append(clock.now())

    req = wm.PeriodicWorkRequest("report", cron="30 2 * * *", timezone="Europe/Berlin")
    async with manager:
        await manager.enqueue(req)
        info = await info_of(manager, req.id)
        assert info.periodicity == wm.Periodicity(cron="30 2 * * *", timezone="Europe/Berlin")
        await clock.advance(timedelta(days=4))
    assert runs == [_utc(t.replace("Z", ":00+00:00")) for t in expected]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 3 * * *", "repeat_interval": 60}, "repeat_interval"),
        ({"cron": "0 3 * * *", "flex_interval": 60}, "flex_interval"),
    ],
)
def test_invalid_cron_requests_raise_at_construction(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(wm.InvalidRequestError, match=field):
        wm.PeriodicWorkRequest("report", **kwargs)  # type: ignore[arg-type]
