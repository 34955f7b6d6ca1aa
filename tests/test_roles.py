"""Producer and worker roles in one process: a producer (``run_work=False``) serves every
call and never runs a work; worker names are checked where the docs say; start-up hooks.
(Several processes on one file: tests/test_multiprocess.py.)"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import MakeManager

import wm_async as wm
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing import VirtualClock

TIMEOUT = 30


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
async def test_a_producer_enqueues_observes_and_cancels_without_running_works(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    producer = make_manager(run_work=False)  # no worker registered: the name is enough
    worker = make_manager()
    ran: list[str] = []
    worker.register_worker("send", lambda ctx: ran.append(str(ctx.input["to"])))
    first = wm.OneTimeWorkRequest("send", input={"to": "a"})
    later = wm.OneTimeWorkRequest("send", input={"to": "b"}, initial_delay=60)
    with anyio.fail_after(TIMEOUT):
        async with producer:
            assert (producer.role, producer.is_scheduling) == ("producer", False)
            await producer.enqueue(first, later)
            await clock.advance(3600)  # nothing runs in a producer
            infos = await producer.get_work_infos(wm.WorkQuery(ids={first.id, later.id}))
            assert {i.state for i in infos} == {wm.WorkState.ENQUEUED}
            assert ran == []
            assert await producer.cancel_work_by_id(later.id)
        async with worker:
            assert worker.role == "scheduler"
            await clock.advance(0)
            assert (await worker.wait(first.id)).state is wm.WorkState.SUCCEEDED
            assert (await worker.get_work_info(later.id)).state is wm.WorkState.CANCELLED  # type: ignore[union-attr]
    assert ran == ["a"]


async def test_unknown_worker_names_are_caught_at_enqueue_with_known_workers_else_at_run(
    make_manager: MakeManager, clock: VirtualClock, store_url: str
) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store is one process's: a producer on it is alone")
    producer = make_manager(run_work=False, known_workers=["send"])
    loose = make_manager(run_work=False)
    worker = make_manager()
    worker.register_worker("send", lambda ctx: None)
    typo = wm.OneTimeWorkRequest("sned")
    with anyio.fail_after(TIMEOUT):
        async with producer, loose:
            with pytest.raises(wm.UnknownWorkerError, match="sned"):
                await producer.enqueue(wm.OneTimeWorkRequest("sned"))
            await producer.enqueue(wm.OneTimeWorkRequest("send"))
            await loose.enqueue(typo)  # a producer without known_workers cannot tell
        async with worker:
            with pytest.raises(wm.UnknownWorkerError):
                await worker.enqueue(wm.OneTimeWorkRequest("sned"))  # it has a registry
            await clock.advance(0)
            info = await worker.wait(typo.id)
    assert info.state is wm.WorkState.FAILED
    assert info.error is not None
    assert info.error.type.endswith(".UnknownWorkerError")
    assert "sned" in info.error.message


def test_bad_role_arguments_are_refused_at_construction() -> None:
    with pytest.raises(wm.InvalidRequestError, match="run_work"):
        wm.WorkManager("memory://", run_work="no")  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError, match="known_workers"):
        wm.WorkManager("memory://", known_workers="send")
    with pytest.raises(wm.InvalidRequestError, match="known_workers"):
        wm.WorkManager("memory://", known_workers=[""])


async def test_start_hooks_run_at_every_start_before_the_body(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    manager.register_worker("report", lambda ctx: None)
    starts: list[str] = []

    @manager.on_start
    async def declare(m: wm.WorkManager) -> None:
        assert m.state is wm.RunState.STARTED  # it serves calls already
        starts.append(m.role)
        await m.enqueue_unique_periodic_work(
            "nightly",
            wm.ExistingPeriodicWorkPolicy.KEEP,
            wm.PeriodicWorkRequest("report", repeat_interval=86400),
        )

    with anyio.fail_after(TIMEOUT):
        for _ in range(2):
            async with manager:
                infos = await manager.get_work_infos(wm.WorkQuery(unique_names={"nightly"}))
                assert len(infos) == 1  # declared once, kept at the second start
    assert starts == ["scheduler", "scheduler"]


async def test_a_failing_start_hook_stops_the_manager_with_its_error(
    make_manager: MakeManager,
) -> None:
    manager = make_manager()

    @manager.on_start
    async def broken(m: wm.WorkManager) -> None:
        raise LookupError("no such setting")

    with anyio.fail_after(TIMEOUT):
        with pytest.raises(LookupError, match="no such setting"):
            async with manager:
                pytest.fail("the body must not run")  # pragma: no cover
    assert manager.state is wm.RunState.STOPPED
    async with make_manager():  # the store (and a SQLite file's lock) was let go
        pass


def test_a_start_hook_must_be_async() -> None:
    manager = wm.WorkManager("memory://")
    with pytest.raises(wm.InvalidRequestError, match="async function"):
        manager.on_start(lambda m: None)  # type: ignore[arg-type,return-value]


async def test_a_standby_serves_calls_and_takes_over_when_the_scheduler_stops(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    first, second = wm.WorkManager(url, shutdown_grace=0), wm.WorkManager(url)
    held = anyio.Event()
    ran: list[str] = []

    @first.worker("hold")
    async def hold(ctx: wm.WorkContext) -> None:
        held.set()
        await anyio.sleep_forever()  # stopped by the shutdown: re-enqueued

    second.register_worker("hold", lambda ctx: ran.append(str(ctx.id)))
    work = wm.OneTimeWorkRequest("hold")
    stop_first = anyio.Event()

    async def run_first(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with first:
            await first.enqueue(work)
            task_status.started()
            await stop_first.wait()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(run_first)
            async with second:
                assert second.role == "standby"
                await held.wait()
                info = await second.get_work_info(work.id)
                assert info is not None
                assert info.state is wm.WorkState.RUNNING
                stop_first.set()
                final = await second.wait(work.id)
                assert second.role == "scheduler"
    assert final.state is wm.WorkState.SUCCEEDED
    assert ran == [str(work.id)]


async def test_a_standby_whose_takeover_meets_its_own_shutdown_still_stops(
    tmp_path: Path,
) -> None:
    """All processes of a server stop at once: a standby may get the lock of the
    scheduler that just stopped while its own shutdown begins. It stops all the same."""
    taking, release = anyio.Event(), anyio.Event()

    class SlowToLock(SQLiteStore):
        async def try_lock_for_scheduler(self, owner: str) -> bool:
            took = await super().try_lock_for_scheduler(owner)
            if took:  # the shutdown begins before the takeover goes on
                taking.set()
                await release.wait()
            return took

    first = wm.WorkManager(f"sqlite:///{tmp_path}/wm.db")
    second = wm.WorkManager(SlowToLock(tmp_path / "wm.db"))

    async def release_once_stopping() -> None:
        while True:  # the shutdown's first step is synchronous: done once it is STOPPING
            if second.state is wm.RunState.STOPPING:
                release.set()
                return
            await anyio.sleep(0.01)

    stop_first, first_stopped = anyio.Event(), anyio.Event()

    async def run_first(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with first:
            task_status.started()
            await stop_first.wait()
        first_stopped.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(run_first)
            async with second:
                assert second.role == "standby"
                stop_first.set()
                await first_stopped.wait()
                await taking.wait()
                tg.start_soon(release_once_stopping)
    assert second.state is wm.RunState.STOPPED
