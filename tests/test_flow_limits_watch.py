"""What ``watch()`` shows of a work its worker's limit or pause holds back (semantics 50):
its snapshots carry ``held_by`` as ``get_work_info`` gives it, and a new snapshot comes
when the hold changes without the work changing. On every store, on the virtual clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import anyio

import wm_async as wm
from wm_async._clock import SystemClock
from wm_async._core.record import WorkRecord, evolve
from wm_async._runtime.events import EventHub
from wm_async._runtime.holds import Holds
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]

TAG = "watched"


class Gate:
    """Runs that block until released, one by one or all."""

    def __init__(self) -> None:
        self.events: dict[uuid.UUID, anyio.Event] = {}

    async def run(self, ctx: wm.WorkContext) -> None:
        await self.events.setdefault(ctx.id, anyio.Event()).wait()

    def release(self, *requests: wm.OneTimeWorkRequest) -> None:
        for r in requests:
            self.events.setdefault(r.id, anyio.Event()).set()


class Reader:
    """Reads a watcher up to a marker work (enqueued and cancelled, so published after
    everything before it): what the watcher delivered meanwhile, and each work's latest
    snapshot."""

    def __init__(self, manager: wm.WorkManager, watcher: wm.WorkWatcher) -> None:
        self.manager = manager
        self.watcher = watcher
        self.latest: dict[uuid.UUID, wm.WorkInfo] = {}

    async def read(self) -> list[wm.WorkInfo]:
        marker = wm.OneTimeWorkRequest("marker", tags={TAG}, initial_delay=3600)
        await self.manager.enqueue(marker)
        await self.manager.cancel_work_by_id(marker.id)
        got: list[wm.WorkInfo] = []
        with anyio.fail_after(30):
            async for info in self.watcher:
                if info.id == marker.id:
                    if info.is_finished:
                        return got
                    continue
                got.append(info)
                self.latest[info.id] = info
        raise AssertionError("the watcher ended")

    def held(self, *requests: wm.OneTimeWorkRequest) -> list[tuple[str, wm.HeldBy | None]]:
        return [(self.latest[r.id].state.value, self.latest[r.id].held_by) for r in requests]

    async def agrees(self) -> None:
        """Each latest snapshot is what get_work_info says now."""
        for work_id, info in self.latest.items():
            assert await self.manager.get_work_info(work_id) == info


def register(manager: wm.WorkManager, gate: Gate) -> None:
    @manager.worker("marker")
    async def marker(ctx: wm.WorkContext) -> None:
        raise AssertionError("the marker never runs")

    manager.register_worker("capped", gate.run, max_running=2)
    manager.register_worker("free", gate.run)


async def test_snapshots_follow_a_cap_that_fills_without_the_work_changing(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=2)
    gate = Gate()
    register(manager, gate)
    free = wm.OneTimeWorkRequest("free", tags={TAG})
    c1, c2, c3 = (wm.OneTimeWorkRequest("capped", tags={TAG}) for _ in range(3))
    async with manager, manager.watch(wm.WorkQuery(tags={TAG})) as watcher:
        reader = Reader(manager, watcher)
        await manager.enqueue(free)
        await clock.advance(0)
        await manager.enqueue(c1, c2, c3)
        await clock.advance(0)
        await reader.read()
        # One place was free: c1 took it. c2 and c3 wait for a place, not for their
        # worker's cap (two of it may run): nothing of their worker holds them.
        assert reader.held(free, c1, c2, c3) == [
            ("RUNNING", None),
            ("RUNNING", None),
            ("ENQUEUED", None),
            ("ENQUEUED", None),
        ]
        await reader.agrees()
        gate.release(free)
        await clock.advance(0)
        got = await reader.read()
        # c2 took the freed place and filled the cap: c3 is now held by it, a change of
        # c3's hold alone (its record is as it was), which the watcher delivers.
        assert reader.held(c2, c3) == [("RUNNING", None), ("ENQUEUED", wm.HeldBy.MAX_RUNNING)]
        assert [(i.state, i.held_by) for i in got if i.id == c3.id] == [
            (wm.WorkState.ENQUEUED, wm.HeldBy.MAX_RUNNING)
        ]
        await reader.agrees()
        # A pause, then a resume: the watcher follows both without c3 changing.
        await manager.pause_worker("capped")
        await clock.advance(0)
        await reader.read()
        assert reader.held(c3) == [("ENQUEUED", wm.HeldBy.PAUSED)]
        await reader.agrees()
        await manager.resume_worker("capped")
        await clock.advance(0)
        await reader.read()
        assert reader.held(c3) == [("ENQUEUED", wm.HeldBy.MAX_RUNNING)]
        await reader.agrees()
        # A run that ends frees a slot: c3 runs, then every work finishes.
        gate.release(c1)
        await clock.advance(0)
        await reader.read()
        assert reader.held(c3) == [("RUNNING", None)]
        gate.release(c2, c3)
        await clock.advance(0)
        await reader.read()
        assert {i.state for i in reader.latest.values()} == {wm.WorkState.SUCCEEDED}


async def test_a_resume_that_frees_a_work_without_running_it_is_delivered(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    # Every place is taken: a resumed work stays ENQUEUED, and only its hold changes.
    manager = make_manager(max_concurrency=1)
    gate = Gate()
    register(manager, gate)
    busy = wm.OneTimeWorkRequest("free", tags={TAG})
    waiting = wm.OneTimeWorkRequest("free", tags={TAG})
    later = wm.OneTimeWorkRequest("free", tags={TAG}, initial_delay=60)
    async with manager, manager.watch(wm.WorkQuery(tags={TAG})) as watcher:
        reader = Reader(manager, watcher)
        await manager.enqueue(busy)
        await clock.advance(0)
        await manager.enqueue(waiting, later)
        await clock.advance(0)
        await reader.read()
        assert reader.held(busy, waiting, later) == [
            ("RUNNING", None),
            ("ENQUEUED", None),
            ("ENQUEUED", None),
        ]
        await manager.pause_worker("free")
        await reader.read()
        # A pause holds the worker's works, due or not (semantics 47).
        assert reader.held(waiting, later) == [
            ("ENQUEUED", wm.HeldBy.PAUSED),
            ("ENQUEUED", wm.HeldBy.PAUSED),
        ]
        await reader.agrees()
        await manager.resume_worker("free")
        await clock.advance(0)
        await reader.read()
        assert reader.held(busy, waiting, later) == [
            ("RUNNING", None),
            ("ENQUEUED", None),
            ("ENQUEUED", None),
        ]
        await reader.agrees()
        gate.release(busy, waiting, later)
        await clock.advance(60)
        await reader.read()
        assert {i.state for i in reader.latest.values()} == {wm.WorkState.SUCCEEDED}


async def test_snapshots_of_a_rate_limited_worker_name_its_rate(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    gate = Gate()
    register(manager, gate)

    @manager.worker("rated", rate_limit=wm.RateLimit(1, per=timedelta(seconds=10)))
    async def rated(ctx: wm.WorkContext) -> None:
        pass

    first, second = (wm.OneTimeWorkRequest("rated", tags={TAG}) for _ in range(2))
    async with manager, manager.watch(wm.WorkQuery(tags={TAG})) as watcher:
        reader = Reader(manager, watcher)
        await manager.enqueue(first, second)
        await clock.advance(0)
        await reader.read()
        assert reader.held(first, second) == [
            ("SUCCEEDED", None),
            ("ENQUEUED", wm.HeldBy.RATE_LIMIT),
        ]
        await reader.agrees()
        await clock.advance(10)  # its token: it runs
        await reader.read()
        assert reader.held(second) == [("SUCCEEDED", None)]


async def test_a_work_that_becomes_due_while_its_worker_stays_held_shows_it_on_its_next_change(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    # What watch() does not follow: time making a work due (no change of anything).
    manager = make_manager()
    gate = Gate()
    register(manager, gate)
    c1, c2, c3 = (wm.OneTimeWorkRequest("capped", tags={TAG}) for _ in range(3))
    later = wm.OneTimeWorkRequest("capped", tags={TAG}, initial_delay=60)
    async with manager, manager.watch(wm.WorkQuery(tags={TAG})) as watcher:
        reader = Reader(manager, watcher)
        await manager.enqueue(c1, c2, c3, later)
        await clock.advance(0)
        await reader.read()
        assert reader.held(c3, later) == [
            ("ENQUEUED", wm.HeldBy.MAX_RUNNING),
            ("ENQUEUED", None),  # not due: nothing holds it yet
        ]
        await clock.advance(60)
        assert await reader.read() == []
        info = await manager.get_work_info(later.id)
        assert info is not None
        assert info.held_by is wm.HeldBy.MAX_RUNNING
        await manager.pause_worker("capped")  # its next change of hold shows it
        await reader.read()
        assert reader.held(c3, later) == [
            ("ENQUEUED", wm.HeldBy.PAUSED),
            ("ENQUEUED", wm.HeldBy.PAUSED),
        ]
        await manager.resume_worker("capped")
        await clock.advance(0)
        await reader.read()
        assert reader.held(c3, later) == [
            ("ENQUEUED", wm.HeldBy.MAX_RUNNING),
            ("ENQUEUED", wm.HeldBy.MAX_RUNNING),
        ]
        await reader.agrees()
        gate.release(c1, c2, c3, later)
        await clock.advance(0)
        await reader.read()
        assert {i.state for i in reader.latest.values()} == {wm.WorkState.SUCCEEDED}


async def test_a_watcher_behind_on_holds_reads_them_afresh_within_its_buffer(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    gate = Gate()
    register(manager, gate)
    works = [wm.OneTimeWorkRequest("free", tags={TAG}, initial_delay=60) for _ in range(8)]
    query = wm.WorkQuery(tags={TAG})
    async with manager, manager.watch(query, max_buffer=3) as watcher:
        reader = Reader(manager, watcher)
        await manager.enqueue(*works)
        await reader.read()
        assert reader.held(*works) == [("ENQUEUED", None)] * 8
        # Eight works change their hold at once, more than the watcher buffers: it
        # reads them from the store again, and still delivers each one's latest.
        await manager.pause_worker("free")
        await reader.read()
        assert reader.held(*works) == [("ENQUEUED", wm.HeldBy.PAUSED)] * 8
        await reader.agrees()
        await manager.resume_worker("free")
        await reader.read()
        assert reader.held(*works) == [("ENQUEUED", None)] * 8
        await reader.agrees()


async def test_a_work_that_left_the_query_gets_no_snapshot_when_its_hold_changes() -> None:
    holds = Holds(SystemClock())
    hub = EventHub(holds)
    watcher = hub.subscribe(wm.WorkQuery(tags={TAG}), no_works, max_buffer=10)
    work = WorkRecord.from_request(wm.OneTimeWorkRequest("w", tags={TAG}), now=1000.0)
    marker = WorkRecord.from_request(wm.OneTimeWorkRequest("m", tags={TAG}), now=1000.0)
    with anyio.fail_after(5):
        hub.publish([work])
        first = await anext(watcher)
        assert (first.id, first.held_by) == (uuid.UUID(work.id), None)
        hub.publish([evolve(work, tags=frozenset({"elsewhere", "w"}))])  # left the query
        holds.paused = frozenset({"w"})
        hub.publish([marker])
        assert (await anext(watcher)).id == uuid.UUID(marker.id)
        # A work still in the query gets one, once its hold changes.
        holds.paused = frozenset({"w", "m"})
        again = await anext(watcher)
        assert (again.id, again.held_by) == (uuid.UUID(marker.id), wm.HeldBy.PAUSED)


async def no_works() -> list[WorkRecord]:
    return []
