"""Chains (semantics 17-21), APPEND policies (25), cancellation of dependents (29) and
retention of prerequisites (34), on every store, with the virtual clock."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]
S = wm.WorkState


class Steps:
    """The worker ``step``: records each run's input in order, returns the output the
    test set for the work (``outputs``), fails the works in ``failing``, and waits for
    ``gate`` if the test set one for the work."""

    def __init__(self, manager: wm.WorkManager) -> None:
        self.order: list[uuid.UUID] = []
        self.inputs: dict[uuid.UUID, dict[str, object]] = {}
        self.outputs: dict[uuid.UUID, dict[str, wm.JSONValue]] = {}
        self.failing: set[uuid.UUID] = set()
        self.gates: dict[uuid.UUID, anyio.Event] = {}
        manager.register_worker("step", self.run)

    async def run(self, ctx: wm.WorkContext) -> wm.Result:
        self.order.append(ctx.id)
        self.inputs[ctx.id] = dict(ctx.input)
        gate = self.gates.get(ctx.id)
        if gate is not None:
            await gate.wait()
        if ctx.id in self.failing:
            return wm.Result.failure({"failed": True})
        return wm.Result.success(self.outputs.get(ctx.id, {}))

    def work(
        self,
        output: dict[str, wm.JSONValue] | None = None,
        *,
        fail: bool = False,
        **options: object,
    ) -> wm.OneTimeWorkRequest:
        request = wm.OneTimeWorkRequest("step", **options)  # type: ignore[arg-type]
        if output is not None:
            self.outputs[request.id] = output
        if fail:
            self.failing.add(request.id)
        return request


async def states(manager: wm.WorkManager, *requests: wm.OneTimeWorkRequest) -> list[S | None]:
    infos = [await manager.get_work_info(r.id) for r in requests]
    return [None if i is None else i.state for i in infos]


async def test_a_chain_runs_step_by_step_and_feeds_outputs_forward(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a = steps.work({"x": 1, "key": "from a"}, initial_delay=10)
    b = steps.work({"y": 2}, input={"key": "own", "mine": True})
    c = steps.work()
    async with manager:
        chain = manager.begin_with(a).then(b).then(c)
        await chain.enqueue()
        assert await states(manager, a, b, c) == [S.ENQUEUED, S.BLOCKED, S.BLOCKED]
        blocked = await manager.get_work_info(b.id)
        assert blocked is not None
        assert blocked.next_schedule_time is None
        explained = await manager.explain(b.id)
        assert explained is not None
        assert "prerequisites" in explained.reasons[0]
        await clock.advance(9)
        assert steps.order == []
        await clock.advance(1)
        assert await states(manager, a, b, c) == [S.SUCCEEDED] * 3
        infos = await chain.get_work_infos()
    assert steps.order == [a.id, b.id, c.id]
    # semantics 20: own input, then the direct prerequisite's output (which wins).
    assert steps.inputs[b.id] == {"key": "from a", "mine": True, "x": 1}
    assert steps.inputs[c.id] == {"y": 2}  # only direct prerequisites feed a work
    assert [i.id for i in infos] == [a.id, b.id, c.id]
    assert chain.ids == (a.id, b.id, c.id)


async def test_diamond_merges_direct_prerequisites_in_step_order(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a = steps.work({"seed": 1})
    b = steps.work({"shared": "b", "b": [1, 2]})
    c = steps.work({"shared": "c", "c": 3})
    d = steps.work(input={"shared": "own", "d": True})
    arr_b = steps.work({"n": 1, "l": [1, 2]})
    arr_c = steps.work({"n": 2, "l": 3})
    arr_d = steps.work(input={"n": 0}, input_merger=wm.ArrayCreatingInputMerger)
    async with manager:
        base = manager.begin_with(a)
        await base.then(b, c).then(d).enqueue()
        await base.then(arr_b, arr_c).then(arr_d).enqueue()
        await clock.advance(0)
        assert await states(manager, a, b, c, d, arr_d) == [S.SUCCEEDED] * 5
    assert steps.inputs[b.id] == {"seed": 1}
    assert steps.inputs[c.id] == {"seed": 1}
    # Overwriting: later keys win, c after b, both over d's own input.
    assert steps.inputs[d.id] == {"shared": "c", "d": True, "b": [1, 2], "c": 3}
    # Array merger: values become lists; lists concatenate; scalars join.
    assert steps.inputs[arr_d.id] == {"n": [0, 1, 2], "l": [1, 2, 3]}
    assert steps.order.index(d.id) > max(steps.order.index(b.id), steps.order.index(c.id))


async def test_fan_out_of_1000_each_gets_the_parent_output(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=50)
    steps = Steps(manager)
    root = steps.work({"seed": 7})
    children = [steps.work(input={"i": i}) for i in range(1000)]
    async with manager:
        await manager.begin_with(root).then(*children).enqueue()
        blocked = await manager.get_work_infos(wm.WorkQuery(states={S.BLOCKED}))
        assert len(blocked) == 1000
        await clock.advance(0)
        done = await manager.get_work_infos(wm.WorkQuery(states={S.SUCCEEDED}))
    assert len(done) == 1001
    assert steps.order[0] == root.id
    assert all(steps.inputs[c.id] == {"i": i, "seed": 7} for i, c in enumerate(children))


async def test_fan_in_with_combine_gives_arrays_of_all_outputs(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    x1 = steps.work({"v": 1, "tags": ["a"]})
    x2 = steps.work({"v": 2, "tags": ["b", "c"]})
    x3 = steps.work({"v": 3})
    y = steps.work({"v": 4})
    z = steps.work(input={"own": "z"})
    async with manager:
        first = manager.begin_with(x1)
        second = manager.begin_with(x2, x3)
        third = manager.begin_with(steps.work()).then(y)
        combined = wm.WorkContinuation.combine(first, second, third).then(z)
        await combined.enqueue()
        await clock.advance(0)
        infos = await combined.get_work_infos()
    assert all(i.state is S.SUCCEEDED for i in infos)
    assert len(infos) == 7  # x1, x2, x3, the first of third, y, the combine step, z
    pass_through = [i for i in infos if i.worker == "wm_async.combine"]
    assert len(pass_through) == 1
    merged = {"v": [1, 2, 3, 4], "tags": ["a", "b", "c"]}
    assert dict(pass_through[0].output) == merged
    assert steps.inputs[z.id] == {"own": "z", **merged}


async def test_fan_in_of_1000_with_the_array_merger(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=50)
    steps = Steps(manager)
    parts = [steps.work({"part": i}) for i in range(1000)]
    total = steps.work(input_merger=wm.ArrayCreatingInputMerger)
    async with manager:
        await manager.begin_with(*parts).then(total).enqueue()
        await clock.advance(0)
        assert await states(manager, total) == [S.SUCCEEDED]
    assert steps.inputs[total.id] == {"part": list(range(1000))}


async def test_a_failure_fails_exactly_the_transitive_dependents(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b = steps.work({"a": 1}), steps.work(fail=True)
    c, d, e = steps.work(), steps.work(), steps.work()
    sibling, after_sibling = steps.work(), steps.work()
    other, after_other = steps.work(), steps.work()
    async with manager:
        base = manager.begin_with(a)
        await base.then(b).then(c, d).then(e).enqueue()
        await base.then(sibling).then(after_sibling).enqueue()
        await manager.begin_with(other).then(after_other).enqueue()
        await clock.advance(0)
        failed = await manager.get_work_infos(wm.WorkQuery(states={S.FAILED}))
        succeeded = await manager.get_work_infos(wm.WorkQuery(states={S.SUCCEEDED}))
        info_e = await manager.get_work_info(e.id)
    assert {i.id for i in failed} == {b.id, c.id, d.id, e.id}
    assert {i.id for i in succeeded} == {
        a.id,
        sibling.id,
        after_sibling.id,
        other.id,
        after_other.id,
    }
    assert not {c.id, d.id, e.id} & set(steps.order)  # dependents never ran
    assert info_e is not None
    assert info_e.error is not None
    assert info_e.error.type == "wm_async.PrerequisiteFailed"


async def test_cancel_cancels_transitive_dependents_and_stops_the_running_one(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b, c = steps.work(), steps.work(), steps.work()
    steps.gates[a.id] = anyio.Event()
    x, y, z = steps.work(), steps.work(), steps.work()
    async with manager:
        await manager.begin_with(a).then(b).then(c).enqueue()
        await manager.begin_with(x).then(y).then(z).enqueue()
        await clock.settle()
        assert await states(manager, a, x, y, z) == [
            S.RUNNING,
            S.SUCCEEDED,
            S.SUCCEEDED,
            S.SUCCEEDED,
        ]
        assert await manager.cancel_work_by_id(a.id)
        await clock.settle()
        assert await states(manager, a, b, c) == [S.CANCELLED] * 3
        info = await manager.get_work_info(a.id)
        assert info is not None
        assert info.stop_reason is wm.StopReason.CANCELLED_BY_APP
        assert not await manager.cancel_work_by_id(x.id)  # finished: a no-op


async def test_cancelling_a_blocked_work_spares_its_prerequisites(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b, c = steps.work(initial_delay=5), steps.work(), steps.work()
    async with manager:
        await manager.begin_with(a).then(b).then(c).enqueue()
        assert await manager.cancel_work_by_id(b.id)
        assert await states(manager, a, b, c) == [S.ENQUEUED, S.CANCELLED, S.CANCELLED]
        await clock.advance(5)
        assert await states(manager, a, b, c) == [S.SUCCEEDED, S.CANCELLED, S.CANCELLED]
    assert steps.order == [a.id]


async def test_a_failure_leaves_already_cancelled_dependents_cancelled(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b, c = steps.work(fail=True, initial_delay=5), steps.work(), steps.work()
    async with manager:
        await manager.begin_with(a).then(b).then(c).enqueue()
        await manager.cancel_work_by_id(c.id)
        await clock.advance(5)
        assert await states(manager, a, b, c) == [S.FAILED, S.FAILED, S.CANCELLED]


async def test_enqueue_after_prerequisites_finished_follows_rule_18(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    ok, bad, gone = steps.work({"ok": 1}), steps.work(fail=True), steps.work(initial_delay=60)
    async with manager:
        ok_chain, bad_chain = manager.begin_with(ok), manager.begin_with(bad)
        gone_chain = manager.begin_with(gone)
        for chain in (ok_chain, bad_chain, gone_chain):
            await chain.enqueue()
        await clock.advance(0)
        await manager.cancel_work_by_id(gone.id)
        after_ok, after_bad, after_gone = steps.work(initial_delay=1), steps.work(), steps.work()
        await ok_chain.then(after_ok).enqueue()
        await bad_chain.then(after_bad).enqueue()
        await gone_chain.then(after_gone).enqueue()
        assert await states(manager, after_ok, after_bad, after_gone) == [
            S.ENQUEUED,
            S.FAILED,
            S.CANCELLED,
        ]
        both = steps.work()  # a failed and a cancelled prerequisite: FAILED wins
        await wm.WorkContinuation.combine(bad_chain, gone_chain).then(both).enqueue()
        assert await states(manager, both) == [S.FAILED]
        await clock.advance(1)
    assert steps.inputs[after_ok.id] == {"ok": 1}


async def test_the_initial_delay_of_an_unblocked_work_counts_from_its_unblocking(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b = steps.work(initial_delay=100), steps.work(initial_delay=30)
    async with manager:
        start = clock.now()
        await manager.begin_with(a).then(b).enqueue()
        await clock.advance(100)
        info = await manager.get_work_info(b.id)
        assert info is not None
        assert info.state is S.ENQUEUED
        assert info.next_schedule_time == datetime.fromtimestamp(start + 130, UTC)
        await clock.advance(29)
        assert await states(manager, b) == [S.ENQUEUED]
        await clock.advance(1)
        assert await states(manager, b) == [S.SUCCEEDED]


async def test_an_array_merge_type_mismatch_fails_the_work_and_its_dependents(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    p, q = steps.work({"k": 1}), steps.work({"k": "text"})
    child = steps.work(input_merger=wm.ArrayCreatingInputMerger)
    grandchild = steps.work()
    async with manager:
        await manager.begin_with(p, q).then(child).then(grandchild).enqueue()
        await clock.advance(0)
        assert await states(manager, child, grandchild) == [S.FAILED, S.FAILED]
        info = await manager.get_work_info(child.id)
    assert info is not None
    assert info.error is not None
    assert info.error.type == "wm_async.InputMergeFailed"
    assert "cannot mix" in info.error.message
    assert child.id not in steps.order


async def test_enqueueing_twice_is_a_no_op_and_cycles_cannot_be_built(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b = steps.work(), steps.work()
    async with manager:
        chain = manager.begin_with(a).then(b)
        await chain.enqueue()
        await chain.enqueue()
        await clock.advance(0)
        await chain.enqueue()
        assert len(await manager.get_work_infos(wm.WorkQuery(states=set(S)))) == 2
        with pytest.raises(wm.InvalidRequestError, match="cycle"):
            chain.then(a)
        with pytest.raises(wm.InvalidRequestError, match="twice"):
            chain.then(a, a)
        with pytest.raises(wm.InvalidRequestError, match="at least one"):
            chain.then()
        with pytest.raises(wm.InvalidRequestError, match="at least one"):
            manager.begin_with()
        periodic = wm.PeriodicWorkRequest("step", repeat_interval=timedelta(hours=1))
        with pytest.raises(wm.InvalidRequestError, match="periodic work cannot be chained"):
            manager.begin_with(periodic)  # type: ignore[arg-type]
        with pytest.raises(wm.InvalidRequestError, match="periodic work cannot be chained"):
            chain.then(periodic)  # type: ignore[arg-type]
        with pytest.raises(wm.InvalidRequestError, match="combine needs"):
            wm.WorkContinuation.combine()
        other = make_manager()
        with pytest.raises(wm.InvalidRequestError, match="same WorkManager"):
            wm.WorkContinuation.combine(chain, other.begin_with(steps.work()))
        with pytest.raises(wm.UnknownWorkerError):
            await manager.begin_with(steps.work()).then(wm.OneTimeWorkRequest("nope")).enqueue()
        assert len(await manager.get_work_infos(wm.WorkQuery(states=set(S)))) == 2


async def test_a_missing_prerequisite_is_refused_at_enqueue(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a = steps.work()
    async with manager:
        first = manager.begin_with(a)
        await first.enqueue()
        await clock.advance(0)
        await manager.prune_work()
        late = steps.work()
        with pytest.raises(wm.InvalidRequestError, match="prerequisite"):
            await first.then(late).enqueue()
        assert await manager.get_work_info(late.id) is None


async def test_prune_keeps_finished_prerequisites_of_unfinished_works(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    quick, slow = steps.work({"quick": 1}), steps.work({"slow": 2}, initial_delay=60)
    joined, lone = steps.work(), steps.work()
    async with manager:
        await manager.begin_with(quick, slow).then(joined).enqueue()
        await manager.enqueue(lone)
        await clock.advance(0)
        assert await states(manager, quick, slow, joined) == [S.SUCCEEDED, S.ENQUEUED, S.BLOCKED]
        assert await manager.prune_work() == 1  # lone only: joined still needs quick
        assert await states(manager, quick, lone) == [S.SUCCEEDED, None]
        await clock.advance(60)
        assert await states(manager, joined) == [S.SUCCEEDED]
        assert await manager.prune_work() == 3
    assert steps.inputs[joined.id] == {"quick": 1, "slow": 2}


async def test_update_work_on_a_blocked_work_applies_immediately(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b = steps.work({"from_a": 1}, initial_delay=5), steps.work(input={"v": 1})
    async with manager:
        await manager.begin_with(a).then(b).enqueue()
        changed = wm.OneTimeWorkRequest("step", input={"v": 2}, id=b.id)
        assert await manager.update_work(changed) is wm.UpdateResult.APPLIED_IMMEDIATELY
        assert await states(manager, b) == [S.BLOCKED]
        await clock.advance(5)
        assert await states(manager, b) == [S.SUCCEEDED]
    assert steps.inputs[b.id] == {"v": 2, "from_a": 1}


# -- unique chains and the APPEND policies (semantics 25) ------------------------------------


async def test_50_concurrent_appends_form_one_chain_of_50(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=50)
    running = 0
    most = 0

    @manager.worker("link")
    async def link(ctx: wm.WorkContext) -> wm.Result:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.lowlevel.checkpoint()
        running -= 1
        seen = ctx.input.get("seen", [])
        assert isinstance(seen, list)
        return wm.Result.success({"seen": [*seen, ctx.input["i"]]})

    requests = [wm.OneTimeWorkRequest("link", input={"i": i}) for i in range(50)]
    async with manager:
        async with anyio.create_task_group() as tg:
            for request in requests:
                tg.start_soon(manager.enqueue_unique_work, "log", "APPEND", request)
        await clock.advance(0)
        infos = await manager.get_work_infos(wm.WorkQuery(unique_names={"log"}))
    assert len(infos) == 50
    assert all(i.state is S.SUCCEEDED for i in infos)
    seen = [i.output["seen"] for i in infos]
    assert all(isinstance(s, list) for s in seen)
    lists: list[list[object]] = [list(s) for s in seen if isinstance(s, list)]
    assert sorted(len(s) for s in lists) == list(range(1, 51))  # each saw all before it
    longest = max(lists, key=lambda s: len(s))
    assert sorted(longest, key=str) == sorted(range(50), key=str)
    assert most == 1  # one chain: never two at once


async def test_append_waits_for_the_leaves_and_takes_their_outputs(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b = steps.work({"a": 1}, initial_delay=10), steps.work({"b": 2})
    c = steps.work()
    async with manager:
        await manager.begin_unique_work("job", "APPEND", a).then(b).enqueue()
        assert await manager.enqueue_unique_work("job", wm.ExistingWorkPolicy.APPEND, c)
        assert await states(manager, a, b, c) == [S.ENQUEUED, S.BLOCKED, S.BLOCKED]
        await clock.advance(10)
        assert await states(manager, a, b, c) == [S.SUCCEEDED] * 3
        d = steps.work(initial_delay=60)  # every leaf succeeded: ENQUEUED at once
        await manager.enqueue_unique_work("job", "APPEND", d)
        info = await manager.get_work_info(d.id)
        assert info is not None
        assert info.state is S.ENQUEUED
        assert info.unique_name == "job"
    assert steps.inputs[c.id] == {"b": 2}  # c depends on the leaf b only


async def test_append_on_a_failed_leaf_fails_and_append_or_replace_starts_afresh(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    bad = steps.work(fail=True)
    async with manager:
        await manager.enqueue_unique_work("job", "APPEND", bad)
        await clock.advance(0)
        appended = steps.work()
        await manager.enqueue_unique_work("job", "APPEND", appended)
        assert await states(manager, appended) == [S.FAILED]
        fresh = steps.work(initial_delay=1)
        await manager.enqueue_unique_work("job", "APPEND_OR_REPLACE", fresh)
        assert await states(manager, bad, appended, fresh) == [None, None, S.ENQUEUED]
        await clock.advance(1)
        after = steps.work(initial_delay=1)  # the fresh leaf succeeded: this appends
        await manager.enqueue_unique_work("job", "APPEND_OR_REPLACE", after)
        assert await states(manager, fresh, after) == [S.SUCCEEDED, S.ENQUEUED]


async def test_append_on_a_cancelled_leaf_cancels(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    first = steps.work(initial_delay=60)
    async with manager:
        await manager.enqueue_unique_work("job", "KEEP", first)
        await manager.cancel_unique_work("job")
        second = steps.work()
        await manager.enqueue_unique_work("job", "APPEND", second)
        assert await states(manager, first, second) == [S.CANCELLED, S.CANCELLED]


async def test_keep_on_a_unique_chain_keeps_all_or_nothing(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a = steps.work(initial_delay=60)
    b, c = steps.work(), steps.work()
    async with manager:
        await manager.enqueue_unique_work("job", "KEEP", a)
        await manager.begin_unique_work("job", "KEEP", b).then(c).enqueue()
        assert await states(manager, a, b, c) == [S.ENQUEUED, None, None]
        d, e = steps.work(initial_delay=60), steps.work()
        await manager.begin_unique_work("job", "REPLACE", d).then(e).enqueue()
        assert await states(manager, a, d, e) == [None, S.ENQUEUED, S.BLOCKED]
        infos = await manager.get_work_infos(wm.WorkQuery(unique_names={"job"}))
        assert {i.id for i in infos} == {d.id, e.id}
        x, y = steps.work(), steps.work()
        joined = wm.WorkContinuation.combine(
            manager.begin_unique_work("one", "KEEP", x),
            manager.begin_unique_work("two", "KEEP", y),
        )
        with pytest.raises(wm.InvalidRequestError, match="several unique chains"):
            await joined.enqueue()


async def test_replace_cancels_the_old_chains_dependents(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    steps = Steps(manager)
    a, b = steps.work(), steps.work()
    steps.gates[a.id] = anyio.Event()
    outside = steps.work()  # depends on the unique chain, but is not under its name
    async with manager:
        chain = manager.begin_unique_work("job", "REPLACE", a).then(b)
        await chain.enqueue()
        await wm.WorkContinuation.combine(chain).then(outside).enqueue()
        await clock.settle()
        await manager.enqueue_unique_work("job", "REPLACE", steps.work())
        await clock.settle()
        assert await states(manager, a, b) == [None, None]  # deleted from the name
        pass_through = await manager.get_work_infos(wm.WorkQuery(states={S.CANCELLED}))
        assert outside.id in {i.id for i in pass_through}


async def test_a_blocked_chain_survives_a_restart(tmp_path: Path, clock: VirtualClock) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    a = wm.OneTimeWorkRequest("step", initial_delay=60)
    b = wm.OneTimeWorkRequest("step", input={"own": 1})
    first = wm.WorkManager(url, clock=clock, shutdown_grace=0)
    Steps(first).outputs[a.id] = {"from_a": True}
    async with first:
        await first.begin_with(a).then(b).enqueue()
    second = wm.WorkManager(url, clock=clock, shutdown_grace=0)
    steps = Steps(second)
    steps.outputs[a.id] = {"from_a": True}
    async with second:
        assert await states(second, a, b) == [S.ENQUEUED, S.BLOCKED]
        await clock.advance(60)
        assert await states(second, a, b) == [S.SUCCEEDED, S.SUCCEEDED]
    assert steps.inputs[b.id] == {"own": 1, "from_a": True}


def test_the_chain_example_runs() -> None:
    example = Path(__file__).parent.parent / "examples" / "chain.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "report SUCCEEDED: input {'words': [210, 220]} -> {'total': 430}" in done.stdout


# -- building long chains: linear, forks kept apart


def _operations(build: Callable[[], object]) -> int:
    """How many function calls (Python and builtin) ``build()`` makes: a measure of its
    work that, unlike time, a loaded machine does not change."""
    calls = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        build()
    finally:
        sys.setprofile(None)
    return calls


def test_building_a_chain_costs_linear_work() -> None:
    manager = wm.WorkManager("memory://")

    def builder(n: int) -> Callable[[], object]:
        requests = [wm.OneTimeWorkRequest("step") for _ in range(2 * n)]

        def build() -> object:
            chain = manager.begin_with(requests[0])
            middle = chain
            for i, request in enumerate(requests[1:n]):
                chain = chain.then(request)
                if i == n // 2:
                    middle = chain
            fork = middle  # a fork from the middle, as long again as the rest
            for request in requests[n:]:
                fork = fork.then(request)
            return wm.WorkContinuation.combine(chain, fork).ids

        return build

    small, large = _operations(builder(400)), _operations(builder(800))

    # Twice the steps, twice the work (checking each step against all before it made it
    # four times: 46 s for a chain of 10,000).
    assert large < 2.5 * small, (small, large)  # measured: 2.0


async def test_a_chain_of_10000_steps_and_a_fork_of_it_enqueue_and_run(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 10_000
    bound = 20 * (n + n // 2)  # steps visited in all, generously (before: n * n / 2)
    visited = 0
    graph = wm.WorkContinuation._graph

    def counted(self: wm.WorkContinuation) -> list[wm.WorkContinuation]:
        nonlocal visited
        steps = graph(self)
        visited += len(steps)
        assert visited <= bound, f"visited {visited} steps building a chain of {n}"
        return steps

    monkeypatch.setattr(wm.WorkContinuation, "_graph", counted)
    manager = wm.WorkManager("memory://", clock=clock, shutdown_grace=0)
    steps = Steps(manager)
    main = [steps.work() for _ in range(n)]
    forked = [steps.work() for _ in range(n // 2)]
    async with manager:
        chain = middle = manager.begin_with(main[0])
        for i, request in enumerate(main[1:], start=1):
            chain = chain.then(request)
            if i == n // 2 - 1:
                middle = chain
        fork = middle
        for request in forked:
            fork = fork.then(request)
        assert chain.ids == tuple(r.id for r in main)
        assert fork.ids == tuple(r.id for r in main[: n // 2] + forked)

        with anyio.fail_after(120):
            await chain.enqueue()
            await fork.enqueue()  # only its own steps: the prefix is the main chain's
            stored = await manager.get_work_infos(wm.WorkQuery(states=set(S)))
            assert len(stored) == n + n // 2
            assert await states(manager, main[0], main[1], forked[0]) == [
                S.ENQUEUED,
                *[S.BLOCKED] * 2,
            ]
            await clock.advance(0)
            assert await states(manager, main[-1], forked[-1]) == [S.SUCCEEDED] * 2

    assert steps.order.index(forked[0].id) > steps.order.index(main[n // 2 - 1].id)
    in_main = {r.id for r in main}
    assert [i for i in steps.order if i in in_main] == [r.id for r in main]
    assert visited <= bound


def test_forks_of_one_prefix_never_see_each_others_steps() -> None:
    manager = wm.WorkManager("memory://")
    a, b, c, x, y = (wm.OneTimeWorkRequest("step") for _ in range(5))
    prefix = manager.begin_with(a).then(b)

    left = prefix.then(x)  # grows the prefix's steps in place
    right = prefix.then(y)  # the prefix's place is taken: a fork of its own

    assert (prefix.ids, left.ids, right.ids) == (
        (a.id, b.id),
        (a.id, b.id, x.id),
        (a.id, b.id, y.id),
    )
    assert left.then(y).ids == (a.id, b.id, x.id, y.id)  # each may take the other's
    assert right.then(x).ids == (a.id, b.id, y.id, x.id)
    assert prefix.then(x, y).ids == (a.id, b.id, x.id, y.id)
    for chain, again in ((left, x), (left, a), (right, y), (right, b), (prefix, b)):
        with pytest.raises(wm.InvalidRequestError, match="already in the chain"):
            chain.then(c, again)
    with pytest.raises(wm.InvalidRequestError, match="twice in the step"):
        left.then(c, c)
    assert left.then(c).ids == (a.id, b.id, x.id, c.id)  # refused steps left no trace
    assert right.then(c).ids == (a.id, b.id, y.id, c.id)

    both = wm.WorkContinuation.combine(left, right)
    assert both.ids[:-1] == (a.id, b.id, x.id, y.id)  # the shared prefix once
    for again in (a, x, y):
        with pytest.raises(wm.InvalidRequestError, match="already in the chain"):
            both.then(again)
    assert both.then(c).ids[-1] == c.id
