"""Constraints as signals, through the manager: parking, stopping, explain (issue 3)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async.signals import (
    Flag,
    Predicate,
)
from wm_async.stores import (
    Claimed,
    ClaimParams,
)
from wm_async.stores.memory import MemoryStore
from wm_async.testing import (
    TestDriver,
    VirtualClock,
)

MakeManager = Callable[..., wm.WorkManager]


def needs(*signals: str, **kwargs: object) -> wm.OneTimeWorkRequest:
    return wm.OneTimeWorkRequest(
        "w",
        constraints=wm.Constraints(signals=set(signals)),
        **kwargs,  # type: ignore[arg-type]
    )


async def state_of(manager: wm.WorkManager, req: wm.OneTimeWorkRequest) -> wm.WorkInfo:
    info = await manager.get_work_info(req.id)
    assert info is not None
    return info


async def test_parked_work_starts_when_its_signal_turns_true(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    db_up = Flag(False)
    manager.register_signal("db_up", db_up)
    ran_at: list[float] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran_at.append(clock.now())

    req = needs("db_up")
    async with manager:
        await manager.enqueue(req)
        await clock.advance(timedelta(hours=1))
        assert ran_at == []
        info = await state_of(manager, req)
        assert info.state is wm.WorkState.ENQUEUED
        explained = await manager.explain(req.id)
        assert explained is not None
        assert explained.unmet_signals == {"db_up": "false"}
        assert "waiting for signal 'db_up'" in str(explained)
        flipped_at = clock.now()
        db_up.set()
        await clock.advance(0)  # no time passes: one dispatcher turn
        info = await state_of(manager, req)
    assert ran_at == [flipped_at]
    assert info.state is wm.WorkState.SUCCEEDED


async def test_signal_turning_false_stops_running_work_and_requeues_it(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    db_up = Flag(True)
    manager.register_signal("db_up", db_up)
    stop_reasons: list[wm.StopReason] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        if ctx.run_attempt_count == 0:
            try:
                await anyio.sleep_forever()
            finally:
                stop_reasons.append(ctx.stop_reason)
        return wm.Result.success({"attempt": ctx.run_attempt_count})

    req = needs("db_up", backoff=wm.Backoff(delay=timedelta(hours=1)))
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        assert (await state_of(manager, req)).state is wm.WorkState.RUNNING
        db_up.clear()
        await clock.advance(0)
        info = await state_of(manager, req)
        assert stop_reasons == [wm.StopReason.CONSTRAINT_SIGNAL]
        assert info.state is wm.WorkState.ENQUEUED
        assert info.stop_reason is wm.StopReason.CONSTRAINT_SIGNAL
        assert info.run_attempt_count == 1  # the attempt counts
        assert info.next_schedule_time is not None
        assert info.next_schedule_time.timestamp() == clock.now()  # no backoff
        await clock.advance(timedelta(hours=2))
        assert (await state_of(manager, req)).state is wm.WorkState.ENQUEUED  # parked
        db_up.set()
        await clock.advance(0)
        info = await state_of(manager, req)
    assert info.state is wm.WorkState.SUCCEEDED
    assert info.output == {"attempt": 1}


async def test_replaced_builtin_network_signal_maps_to_connectivity_stop_reason(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    online = Flag(True)
    manager.register_signal("network", online)  # an app's own network probe
    reasons: list[wm.StopReason] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            reasons.append(ctx.stop_reason)

    req = wm.OneTimeWorkRequest(
        "w", constraints=wm.Constraints(required_network=wm.NetworkType.CONNECTED)
    )
    async with manager:
        await manager.enqueue(req)
        await clock.advance(0)
        online.clear()
        await clock.advance(0)
        info = await state_of(manager, req)
    assert reasons == [wm.StopReason.CONSTRAINT_CONNECTIVITY]
    assert info.stop_reason is wm.StopReason.CONSTRAINT_CONNECTIVITY


async def test_flapping_signal_neither_loses_nor_duplicates_work(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=4)
    gate = Flag(False)
    manager.register_signal("gate", gate)
    completed: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        await clock.sleep_until(clock.now() + 1, anyio.Event())  # one virtual second
        completed.append(str(ctx.id))

    reqs = [needs("gate") for _ in range(40)]
    async with manager:
        await manager.enqueue(*reqs)
        for i in range(30):
            (gate.set if i % 2 == 0 else gate.clear)()
            await clock.advance(0.5 if i % 3 else 1.5)
        gate.set()
        await clock.advance(timedelta(minutes=5))
        infos = await manager.get_work_infos(wm.WorkQuery(ids={r.id for r in reqs}))
    assert {i.state for i in infos} == {wm.WorkState.SUCCEEDED}
    assert sorted(completed) == sorted(str(r.id) for r in reqs)  # each exactly once


async def test_failing_or_odd_checks_keep_work_parked_and_are_explained(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    mode = ["raise"]

    async def check() -> object:
        if mode[0] == "raise":
            raise ConnectionError("db unreachable")
        if mode[0] == "odd":
            return "yes"
        return True

    manager.register_signal("db_up", Predicate(check, every=10))  # type: ignore[arg-type]
    ran: list[int] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(1)

    req = needs("db_up")
    async with manager:
        await manager.enqueue(req)
        await clock.advance(30)
        explained = await manager.explain(req.id)
        assert explained is not None
        assert "ConnectionError: db unreachable" in explained.unmet_signals["db_up"]
        mode[0] = "odd"
        await clock.advance(10)
        explained = await manager.explain(req.id)
        assert explained is not None
        assert "returned str" in explained.unmet_signals["db_up"]
        assert ran == []
        mode[0] = "ok"
        await clock.advance(10)
        info = await state_of(manager, req)
    assert ran == [1]
    assert info.state is wm.WorkState.SUCCEEDED


async def test_unknown_signal_name_is_rejected_at_enqueue(make_manager: MakeManager) -> None:
    manager = make_manager()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = needs("nobody_registered_this")
    async with manager:
        with pytest.raises(wm.InvalidRequestError, match="register_signal"):
            await manager.enqueue(req)
        assert await manager.get_work_info(req.id) is None
    with pytest.raises(wm.InvalidRequestError):
        manager.register_signal("x", object())  # type: ignore[arg-type]


async def test_parked_works_are_watched_again_after_a_restart(
    clock: VirtualClock, tmp_path: Path
) -> None:
    # SQLite only: surviving a restart is what a durable store is for.
    url = f"sqlite:///{tmp_path}/restart.db"
    gate = Flag(False)

    def make() -> wm.WorkManager:
        manager = wm.WorkManager(url, clock=clock, shutdown_grace=0)
        manager.register_signal("gate", gate)

        @manager.worker("w")
        async def work(ctx: wm.WorkContext) -> None:
            return None

        return manager

    req = needs("gate")
    async with make() as first:
        await first.enqueue(req)
        await clock.advance(1)
    async with make() as second:
        await clock.advance(1)
        assert (await state_of(second, req)).state is wm.WorkState.ENQUEUED
        gate.set()
        await clock.advance(0)
        assert (await state_of(second, req)).state is wm.WorkState.SUCCEEDED


async def test_set_all_constraints_met(make_manager: MakeManager, clock: VirtualClock) -> None:
    manager = make_manager()
    manager.register_signal("never", Flag(False))

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    req = needs("never")
    async with manager:
        await manager.enqueue(req)
        await clock.advance(10)
        assert (await state_of(manager, req)).state is wm.WorkState.ENQUEUED
        await TestDriver(manager).set_all_constraints_met(req.id)
        await clock.advance(0)
        assert (await state_of(manager, req)).state is wm.WorkState.SUCCEEDED


async def test_explain_names_delay_capacity_and_state(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=1)
    release = anyio.Event()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        await release.wait()

    busy, queued, later = (
        wm.OneTimeWorkRequest("w"),
        wm.OneTimeWorkRequest("w"),
        wm.OneTimeWorkRequest("w", initial_delay=90),
    )
    async with manager:
        await manager.enqueue(busy)
        await clock.advance(0)
        await manager.enqueue(queued, later)
        await clock.advance(0)
        e_busy, e_queued, e_later = [await manager.explain(r.id) for r in (busy, queued, later)]
        assert e_busy is not None
        assert e_queued is not None
        assert e_later is not None
        assert e_busy.reasons == ("running",)
        assert e_queued.capacity_full
        assert "max_concurrency" in e_queued.reasons[0]
        assert e_later.due_at is not None
        assert e_later.due_at.timestamp() == clock.now() + 90
        assert e_later.reasons[0].startswith("delayed until")
        release.set()
        await clock.advance(0)
        done = await manager.explain(busy.id)
        assert done is not None
        assert done.reasons == ("finished: SUCCEEDED",)
        assert await manager.explain(wm.OneTimeWorkRequest("w").id) is None


class CountingStore(MemoryStore):
    """A memory store that counts claims, to prove parked work costs no wake-ups."""

    claims: int = 0

    async def claim_due(self, params: ClaimParams) -> Claimed:
        CountingStore.claims += 1
        return await super().claim_due(params)


async def test_parked_work_costs_no_dispatcher_wakeups(clock: VirtualClock) -> None:
    manager = wm.WorkManager(CountingStore(), clock=clock, prune_interval=timedelta(days=30))
    manager.register_signal("gate", Flag(False))

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    async with manager:
        await manager.enqueue(*[needs("gate") for _ in range(1000)])
        await clock.advance(0)
        before = CountingStore.claims
        await clock.advance(timedelta(days=1))
        after = CountingStore.claims
    assert after - before == 0
