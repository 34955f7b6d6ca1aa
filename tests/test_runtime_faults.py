"""Faults inside the process: a worker's own CancelledError, a scheduler that dies, a
wall clock that steps, sync workers that ignore their timeout, calls racing a shutdown,
and a shutdown that begins while the first runs are being claimed. Each test fails on
the code before its fix."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from conftest import PgSchema, require_postgres

import wm_async as wm
from wm_async._core import lifecycle as _lifecycle
from wm_async._core.record import WorkRecord
from wm_async._runtime.executor import RunHandle
from wm_async._runtime.runners import RunnerPool
from wm_async.stores import open_store
from wm_async.stores.postgres import PostgresStore
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


async def ok(ctx: wm.WorkContext) -> None:
    return None


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (the caller bounds the wait)."""
    while not condition():
        await anyio.lowlevel.checkpoint()


# -- a worker's own CancelledError -----------------------------------------------------------


async def test_a_workers_foreign_cancelled_error_fails_that_work_only(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    """A worker that awaits a future cancelled elsewhere raises CancelledError although
    nothing cancelled its run: that work fails with a clear error, and the manager goes
    on running others (before the fix the scheduler died and wait() hung)."""
    manager = make_manager()

    @manager.worker("awaits_cancelled")
    async def awaits_cancelled(ctx: wm.WorkContext) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    @manager.worker("group")
    async def group(ctx: wm.WorkContext) -> None:
        raise BaseExceptionGroup("children", [asyncio.CancelledError()])

    manager.register_worker("ok", ok)
    with anyio.fail_after(20):
        async with manager:
            first = wm.OneTimeWorkRequest("awaits_cancelled", max_attempts=1)
            second = wm.OneTimeWorkRequest("group", max_attempts=1)
            await manager.enqueue(first, second)
            await clock.advance(0)
            for req in (first, second):
                info = await manager.wait(req.id)
                assert info.state is wm.WorkState.FAILED
                assert info.error is not None
            info = await manager.wait(first.id)
            assert info.error is not None
            assert info.error.type == "asyncio.exceptions.CancelledError"
            assert "nothing cancelled its run" in info.error.message
            assert manager.state is wm.RunState.STARTED
            later = wm.OneTimeWorkRequest("ok")
            await manager.enqueue(later)
            await clock.advance(0)
            assert (await manager.wait(later.id)).state is wm.WorkState.SUCCEEDED


async def test_a_dead_scheduler_fails_the_manager_loudly(
    monkeypatch: pytest.MonkeyPatch, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An internal error kills the scheduler: the manager says so at once (ERROR log,
    RunState.FAILED), every call raises SchedulerError with the cause, a pending wait()
    ends with it, and leaving `async with` raises it; the app's own code inside
    `async with` is not cancelled."""
    manager = wm.WorkManager("memory://", clock=clock, shutdown_grace=0)
    manager.register_worker("ok", ok)
    real_finish = _lifecycle.finish

    def broken_finish(record: object, outcome: object, *, now: float, **policy: object) -> object:
        raise RuntimeError("internal bug")

    waiter_errors: list[BaseException] = []
    blocked = wm.OneTimeWorkRequest("ok", initial_delay=3600)

    async def waiter() -> None:
        try:
            await manager.wait(blocked.id)
        except wm.NotRunningError as exc:
            waiter_errors.append(exc)

    body_finished = False

    async def run() -> None:
        nonlocal body_finished
        async with manager:
            async with anyio.create_task_group() as tg:
                await manager.enqueue(blocked)
                tg.start_soon(waiter)
                await clock.advance(0)
                monkeypatch.setattr(_lifecycle, "finish", broken_finish)
                await manager.enqueue(wm.OneTimeWorkRequest("ok"))
                await clock.advance(0)
                await until(lambda: manager.state is wm.RunState.FAILED)
                monkeypatch.setattr(_lifecycle, "finish", real_finish)
                with pytest.raises(wm.SchedulerError) as refused:
                    await manager.enqueue(wm.OneTimeWorkRequest("ok"))
                assert isinstance(refused.value.__cause__, RuntimeError)
                assert isinstance(refused.value, wm.NotRunningError)
                with pytest.raises(wm.SchedulerError):
                    await manager.get_work_info(blocked.id)
            body_finished = True

    with anyio.fail_after(20), pytest.raises(wm.SchedulerError) as raised:
        await run()
    assert body_finished
    assert isinstance(raised.value.cause, RuntimeError)
    assert "internal bug" in str(raised.value)
    assert len(waiter_errors) == 1
    assert isinstance(waiter_errors[0], wm.SchedulerError)
    assert manager.state is wm.RunState.STOPPED
    assert any(
        r.levelno == logging.ERROR and "scheduler stopped on an unexpected error" in r.message
        for r in caplog.records
    )
    # It can be started again, and then runs work.
    async with manager:
        again = wm.OneTimeWorkRequest("ok")
        await manager.enqueue(again)
        await clock.advance(0)
        assert (await manager.wait(again.id)).state is wm.WorkState.SUCCEEDED


# -- the wall clock steps ----------------------------------------------------------------------


class SteppedClock(wm.SystemClock):
    """The system clock, with a wall time the test can step."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


async def test_a_wall_clock_step_does_not_time_out_healthy_runs() -> None:
    """Stepping the wall clock an hour forward must not time out a run whose 600 s
    timeout has not passed (before the fix: the next deadline check compared wall times
    and stopped it with TIMEOUT)."""
    clock = SteppedClock()
    manager = wm.WorkManager("memory://", clock=clock, shutdown_grace=0, max_concurrency=4)
    release = anyio.Event()
    started = anyio.Event()

    @manager.worker("healthy")
    async def healthy(ctx: wm.WorkContext) -> None:
        started.set()
        await release.wait()

    @manager.worker("hangs")
    async def hangs(ctx: wm.WorkContext) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(20):
        async with manager:
            long = wm.OneTimeWorkRequest("healthy", timeout=600, max_attempts=1)
            short = wm.OneTimeWorkRequest("hangs", timeout=0.3, max_attempts=1)
            await manager.enqueue(long, short)
            await started.wait()
            clock.offset += 3600  # an hour forward
            timed_out = await manager.wait(short.id)
            assert timed_out.stop_reason is wm.StopReason.TIMEOUT
            info = await manager.get_work_info(long.id)
            assert info is not None
            assert info.state is wm.WorkState.RUNNING
            release.set()
            done = await manager.wait(long.id)
            assert done.state is wm.WorkState.SUCCEEDED


# -- sync workers that ignore their timeout --------------------------------------------------


async def test_a_stuck_sync_worker_keeps_its_place_and_is_not_run_beside_itself(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    """A sync worker's thread cannot be cancelled. Past its timeout it keeps counting
    against max_concurrency until it returns, and its work does not run again beside
    it (before the fix: a thread leaked per timeout, and runs exceeded the limit)."""
    manager = make_manager(max_concurrency=1)
    release = threading.Event()
    entered = threading.Event()
    lock = threading.Lock()
    calls: list[int] = []
    inside = 0
    most_inside = 0

    @manager.worker("stuck")
    def stuck(ctx: wm.WorkContext) -> None:
        nonlocal inside, most_inside
        with lock:
            calls.append(ctx.run_attempt_count)
            inside += 1
            most_inside = max(most_inside, inside)
        entered.set()
        try:
            release.wait(30)
        finally:
            with lock:
                inside -= 1

    manager.register_worker("ok", ok)
    try:
        with anyio.fail_after(40):
            async with manager:
                req = wm.OneTimeWorkRequest("stuck", timeout=1, max_attempts=3)
                other = wm.OneTimeWorkRequest("ok")
                await manager.enqueue(req)
                await clock.advance(0)
                assert await anyio.to_thread.run_sync(entered.wait, 10)
                await manager.enqueue(other)
                for _ in range(5):
                    await clock.advance(2)  # the timeout passes again and again
                assert calls == [0]
                info = await manager.get_work_info(req.id)
                assert info is not None
                assert info.state is wm.WorkState.RUNNING
                waiting = await manager.get_work_info(other.id)
                assert waiting is not None
                assert waiting.state is wm.WorkState.ENQUEUED  # no slot while it runs
                release.set()
                assert (await manager.wait(other.id)).state is wm.WorkState.SUCCEEDED
                done = await manager.wait(req.id)
                # The first run was recorded as timed out when its thread returned; the
                # second (the event is set now) succeeded.
                assert done.state is wm.WorkState.SUCCEEDED
                assert done.run_attempt_count == 2
                assert calls == [0, 1]
                assert most_inside == 1
    finally:
        release.set()


# -- calls racing a shutdown -----------------------------------------------------------------


class _HeldInsert(SQLiteStore):
    """A SQLite store whose inserts wait until the store has been closed."""

    entered: anyio.Event
    closed: anyio.Event

    async def close(self) -> None:
        await super().close()
        self.closed.set()

    async def insert(
        self,
        records: Sequence[WorkRecord],
        prerequisites: Mapping[str, Sequence[str]] | None = None,
    ) -> list[WorkRecord]:
        self.entered.set()
        await self.closed.wait()
        return await super().insert(records, prerequisites)


async def test_an_enqueue_racing_the_shutdown_gets_not_running_error(tmp_path: Path) -> None:
    store = _HeldInsert(tmp_path / "wm.db")
    store.entered, store.closed = anyio.Event(), anyio.Event()
    manager = wm.WorkManager(store, shutdown_grace=0)
    manager.register_worker("ok", ok)
    errors: list[BaseException] = []

    async def enqueue() -> None:
        try:
            await manager.enqueue(wm.OneTimeWorkRequest("ok"))
        except Exception as exc:  # noqa: BLE001  # the test checks which
            errors.append(exc)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg, manager:
            tg.start_soon(enqueue)
            await store.entered.wait()
    assert len(errors) == 1
    assert type(errors[0]) is wm.NotRunningError, errors[0]
    assert isinstance(errors[0].__cause__, wm.StoreError)


# -- shutdown while the first runs are being claimed -------------------------------------------


async def test_leaving_right_after_enqueue_lets_the_claimed_runs_finish(store_url: str) -> None:
    """Five 20 ms works with max_attempts=1, and the manager left at once after the
    enqueue with a 5 s grace: the claim in flight completes, the runs get the grace and
    succeed (before the fix, on SQLite and PostgreSQL, they were stopped before they
    started and ended FAILED with SHUTDOWN)."""
    store = open_store(store_url)
    manager = wm.WorkManager(store, shutdown_grace=5, blocked_loop_warning=None)
    ran: list[uuid.UUID] = []

    @manager.worker("short")
    async def short(ctx: wm.WorkContext) -> None:
        await anyio.sleep(0.02)
        ran.append(ctx.id)

    requests = [wm.OneTimeWorkRequest("short", max_attempts=1) for _ in range(5)]
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(*requests)
        async with store:
            records = await store.get([str(r.id) for r in requests])
    assert sorted(r.state.value for r in records) == ["SUCCEEDED"] * 5
    assert sorted(map(str, ran)) == sorted(str(r.id) for r in requests)


async def test_a_run_stopped_before_its_worker_starts_does_not_spend_an_attempt(
    make_manager: MakeManager, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimed run stopped before its worker is called (as a signal turning false
    right after the claim does) goes back to ENQUEUED without counting the attempt, so a
    max_attempts=1 work still runs later instead of ending FAILED unrun."""
    manager = make_manager()
    ran: list[int] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(ctx.run_attempt_count)

    real_start = RunnerPool.start
    stop_next = [True]

    def start_then_stop(
        self: RunnerPool, records: list[WorkRecord], claimed_at: float
    ) -> list[RunHandle]:
        handles = real_start(self, records, claimed_at)
        if stop_next[0]:  # the exact moment: claimed, not yet handed to the worker
            stop_next[0] = False
            for record in records:
                self.runs.interrupt(record.id, wm.StopReason.CONSTRAINT_SIGNAL)
        return handles

    monkeypatch.setattr(RunnerPool, "start", start_then_stop)
    async with manager:
        req = wm.OneTimeWorkRequest("w", initial_delay=10, max_attempts=1)
        await manager.enqueue(req)
        await clock.advance(10)
        info = await manager.get_work_info(req.id)
        assert info is not None
        # Stopped before it ran, then claimed again at once (it is due): it ran once,
        # as its first attempt.
        done = await manager.wait(req.id)
        assert done.state is wm.WorkState.SUCCEEDED
        assert done.run_attempt_count == 1
        assert ran == [0]


# -- a partition from the store: leases that cannot be renewed -------------------------------


@pytest.mark.postgres
async def test_a_run_whose_lease_cannot_be_renewed_stops_before_the_lease_ends(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While renewals fail (the store unreachable from this process only), a run is
    stopped (LEASE_LOST) just before its lease may end, so that another process that
    rescues the work never runs it beside this one."""
    await require_postgres()
    schema = PgSchema()
    try:
        store = PostgresStore(schema.url(), lease=10)
        manager = wm.WorkManager(store, clock=clock, shutdown_grace=0)

        @manager.worker("long")
        async def long(ctx: wm.WorkContext) -> None:
            await anyio.sleep_forever()

        async def unreachable(self: PostgresStore, **kwargs: object) -> set[str]:
            raise wm.StoreError("renewing leases failed: connection refused")

        with anyio.fail_after(30):
            async with manager:
                req = wm.OneTimeWorkRequest("long", max_attempts=1)
                await manager.enqueue(req)
                await clock.advance(0)
                monkeypatch.setattr(PostgresStore, "renew_leases", unreachable)
                await clock.advance(5)  # the first renewal fails
                await clock.advance(3.9)
                info = await manager.get_work_info(req.id)
                assert info is not None
                assert info.state is wm.WorkState.RUNNING
                await clock.advance(0.1)  # a second before the lease may end
                info = await manager.get_work_info(req.id)
                assert info is not None
                assert info.state is wm.WorkState.FAILED  # (max_attempts=1)
                assert info.stop_reason is wm.StopReason.LEASE_LOST
    finally:
        await schema.drop()


@pytest.mark.postgres
async def test_a_process_paused_past_its_lease_stops_its_runs_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process whose loop stood still longer than the lease (a stopped process, a
    frozen VM) cannot know whether another process took its works over: it stops those
    runs (LEASE_LOST) as soon as it runs again, before asking the store, so they overlap
    a rescuer's run as little as possible."""
    await require_postgres()
    schema = PgSchema()
    renewed: list[set[str]] = []
    real_renew = PostgresStore.renew_leases

    async def spy(self: PostgresStore, *, owner: str, ids: object, now: float) -> set[str]:
        renewed.append(set(ids))  # type: ignore[call-overload]
        return await real_renew(self, owner=owner, ids=ids, now=now)  # type: ignore[arg-type]

    monkeypatch.setattr(PostgresStore, "renew_leases", spy)
    try:
        store = PostgresStore(schema.url(), lease=1.0)
        manager = wm.WorkManager(store, shutdown_grace=0, blocked_loop_warning=None)
        started, stopped = anyio.Event(), anyio.Event()
        reasons: list[wm.StopReason] = []

        @manager.worker("long")
        async def long(ctx: wm.WorkContext) -> None:
            started.set()
            try:
                await anyio.sleep_forever()
            finally:
                reasons.append(ctx.stop_reason)
                stopped.set()

        with anyio.fail_after(30):
            async with manager:
                req = wm.OneTimeWorkRequest("long")
                await manager.enqueue(req)
                await started.wait()
                renewed.clear()
                time.sleep(1.5)  # noqa: ASYNC251  # the whole process stands still
                await stopped.wait()
        assert reasons == [wm.StopReason.LEASE_LOST]
        assert all(str(req.id) not in ids for ids in renewed)  # stopped without asking
    finally:
        await schema.drop()
