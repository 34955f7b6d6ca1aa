"""A worker's flow limits (semantics 50): ``max_running`` (at most N runs at once) and
``rate_limit`` (a token bucket), on every store, on the virtual clock; what holds a work
back in ``WorkInfo.held_by`` and ``explain()``; bad values refused at the call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

import wm_async as wm
from wm_async.stores.memory import MemoryStore
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


class Gauge:
    """What the capped worker itself counts: runs in progress, and the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.started = 0
        self.release = anyio.Event()

    async def run(self) -> None:
        self.now += 1
        self.started += 1
        self.most = max(self.most, self.now)
        try:
            await self.release.wait()
        finally:
            self.now -= 1


async def states(manager: wm.WorkManager, requests: list[wm.OneTimeWorkRequest]) -> list[str]:
    infos = [await manager.get_work_info(r.id) for r in requests]
    return [i.state.value if i is not None else "?" for i in infos]


async def test_at_most_max_running_runs_at_once_and_a_freed_slot_starts_the_next(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=10)
    gauge = Gauge()
    ran_free: list[int] = []

    @manager.worker("capped", max_running=2)
    async def capped(ctx: wm.WorkContext) -> None:
        await gauge.run()

    @manager.worker("free")
    async def free(ctx: wm.WorkContext) -> None:
        ran_free.append(1)

    works = [wm.OneTimeWorkRequest("capped") for _ in range(5)]
    async with manager:
        await manager.enqueue(*works, wm.OneTimeWorkRequest("free"))
        await clock.advance(0)
        assert gauge.now == 2
        assert ran_free == [1]  # other workers are not held back
        waiting = [
            r for r, s in zip(works, await states(manager, works), strict=True) if s == "ENQUEUED"
        ]
        assert len(waiting) == 3
        info = await manager.get_work_info(waiting[0].id)
        assert info is not None
        assert info.held_by is wm.HeldBy.MAX_RUNNING
        explanation = await manager.explain(waiting[0].id)
        assert explanation is not None
        assert explanation.held_by is wm.HeldBy.MAX_RUNNING
        assert "max_running" in " ".join(explanation.reasons)
        await clock.advance(60)  # no time frees a slot
        assert gauge.started == 2
        # Runs that end free their slots: the waiting works start without time passing.
        gauge.release.set()
        gauge.release = anyio.Event()
        await clock.advance(0)
        assert gauge.started == 4
        assert gauge.now == 2
        gauge.release.set()
        gauge.release = anyio.Event()
        await clock.advance(0)
        gauge.release.set()
        await clock.advance(0)
        assert await states(manager, works) == ["SUCCEEDED"] * 5
        assert gauge.most == 2
        info = await manager.get_work_info(works[-1].id)
        assert info is not None
        assert info.held_by is None


