"""watch() over time: a watcher's memory is bounded by what its consumer has not read
yet, and it still delivers each work's latest state, never the same snapshot twice in a
row. Run against every store with the virtual clock."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable

import anyio
import pytest

import wm_async as wm
from wm_async._clock import SystemClock
from wm_async._core.record import (
    WorkRecord,
    evolve,
)
from wm_async._runtime.events import EventHub
from wm_async._runtime.holds import Holds
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]

#: What a watcher may hold besides what its consumer has not read: the ids of the last
#: finished works it delivered (1,024) and a little more.
SMALL = 1_100


def held(watcher: wm.WorkWatcher) -> int:
    """How many entries the watcher's own containers hold, whatever they are called."""
    return sum(
        len(value)
        for value in vars(watcher).values()
        if isinstance(value, dict | set | list | deque)
    )


def request(**kwargs: object) -> wm.OneTimeWorkRequest:
    return wm.OneTimeWorkRequest("w", **kwargs)  # type: ignore[arg-type]


def ids(requests: list[wm.OneTimeWorkRequest]) -> list[str]:
    return sorted(str(r.id) for r in requests)


async def enqueue(manager: wm.WorkManager, requests: list[wm.OneTimeWorkRequest]) -> None:
    for start in range(0, len(requests), 1000):
        await manager.enqueue(*requests[start : start + 1000])


async def read_until_finished(
    watcher: wm.WorkWatcher, works: list[wm.OneTimeWorkRequest], into: list[wm.WorkInfo]
) -> None:
    """Read until each of ``works`` was delivered finished."""
    left = {r.id for r in works}
    async for info in watcher:
        into.append(info)
        if info.is_finished:
            left.discard(info.id)
            if not left:
                return


async def drain(manager: wm.WorkManager, watcher: wm.WorkWatcher) -> None:
    """Read what the watcher still buffers (repeats it drops): until a marker work,
    enqueued and cancelled now, arrives cancelled."""
    marker = request(tags={"t"}, initial_delay=3600)
    await manager.enqueue(marker)
    await manager.cancel_work_by_id(marker.id)
    await read_until_finished(watcher, [marker], [])


def register(manager: wm.WorkManager) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"n": 1})


async def test_a_watcher_forgets_the_works_it_saw_finish(
    make_manager: MakeManager, clock: VirtualClock, store_url: str
) -> None:
    # Enough works to see a watcher grow with them (the ids of the last 1,024 finished
    # works are all it may keep), few enough for each store to run them in seconds.
    n = 20_000 if store_url.startswith("memory") else 1_500
    manager = make_manager()
    register(manager)
    sizes: list[int] = []
    with anyio.fail_after(240):
        async with manager, manager.watch(wm.WorkQuery(tags={"t"})) as watcher:
            for _ in range(2):
                works = [request(tags={"t"}) for _ in range(n)]
                seen: list[wm.WorkInfo] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_until_finished, watcher, works, seen)
                    await enqueue(manager, works)
                    await clock.advance(0)
                await drain(manager, watcher)
                assert await manager.prune_work() == n + 1  # and the marker
                finals = [i for i in seen if i.is_finished]
                assert sorted(str(i.id) for i in finals) == ids(works)  # each once
                assert {i.state for i in finals} == {wm.WorkState.SUCCEEDED}
                sizes.append(held(watcher))
    # The same after twice as many works finished and were pruned: independent of N.
    assert sizes[1] <= sizes[0] <= SMALL


async def test_an_unread_watcher_buffers_at_most_max_buffer_works(
    make_manager: MakeManager, clock: VirtualClock, store_url: str
) -> None:
    n = 2_000 if store_url.startswith("memory") else 500
    manager = make_manager()
    register(manager)
    later = request(tags={"t"}, initial_delay=3600)
    with anyio.fail_after(120):
        async with manager, manager.watch(wm.WorkQuery(tags={"t"}), max_buffer=100) as watcher:
            await manager.enqueue(later)
            first = await anext(watcher)
            assert (first.id, first.state) == (later.id, wm.WorkState.ENQUEUED)
            # The consumer holds the watcher but stops reading while n works run.
            works = [request(tags={"t"}) for _ in range(n)]
            peak = 0
            for start in range(0, n, 50):
                await manager.enqueue(*works[start : start + 50])
                peak = max(peak, held(watcher))
            await clock.advance(0)
            peak = max(peak, held(watcher))
            # max_buffer, the snapshot delivered of `later`, and its worker in the
            # watcher's index of delivered ENQUEUED works (for their held_by)
            assert peak <= 100 + 2
            # Read at last: each work's latest state, once; `later` is not repeated.
            seen: list[wm.WorkInfo] = []
            await read_until_finished(watcher, works, seen)
            assert sorted(str(i.id) for i in seen) == ids(works)
            stored = {i.id: i for i in await manager.get_work_infos(wm.WorkQuery(tags={"t"}))}
            assert all(i == stored[i.id] for i in seen)
            assert {i.state for i in seen} == {wm.WorkState.SUCCEEDED}
            # And it goes on delivering every change.
            assert await manager.cancel_work_by_id(later.id)
            cancelled = await anext(watcher)
            assert (cancelled.id, cancelled.state) == (later.id, wm.WorkState.CANCELLED)
            assert held(watcher) <= SMALL


