"""Hooks into a manager (semantics 52): every state transition as a frozen WorkEvent to
listeners, middleware around every worker call, propagators' headers stored with works."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]
S = wm.WorkState


def _transitions(events: list[wm.WorkEvent]) -> list[tuple[S | None, S, int]]:
    return [(e.from_state, e.to_state, e.attempt) for e in events]


async def test_a_listener_sees_every_transition_of_a_run_with_a_retry(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    events: list[wm.WorkEvent] = []
    manager.add_listener(events.append)

    @manager.worker("steps")
    async def steps(ctx: wm.WorkContext) -> wm.Result | None:
        await ctx.set_progress({"step": 1})  # progress is not a transition
        await clock.advance(0)
        return wm.Result.retry() if ctx.run_attempt_count == 0 else None

    request = wm.OneTimeWorkRequest("steps", backoff=wm.Backoff(delay=10), tags={"t"})
    async with manager:
        await manager.enqueue(request)
        await clock.advance(0)
        await clock.advance(10)

    assert _transitions(events) == [
        (None, S.ENQUEUED, 0),
        (S.ENQUEUED, S.RUNNING, 1),
        (S.RUNNING, S.ENQUEUED, 1),
        (S.ENQUEUED, S.RUNNING, 2),
        (S.RUNNING, S.SUCCEEDED, 2),
    ]
    assert {e.work_id for e in events} == {request.id}
    assert {e.worker for e in events} == {"steps"}
    assert all(e.tags == frozenset({"t", "steps"}) for e in events)
    assert [e.is_retry for e in events] == [False, False, True, False, False]
    assert not any(e.external for e in events)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    assert events[0].at == start
    assert events[3].at == start + timedelta(seconds=10)
    # The second run started when due: no lateness; the runs took no virtual time.
    assert events[3].lateness == timedelta(0)
    assert events[2].duration == timedelta(0)
    assert events[4].duration == timedelta(0)
    with pytest.raises(AttributeError):
        events[0].attempt = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        events[0].anything = 5  # type: ignore[attr-defined]


async def test_events_carry_duration_lateness_error_and_timeouts(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=1)
    events: list[wm.WorkEvent] = []
    manager.add_listener(events.append)

    release = anyio.Event()

    @manager.worker("slow")
    async def slow(ctx: wm.WorkContext) -> None:
        await release.wait()
        raise ValueError("no luck")

    @manager.worker("stuck")
    async def stuck(ctx: wm.WorkContext) -> None:
        await anyio.sleep_forever()

    first = wm.OneTimeWorkRequest("slow")
    second = wm.OneTimeWorkRequest("stuck", timeout=timedelta(seconds=5), max_attempts=1)
    async with manager:
        await manager.enqueue(first, second)
        await clock.advance(3)  # the second waits for the only slot
        release.set()
        await manager.wait(first.id)
        await clock.advance(5)
        await manager.wait(second.id)

    by_id = {i: [e for e in events if e.work_id == i] for i in (first.id, second.id)}
    failed = by_id[first.id][-1]
    assert (failed.from_state, failed.to_state) == (S.RUNNING, S.FAILED)
    assert failed.duration == timedelta(seconds=3)
    assert failed.error is not None
    assert failed.error.type == "ValueError"
    started = next(e for e in by_id[second.id] if e.to_state is S.RUNNING)
    assert started.lateness == timedelta(seconds=3)
    timed_out = by_id[second.id][-1]
    assert timed_out.to_state is S.FAILED
    assert timed_out.stop_reason is wm.StopReason.TIMEOUT
    assert timed_out.is_timeout
    assert timed_out.duration == timedelta(seconds=5)


async def test_cancel_and_chain_propagation_are_events(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    events: list[wm.WorkEvent] = []
    manager.add_listener(events.append)

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        return None

    a, b, c = (wm.OneTimeWorkRequest("w", initial_delay=timedelta(hours=1)) for _ in range(3))
    async with manager:
        await manager.begin_with(a).then(b).then(c).enqueue()
        await manager.cancel_work_by_id(a.id)

    assert [(e.work_id, e.from_state, e.to_state) for e in events[:3]] == [
        (a.id, None, S.ENQUEUED),
        (b.id, None, S.BLOCKED),
        (c.id, None, S.BLOCKED),
    ]
    assert len(events) == 6
    cancelled = {(e.work_id, e.from_state) for e in events if e.to_state is S.CANCELLED}
    assert cancelled == {(a.id, S.ENQUEUED), (b.id, S.BLOCKED), (c.id, S.BLOCKED)}


async def test_a_failing_listener_is_logged_and_the_others_still_hear(
    make_manager: MakeManager, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager()
    events: list[wm.WorkEvent] = []

    def broken(event: wm.WorkEvent) -> None:
        raise RuntimeError("listener bug")

    manager.add_listener(broken)
    manager.add_listener(events.append)

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        return None

    request = wm.OneTimeWorkRequest("w")
    async with manager:
        await manager.enqueue(request)
        info = await manager.wait(request.id)
    assert info.state is S.SUCCEEDED
    assert [e.to_state for e in events] == [S.ENQUEUED, S.RUNNING, S.SUCCEEDED]
    assert any("listener bug" in (r.exc_text or str(r.exc_info)) for r in caplog.records)

    manager.remove_listener(events.append)
    manager.remove_listener(events.append)  # not there: nothing happens


async def test_middleware_wraps_every_run_outermost_first(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    calls: list[str] = []
    current: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="")

    async def outer(ctx: wm.WorkContext, call_next: wm.CallNext) -> wm.Result | None:
        calls.append(f"outer in {ctx.worker} {ctx.run_attempt_count}")
        token = current.set(str(ctx.id))
        try:
            result = await call_next()
        finally:
            current.reset(token)
        calls.append(f"outer out {result!r}")
        return result

    async def inner(ctx: wm.WorkContext, call_next: wm.CallNext) -> wm.Result | None:
        calls.append("inner in")
        try:
            return await call_next()
        except ValueError:
            calls.append("inner saw ValueError")
            raise

    manager.add_middleware(outer)
    manager.add_middleware(inner)

    @manager.worker("async_ok")
    async def async_ok(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"seen": current.get()})

    @manager.worker("sync_bad")
    def sync_bad(ctx: wm.WorkContext) -> None:
        raise ValueError("no luck")

    ok, bad = wm.OneTimeWorkRequest("async_ok"), wm.OneTimeWorkRequest("sync_bad")
    async with manager:
        await manager.enqueue(ok)
        await clock.advance(0)
        assert (await manager.get_work_info(ok.id)).output == {"seen": str(ok.id)}  # type: ignore[union-attr]
        await manager.enqueue(bad)
        info = await manager.wait(bad.id)
    assert info.state is S.FAILED
    assert info.error is not None
    assert info.error.type == "ValueError"
    assert calls == [
        "outer in async_ok 0",
        "inner in",
        f"outer out {wm.Result.success({'seen': str(ok.id)})!r}",
        "outer in sync_bad 0",
        "inner in",
        "inner saw ValueError",
    ]


async def test_middleware_may_replace_the_result_or_fail_the_run(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    ran: list[str] = []

    async def gate(ctx: wm.WorkContext, call_next: wm.CallNext) -> wm.Result | None:
        if "skip" in ctx.tags:
            return wm.Result.failure({"skipped": True})
        if "explode" in ctx.tags:
            raise KeyError("middleware bug")
        return await call_next()

    manager.add_middleware(gate)

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        ran.append(str(ctx.id))

    skip = wm.OneTimeWorkRequest("w", tags={"skip"})
    explode = wm.OneTimeWorkRequest("w", tags={"explode"})
    plain = wm.OneTimeWorkRequest("w")
    async with manager:
        await manager.enqueue(skip, explode, plain)
        await clock.advance(0)
        infos = {i: await manager.get_work_info(i) for i in (skip.id, explode.id, plain.id)}
    assert ran == [str(plain.id)]
    skipped, exploded, done = (infos[i] for i in (skip.id, explode.id, plain.id))
    assert skipped is not None
    assert skipped.state is S.FAILED
    assert skipped.output == {"skipped": True}
    assert exploded is not None
    assert exploded.error is not None
    assert exploded.error.type == "KeyError"
    assert done is not None
    assert done.state is S.SUCCEEDED


def test_bad_hooks_raise_at_the_call() -> None:
    manager = wm.WorkManager(store="memory://")

    def sync_mw(ctx: wm.WorkContext, call_next: wm.CallNext) -> None: ...

    async def async_listener(event: wm.WorkEvent) -> None: ...

    with pytest.raises(wm.InvalidRequestError):
        manager.add_middleware(sync_mw)  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError):
        manager.add_listener(async_listener)  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError):
        manager.add_listener("nope")  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError):
        manager.add_propagator(42)  # type: ignore[arg-type]


async def test_propagators_store_headers_that_every_run_sees(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    current: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="")
    seen: dict[str, dict[str, object]] = {}

    def propagate(carrier: dict[str, str]) -> None:
        if current.get():
            carrier["request-id"] = current.get()

    def broken(carrier: dict[str, str]) -> None:
        raise RuntimeError("propagator bug")

    manager.add_propagator(propagate)
    manager.add_propagator(broken)  # logged; the others' headers are still stored

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        seen[str(ctx.id)] = dict(ctx.headers)

    plain = wm.OneTimeWorkRequest("w")
    chained = wm.OneTimeWorkRequest("w")
    unique = wm.OneTimeWorkRequest("w", initial_delay=timedelta(seconds=5))
    async with manager:
        token = current.set("r-1")
        await manager.enqueue(plain)
        await manager.begin_with(chained).enqueue()
        current.set("r-2")
        await manager.enqueue_unique_work("u", wm.ExistingWorkPolicy.KEEP, unique)
        current.reset(token)
        # update_work keeps the headers of the enqueue.
        await manager.update_work(
            wm.OneTimeWorkRequest("w", id=unique.id, initial_delay=timedelta(seconds=1))
        )
        untraced = wm.OneTimeWorkRequest("w")
        await manager.enqueue(untraced)
        await clock.advance(1)
        await manager.wait(unique.id)

    assert seen == {
        str(plain.id): {"request-id": "r-1"},
        str(chained.id): {"request-id": "r-1"},
        str(unique.id): {"request-id": "r-2"},
        str(untraced.id): {},
    }


async def test_events_of_works_forgotten_past_the_bound_have_no_from_state(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wm_async._runtime import observers

    monkeypatch.setattr(observers, "SEEN_MAX", 2)
    manager = make_manager(known_workers={"w"}, run_work=False)
    events: list[wm.WorkEvent] = []
    manager.add_listener(events.append)
    later = [wm.OneTimeWorkRequest("w", initial_delay=timedelta(hours=1)) for _ in range(3)]
    async with manager:
        for request in later:
            await manager.enqueue(request)
        for request in later:
            await manager.cancel_work_by_id(request.id)
    cancelled = [e.from_state for e in events if e.to_state is S.CANCELLED]
    assert cancelled == [None, S.ENQUEUED, S.ENQUEUED]  # the first was forgotten


async def test_another_process_s_transitions_arrive_flagged_external(
    store_url: str, clock: VirtualClock
) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store is one manager's")
    producer = wm.WorkManager(store_url, run_work=False, clock=clock, shutdown_grace=0)
    worker = wm.WorkManager(store_url, clock=clock, shutdown_grace=0)
    heard: list[wm.WorkEvent] = []
    producer.add_listener(heard.append)

    @worker.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        return None

    request = wm.OneTimeWorkRequest("w", initial_delay=timedelta(seconds=10))
    async with producer, worker:
        await producer.enqueue(request)
        # Watched, so the producer reads back what the worker writes.
        async with producer.watch(wm.WorkQuery(ids=[request.id])) as infos:
            await clock.advance(10)
            async for info in infos:
                if info.state is S.SUCCEEDED:
                    break
    assert (heard[0].from_state, heard[0].to_state, heard[0].external) == (
        None,
        S.ENQUEUED,
        False,
    )
    assert heard[-1].to_state is S.SUCCEEDED
    assert heard[-1].external
    assert all(e.external for e in heard[1:])
