"""The store reads behind the dashboard (browse with keyset pages, the overview's
aggregates, chain edges) on every store, and the manager's new actions, run_again and
run_now (semantics 51)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import wm_async as wm
from wm_async.stores._browse import BrowseFilter
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


def register(manager: wm.WorkManager) -> None:
    @manager.worker("ok")
    async def ok(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"done": True})

    @manager.worker("bad")
    async def bad(ctx: wm.WorkContext) -> None:
        raise ValueError("boom")


async def test_browse_filters_and_pages_newest_first(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    register(manager)
    reqs = []
    async with manager:
        for i in range(7):
            req = wm.OneTimeWorkRequest(
                "ok" if i % 2 else "bad", tags={"even"} if i % 2 == 0 else set()
            )
            reqs.append(req)
            await manager.enqueue(req)
            await clock.advance(1)
        store = manager.store
        seen: list[str] = []
        cursor = None
        while True:
            page = await store.browse(BrowseFilter(limit=3, before=cursor))
            seen += [r.id for r in page.records]
            if not page.more:
                break
            last = page.records[-1]
            cursor = (last.enqueued_at, last.id)
        assert seen == [str(r.id) for r in reversed(reqs)]
        failed = await store.browse(BrowseFilter(states={wm.WorkState.FAILED}))
        assert {r.id for r in failed.records} == {str(r.id) for r in reqs[::2]}
        assert len((await store.browse(BrowseFilter(worker="ok"))).records) == 3
        assert len((await store.browse(BrowseFilter(tag="even"))).records) == 4
        prefix = str(reqs[3].id)[:30]
        assert [r.id for r in (await store.browse(BrowseFilter(id_prefix=prefix))).records] == [
            str(reqs[3].id)
        ]
        start = reqs[0]
        info = await manager.get_work_info(start.id)
        assert info is not None
        t0 = info.enqueued_at.timestamp()
        window = await store.browse(BrowseFilter(since=t0 + 1, until=t0 + 3))
        assert [r.id for r in window.records] == [str(reqs[2].id), str(reqs[1].id)]
        assert (await store.browse(BrowseFilter(unique_name="none"))).records == []


def test_browse_filter_refuses_bad_values() -> None:
    for bad in ({"limit": 0}, {"limit": 501}, {"limit": True}, {"id_prefix": "XYZ%"}):
        with pytest.raises(wm.InvalidRequestError):
            BrowseFilter(**bad)


async def test_overview_counts_throughput_due_and_running(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    register(manager)
    async with manager:
        await manager.enqueue(wm.OneTimeWorkRequest("ok", tags={"t"}))
        await manager.enqueue(wm.OneTimeWorkRequest("bad", tags={"t"}))
        await clock.advance(1)
        await manager.pause_worker("ok")  # its due work waits: oldest due
        waiting = wm.OneTimeWorkRequest("ok")
        await manager.enqueue(waiting)
        await manager.enqueue(wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1)))
        await clock.advance(30)
        now = clock.now()
        ov = await manager.store.overview(now=now, since=now - 600, bucket=60)
        counts = {(w, s.value): n for w, s, n in ov.counts}
        assert counts == {("ok", "SUCCEEDED"): 1, ("bad", "FAILED"): 1, ("ok", "ENQUEUED"): 2}
        tags = {(t, s.value): n for t, s, n in ov.tag_counts}
        assert tags == {
            ("t", "SUCCEEDED"): 1,
            ("t", "FAILED"): 1,
            ("ok", "SUCCEEDED"): 1,
            ("bad", "FAILED"): 1,
            ("ok", "ENQUEUED"): 2,
        }
        assert sum(b.succeeded for b in ov.buckets) == 1
        assert sum(b.failed for b in ov.buckets) == 1
        assert len(ov.buckets) == 10
        assert ov.due_count == 1
        assert [r.id for r in ov.due] == [str(waiting.id)]
        assert set(ov.run_times) == {"ok", "bad"}
        # Outside the window, finished works are not counted; unfinished ones are.
        later = now + 3600 * 2
        ov2 = await manager.store.overview(now=later, since=later - 60, bucket=60)
        assert {s.value for _, s, _ in ov2.counts} == {"ENQUEUED"}
        with pytest.raises(wm.InvalidRequestError):
            await manager.store.overview(now=now, since=now - 10**6, bucket=1)


async def test_edges_of_a_chain(make_manager: MakeManager, clock: VirtualClock) -> None:
    manager = make_manager()
    register(manager)
    a, b, c = (wm.OneTimeWorkRequest("ok") for _ in range(3))
    async with manager:
        await manager.begin_with(a).then(b).then(c).enqueue()
        edges = await manager.store.edges([str(b.id)])
        assert sorted(edges) == sorted([(str(a.id), str(b.id)), (str(b.id), str(c.id))])
        assert await manager.store.edges([str(uuid.uuid4())]) == []


async def test_run_again_makes_a_new_work_with_the_same_spec(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    runs: list[dict[str, object]] = []

    @manager.worker("flaky")
    async def flaky(ctx: wm.WorkContext) -> wm.Result:
        runs.append(dict(ctx.input))
        return wm.Result.failure() if len(runs) == 1 else wm.Result.success()

    req = wm.OneTimeWorkRequest("flaky", input={"n": 1}, tags={"x"}, priority=3, max_attempts=2)
    async with manager:
        await manager.enqueue(req)
        failed = await manager.wait(req.id)
        assert failed.state is wm.WorkState.FAILED
        new = await manager.run_again(req.id)
        assert new.id != req.id
        assert new.state is wm.WorkState.ENQUEUED
        assert new.run_attempt_count == 0
        assert (new.worker, dict(new.input), new.tags, new.priority) == (
            "flaky",
            {"n": 1},
            req.tags,
            3,
        )
        done = await manager.wait(new.id)
        assert done.state is wm.WorkState.SUCCEEDED
        old = await manager.get_work_info(req.id)
        assert old is not None
        assert old.state is wm.WorkState.FAILED  # the original is left as it finished
        assert runs == [{"n": 1}, {"n": 1}]


async def test_run_again_refuses_what_it_cannot_do(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    register(manager)
    later = wm.OneTimeWorkRequest("ok", initial_delay=600)
    a, b = wm.OneTimeWorkRequest("bad"), wm.OneTimeWorkRequest("ok")
    u1 = wm.OneTimeWorkRequest("ok", initial_delay=600)
    async with manager:
        await manager.enqueue(later)
        with pytest.raises(wm.InvalidRequestError, match="FAILED or CANCELLED"):
            await manager.run_again(later.id)
        with pytest.raises(wm.InvalidRequestError, match="no such work"):
            await manager.run_again(uuid.uuid4())
        await manager.begin_with(a).then(b).enqueue()
        await manager.wait(b.id)
        with pytest.raises(wm.InvalidRequestError, match="prerequisite"):
            await manager.run_again(b.id)  # failed because a failed: run a again instead
        again = await manager.run_again(a.id)
        assert again.state is wm.WorkState.ENQUEUED
        # A unique name held by an unfinished work is not taken twice.
        await manager.enqueue_unique_work("u", wm.ExistingWorkPolicy.KEEP, u1)
        await manager.cancel_work_by_id(u1.id)
        rerun = await manager.run_again(u1.id)
        assert (rerun.unique_name, rerun.state) == ("u", wm.WorkState.ENQUEUED)
        with pytest.raises(wm.InvalidRequestError, match="unfinished work holds the name"):
            await manager.run_again(u1.id)
        names = await manager.get_work_infos(wm.WorkQuery(unique_names={"u"}))
        assert {i.id for i in names} == {u1.id, rerun.id}  # the original is kept


async def test_run_now_skips_the_delay_only(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    ran: list[str] = []

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        ran.append("w")

    req = wm.OneTimeWorkRequest("w", initial_delay=timedelta(hours=1))
    async with manager:
        await manager.enqueue(req)
        await clock.advance(1)
        assert ran == []
        info = await manager.run_now(req.id)
        assert info.next_schedule_time is not None
        assert info.next_schedule_time.timestamp() == clock.now()
        assert info.run_attempt_count == 0
        await clock.advance(0)
        assert (await manager.wait(req.id)).state is wm.WorkState.SUCCEEDED
        with pytest.raises(wm.InvalidRequestError, match="only an ENQUEUED work"):
            await manager.run_now(req.id)
        with pytest.raises(wm.InvalidRequestError, match="no such work"):
            await manager.run_now(uuid.uuid4())


async def test_start_lateness_is_recorded(make_manager: MakeManager, clock: VirtualClock) -> None:
    manager = make_manager()
    register(manager)
    async with manager:
        await manager.pause_worker("ok")
        await manager.enqueue(wm.OneTimeWorkRequest("ok"))
        await clock.advance(30)  # due all along, held back by the pause
        await manager.resume_worker("ok")
        await clock.advance(1)
        now = clock.now()
        ov = await manager.store.overview(now=now, since=now - 600, bucket=600)
        (bucket,) = ov.buckets
        assert bucket.succeeded == 1
        assert bucket.started == 1
        assert bucket.late_mean == pytest.approx(30, abs=0.5)
        assert bucket.late_max == pytest.approx(30, abs=0.5)


async def test_sqlite_tag_pages_are_the_same_by_either_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rare tag's works are read through the tag table, a common one's by scanning the
    newest works: the same page either way."""
    from wm_async._core.record import WorkRecord
    from wm_async.stores import _sqlite_browse
    from wm_async.stores.sqlite import SQLiteStore

    async with SQLiteStore(tmp_path / "wm.db") as store:
        records = [
            WorkRecord.from_request(
                wm.OneTimeWorkRequest("w", tags={"t"} if i % 3 == 0 else set()), now=1000.0 + i
            )
            for i in range(30)
        ]
        await store.insert(records)
        flt = BrowseFilter(tag="t", limit=4, states={wm.WorkState.ENQUEUED})
        rare = await store.browse(flt)
        monkeypatch.setattr(_sqlite_browse, "RARE_TAG", 0)
        common = await store.browse(flt)
        expected = [r.id for r in reversed(records) if "t" in r.tags][:4]
        assert [r.id for r in rare.records] == expected
        assert [r.id for r in common.records] == expected
        assert rare.more
        assert common.more