async def test_a_rate_limited_worker_starts_within_its_tokens(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    starts: list[float] = []

    @manager.worker("rated", rate_limit=wm.RateLimit(1, per=timedelta(seconds=10), burst=2))
    async def rated(ctx: wm.WorkContext) -> None:
        starts.append(clock.now())

    works = [wm.OneTimeWorkRequest("rated") for _ in range(5)]
    async with manager:
        t0 = clock.now()
        await manager.enqueue(*works)
        await clock.advance(0)
        assert starts == [t0, t0]  # the burst
        waiting = [
            r for r, s in zip(works, await states(manager, works), strict=True) if s == "ENQUEUED"
        ]
        info = await manager.get_work_info(waiting[0].id)
        assert info is not None
        assert info.held_by is wm.HeldBy.RATE_LIMIT
        explanation = await manager.explain(waiting[0].id)
        assert explanation is not None
        assert "rate_limit" in " ".join(explanation.reasons)
        await clock.advance(9.9)
        assert len(starts) == 2
        await clock.advance(0.1)  # the dispatcher sleeps until the token is due
        assert starts[2:] == [t0 + 10]
        await clock.advance(30)
        assert [s - t0 for s in starts] == [0, 0, 10, 20, 30]


async def test_a_token_due_at_a_fraction_of_a_second_starts_its_work(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    """Refilled from epoch times (floats 2.4e-7 s apart near 1.9e9), a token due 0.1 s
    later can come out as 0.9999990 tokens: the claimer must still start the work then,
    not wake again and again at the same instant (it once spun there forever)."""
    manager = make_manager()
    starts: list[float] = []

    @manager.worker("rated", rate_limit=wm.RateLimit(10, per=timedelta(seconds=1)))
    async def rated(ctx: wm.WorkContext) -> None:
        starts.append(clock.now())

    works = [wm.OneTimeWorkRequest("rated") for _ in range(4)]
    async with manager:
        t0 = clock.now()
        await manager.enqueue(*works)
        with anyio.fail_after(30):
            await clock.advance(1)
        assert await states(manager, works) == ["SUCCEEDED"] * 4
        assert [round(s - t0, 3) for s in starts] == [0.0, 0.1, 0.2, 0.3]


async def test_limits_are_per_worker_and_combine(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    gauge = Gauge()

    @manager.worker("both", max_running=1, rate_limit=wm.RateLimit(10, per=1, burst=10))
    async def both(ctx: wm.WorkContext) -> None:
        await gauge.run()

    works = [wm.OneTimeWorkRequest("both") for _ in range(3)]
    async with manager:
        await manager.enqueue(*works)
        await clock.advance(0)
        assert gauge.now == 1
        gauge.release.set()
        await clock.advance(1)
        assert await states(manager, works) == ["SUCCEEDED"] * 3
        assert gauge.most == 1


async def test_a_paused_works_info_says_so(make_manager: MakeManager, clock: VirtualClock) -> None:
    manager = make_manager()

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        pass

    request = wm.OneTimeWorkRequest("w")
    async with manager:
        await manager.pause_worker("w")
        await manager.enqueue(request)
        await clock.advance(1)
        infos = await manager.get_work_infos(wm.WorkQuery(ids=[request.id]))
        assert [i.held_by for i in infos] == [wm.HeldBy.PAUSED]
        await manager.resume_worker("w")
        await clock.advance(0)
        info = await manager.get_work_info(request.id)
        assert info is not None
        assert info.held_by is None
        assert info.state is wm.WorkState.SUCCEEDED


@pytest.mark.parametrize(
    ("keywords", "field"),
    [
        ({"max_running": 0}, "max_running"),
        ({"max_running": -1}, "max_running"),
        ({"max_running": True}, "max_running"),
        ({"max_running": 1.5}, "max_running"),
        ({"max_running": "2"}, "max_running"),
        ({"rate_limit": 5}, "rate_limit"),
        ({"rate_limit": (1, 1)}, "rate_limit"),
    ],
)
def test_bad_limits_are_refused_at_registration(keywords: dict[str, object], field: str) -> None:
    manager = wm.WorkManager(store="memory://")

    async def fn(ctx: wm.WorkContext) -> None:
        pass

    with pytest.raises(wm.InvalidRequestError) as raised:
        manager.worker("w", **keywords)  # type: ignore[arg-type]
    assert raised.value.field == field
    with pytest.raises(wm.InvalidRequestError):
        manager.register_worker("w", fn, **keywords)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "keywords", "field"),
    [
        ((0,), {"per": 1}, "n"),
        ((-1,), {"per": 1}, "n"),
        ((1.5,), {"per": 1}, "n"),
        (("1",), {"per": 1}, "n"),
        ((True,), {"per": 1}, "n"),
        ((1,), {"per": 0}, "per"),
        ((1,), {"per": -1}, "per"),
        ((1,), {"per": timedelta(0)}, "per"),
        ((1,), {"per": float("nan")}, "per"),
        ((1,), {"per": float("inf")}, "per"),
        ((1,), {"per": "1"}, "per"),
        ((1,), {"per": 1, "burst": 0}, "burst"),
        ((1,), {"per": 1, "burst": 1.0}, "burst"),
    ],
)
def test_a_bad_rate_limit_is_refused_at_construction(
    args: tuple[object, ...], keywords: dict[str, object], field: str
) -> None:
    with pytest.raises(wm.InvalidRequestError) as raised:
        wm.RateLimit(*args, **keywords)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_a_rate_limit_is_a_value() -> None:
    rate = wm.RateLimit(3, per=timedelta(minutes=1))
    assert rate == wm.RateLimit(3, per=60, burst=1)
    assert rate.per == 60.0
    assert rate.interval == 20.0
    with pytest.raises(AttributeError):
        rate.n = 4  # type: ignore[misc]


async def test_a_rate_limits_bucket_outlives_a_restart(
    make_manager: MakeManager, clock: VirtualClock, store_url: str
) -> None:
    # memory:// opens a new store each time: the memory store keeps its buckets, like
    # its works, in the store object.
    store: object = MemoryStore() if store_url == "memory://" else store_url
    starts: list[float] = []

    def make() -> wm.WorkManager:
        manager = make_manager(store=store)

        @manager.worker("rated", rate_limit=wm.RateLimit(1, per=timedelta(hours=1)))
        async def rated(ctx: wm.WorkContext) -> None:
            starts.append(clock.now())

        return manager

    works = [wm.OneTimeWorkRequest("rated") for _ in range(2)]
    t0 = clock.now()
    async with make() as first:
        await first.enqueue(*works)
        await clock.advance(0)
    assert starts == [t0]
    async with make():
        await clock.advance(60)
        assert starts == [t0]  # the token the first run took is not back yet
        await clock.advance(3600)
    assert starts == [t0, t0 + 3600]
