"""max_concurrency: a run holds its place while its worker runs; the next works are claimed
while the last ones' outcomes are being written, with at most max_concurrency outcomes
waiting at once (docs/semantics.md, rule 49)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel

import wm_async as wm
from wm_async._core.lifecycle import Change
from wm_async._core.record import WorkRecord
from wm_async.stores._base import Claimed, ClaimParams
from wm_async.stores.memory import MemoryStore

S = wm.WorkState


class GatedStore(MemoryStore):
    """A memory store whose writes of finished works wait for ``gate`` while ``hold`` is
    set, and which notes how many works each claim took."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = True
        self.gate = anyio.Event()
        self.writing = 0  # outcomes being written now
        self.claims: list[int] = []  # how many works each claim took

    async def apply(self, changes: Sequence[Change]) -> list[WorkRecord]:
        finished = sum(c.after.state.is_finished for c in changes)
        self.writing += finished
        try:
            if finished and self.hold:
                await self.gate.wait()
            return await super().apply(changes)
        finally:
            self.writing -= finished

    async def claim_due(self, params: ClaimParams) -> Claimed:
        claimed = await super().claim_due(params)
        if claimed.records:
            self.claims.append(len(claimed.records))
        return claimed


async def test_the_next_works_are_claimed_while_outcomes_are_written() -> None:
    store = GatedStore()
    manager = wm.WorkManager(store, max_concurrency=2, shutdown_grace=0)
    in_worker = 0
    most_in_worker = 0
    started = 0
    second_pair = anyio.Event()
    writing_when_fourth_started: list[int] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        nonlocal in_worker, most_in_worker, started
        in_worker += 1
        most_in_worker = max(most_in_worker, in_worker)
        started += 1
        if started == 4:
            writing_when_fourth_started.append(store.writing)
            second_pair.set()
        await anyio.lowlevel.checkpoint()
        in_worker -= 1

    requests = [wm.OneTimeWorkRequest("w") for _ in range(6)]
    async with manager:
        await manager.enqueue(*requests)
        with anyio.fail_after(10):
            # The first two returned; their outcomes are held at the gate, and the
            # next two were claimed and run meanwhile.
            await second_pair.wait()
            while manager.statistics()["recording"] != 4:  # noqa: ASYNC110  # no event for it
                await anyio.sleep(0.01)
        stats = manager.statistics()
        # Four outcomes wait (two in the held write, two queued behind it): the
        # recording allowance (max_concurrency) and the free places both say no claim.
        assert stats["running"] == 4
        assert stats["claimable"] == 0
        assert started == 4
        # The first two outcomes were being written when the fourth work started.
        assert writing_when_fourth_started == [2]
        store.hold = False
        store.gate.set()
        with anyio.fail_after(10):
            infos = [await manager.wait(r.id) for r in requests]
    assert {i.state for i in infos} == {S.SUCCEEDED}
    assert started == 6  # each work ran once
    assert most_in_worker <= 2  # never more than max_concurrency in workers at once
    assert max(store.claims) <= 2


async def test_explain_says_capacity_is_full_only_when_no_work_can_be_claimed() -> None:
    release = anyio.Event()
    manager = wm.WorkManager(MemoryStore(), max_concurrency=1, shutdown_grace=0)
    running = anyio.Event()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        running.set()
        await release.wait()

    first, second = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w")
    async with manager:
        await manager.enqueue(first)
        with anyio.fail_after(10):
            await running.wait()
        await manager.enqueue(second)
        explained = await manager.explain(second.id)
        assert explained is not None
        assert explained.capacity_full
        release.set()
        with anyio.fail_after(10):
            await manager.wait(first.id)
            await manager.wait(second.id)
        after = await manager.explain(second.id)
        assert after is not None
        assert not after.capacity_full


async def test_a_capped_workers_outcomes_being_written_do_not_hold_its_cap() -> None:
    """max_running counts runs: a run whose worker returned, its outcome still being
    written, is RUNNING in the store but no longer runs (rule 49), so the cap lets the
    next works start meanwhile, and the workers never run more than the cap at once."""
    store = GatedStore()
    manager = wm.WorkManager(store, max_concurrency=2, shutdown_grace=0)
    in_worker = 0
    most_in_worker = 0
    started = 0
    second_pair = anyio.Event()

    @manager.worker("capped", max_running=2)
    async def capped(ctx: wm.WorkContext) -> None:
        nonlocal in_worker, most_in_worker, started
        in_worker += 1
        most_in_worker = max(most_in_worker, in_worker)
        started += 1
        if started == 4:
            second_pair.set()
        await anyio.lowlevel.checkpoint()
        in_worker -= 1

    requests = [wm.OneTimeWorkRequest("capped") for _ in range(6)]
    async with manager:
        await manager.enqueue(*requests)
        with anyio.fail_after(10):
            await second_pair.wait()  # the first two's outcomes are held at the gate
        assert store.writing >= 2
        store.hold = False
        store.gate.set()
        with anyio.fail_after(10):
            infos = [await manager.wait(r.id) for r in requests]
    assert {i.state for i in infos} == {S.SUCCEEDED}
    assert started == 6
    assert most_in_worker <= 2