async def test_max_buffer_must_be_a_positive_integer(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    with anyio.fail_after(30):
        async with manager:
            for bad in (0, -1, True, 1.5, "10", None):
                with pytest.raises(wm.InvalidRequestError, match="max_buffer"):
                    manager.watch(wm.WorkQuery(tags={"t"}), max_buffer=bad)  # type: ignore[arg-type]
            async with manager.watch(wm.WorkQuery(tags={"t"}), max_buffer=1):
                pass


async def test_a_store_re_read_delivers_no_snapshot_again(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    # After a PostgreSQL reconnection the manager re-reads every watched work and
    # publishes it again: the same records, of finished works too.
    manager = make_manager()
    register(manager)
    done, waiting, marker = (request(tags={"t"}, initial_delay=d) for d in (0, 3600, 3600))
    seen: list[wm.WorkInfo] = []

    async def collect(watcher: wm.WorkWatcher) -> None:
        async for info in watcher:
            seen.append(info)
            if info.id == marker.id and info.is_finished:
                return

    with anyio.fail_after(30):
        async with (
            manager,
            manager.watch(wm.WorkQuery(tags={"t"})) as watcher,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(collect, watcher)
            await manager.enqueue(done, waiting, marker)
            await clock.advance(0)
            before = list(seen)
            assert [i.state for i in before if i.id == done.id][-1] is wm.WorkState.SUCCEEDED
            await manager._services.external_change(None)  # what a reconnection runs
            await manager._services.external_change(None)
            await clock.advance(0)
            await manager.cancel_work_by_id(marker.id)
            await clock.advance(0)
    assert [(i.id, i.state) for i in seen[len(before) :]] == [(marker.id, wm.WorkState.CANCELLED)]


# -- the watcher alone, fed records directly


def record(**changes: object) -> WorkRecord:
    return evolve(WorkRecord.from_request(request(tags={"t"}), now=1000.0), **changes)


def finished(base: WorkRecord) -> WorkRecord:
    return evolve(
        base,
        state=wm.WorkState.SUCCEEDED,
        finished_at=base.enqueued_at + 1,
        run_attempt_count=base.run_attempt_count + 1,
    )


async def no_works() -> list[WorkRecord]:
    return []


class Feed:
    """A hub and one watcher on it; ``deliver`` publishes batches and reads what comes
    before a marker (another work's fresh state, published last)."""

    def __init__(self) -> None:
        self.hub = EventHub(Holds(SystemClock()))
        self.watcher = self.hub.subscribe(wm.WorkQuery(tags={"t"}), no_works, max_buffer=10)
        self.marker = record()

    async def deliver(self, *records: WorkRecord) -> list[wm.WorkInfo]:
        self.marker = evolve(self.marker, run_attempt_count=self.marker.run_attempt_count + 1)
        got: list[wm.WorkInfo] = []
        for one in (*records, self.marker):
            self.hub.publish([one])
        with anyio.fail_after(5):
            async for info in self.watcher:
                if info.id == uuid.UUID(self.marker.id):
                    return got
                got.append(info)
        raise AssertionError("the watcher ended")


async def test_a_finished_work_is_delivered_once_and_older_records_are_dropped() -> None:
    feed = Feed()
    enqueued = record()
    running = evolve(enqueued, state=wm.WorkState.RUNNING, run_attempt_count=1)
    succeeded = finished(running)
    states = []
    for one in (enqueued, running, succeeded):
        states += [i.state for i in await feed.deliver(one)]
    assert states == [wm.WorkState.ENQUEUED, wm.WorkState.RUNNING, wm.WorkState.SUCCEEDED]
    assert await feed.deliver(succeeded) == []  # published again
    assert await feed.deliver(running) == []  # read before it finished, published late
    assert await feed.deliver(enqueued) == []
    assert await feed.deliver(succeeded) == []
    # What it keeps of the work: its id among the recently finished (and the marker:
    # its snapshot, and its worker in the index of delivered ENQUEUED works).
    assert held(feed.watcher) == 3


async def test_an_id_enqueued_again_after_pruning_is_followed_again() -> None:
    feed = Feed()
    first = record()
    assert [i.state for i in await feed.deliver(first, finished(first))] == [
        wm.WorkState.SUCCEEDED
    ]
    again = evolve(first, enqueued_at=2000.0, last_enqueue_time=2000.0, next_run_at=2000.0)
    assert [i.state for i in await feed.deliver(again)] == [wm.WorkState.ENQUEUED]
    assert [i.state for i in await feed.deliver(finished(again))] == [wm.WorkState.SUCCEEDED]


async def test_a_work_that_left_the_query_is_forgotten_once_finished() -> None:
    feed = Feed()
    work = record()
    assert len(await feed.deliver(work)) == 1
    elsewhere = evolve(work, tags=frozenset({"u"}))
    assert await feed.deliver(elsewhere, finished(elsewhere)) == []
    # The marker only: its snapshot, and its worker in the index of ENQUEUED works.
    assert held(feed.watcher) == 2
