"""Workers that misbehave: never return, swallow cancellation, block the loop, return the
wrong type, raise BaseException, or are kept alive by the manager after they finish.
In every case the manager keeps its promises and keeps running other work."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import wm_async as wm
from wm_async._runtime import scheduler as _scheduler
from wm_async._runtime.executor import WorkerFn
from wm_async._runtime.watchdog import (
    THREAD_NAME,
    LoopWatchdog,
)
from wm_async.stores.memory import MemoryStore
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


async def ok(ctx: wm.WorkContext) -> None:
    return None


# -- never returns ---------------------------------------------------------------------------


async def test_worker_that_never_returns_times_out_and_is_reenqueued(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()

    @manager.worker("hang")
    async def hang(ctx: wm.WorkContext) -> None:
        await anyio.sleep_forever()

    manager.register_worker("ok", ok)
    async with manager:
        req = wm.OneTimeWorkRequest("hang", timeout=30, max_attempts=2)
        await manager.enqueue(req)
        await clock.advance(0)
        info = await manager.get_work_info(req.id)
        assert info is not None
        assert info.state is wm.WorkState.RUNNING
        await clock.advance(31)
        # semantics 12: back to ENQUEUED, stop reason TIMEOUT, the attempt counts, no
        # backoff. It was claimed again at once, and is running its second attempt.
        info = await manager.get_work_info(req.id)
        assert info is not None
        assert info.state is wm.WorkState.RUNNING
        assert info.run_attempt_count == 2
        await clock.advance(31)
        info = await manager.get_work_info(req.id)
        assert info is not None
        assert info.state is wm.WorkState.FAILED  # max_attempts reached (semantics 11)
        assert info.stop_reason is wm.StopReason.TIMEOUT
        other = wm.OneTimeWorkRequest("ok")
        await manager.enqueue(other)
        await clock.advance(0)
        done = await manager.get_work_info(other.id)
        assert done is not None
        assert done.state is wm.WorkState.SUCCEEDED


async def test_timed_out_work_runs_again_at_once_without_backoff(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    starts: list[tuple[int, float]] = []

    @manager.worker("hang_once")
    async def hang_once(ctx: wm.WorkContext) -> None:
        starts.append((ctx.run_attempt_count, clock.now()))
        if ctx.run_attempt_count == 0:
            await anyio.sleep_forever()

    async with manager:
        req = wm.OneTimeWorkRequest("hang_once", timeout=30)  # default backoff: 30 s
        await manager.enqueue(req)
        await clock.advance(0)
        await clock.advance(30)
        info = await manager.get_work_info(req.id)
        assert info is not None
        assert info.state is wm.WorkState.SUCCEEDED
        assert info.run_attempt_count == 2
        # The attempt counted, and the second run started at the timeout: no backoff.
        assert [a for a, _ in starts] == [0, 1]
        assert starts[1][1] - starts[0][1] == 30


# -- swallows cancellation -------------------------------------------------------------------


@pytest.fixture
def short_stuck_bound(monkeypatch: pytest.MonkeyPatch) -> float:
    """Shrinks the real-time bound shutdown waits for workers ignoring cancellation."""
    monkeypatch.setattr(_scheduler, "STUCK_WORKER_TIMEOUT", 0.5)
    return 0.5


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_shutdown_ends_despite_a_worker_that_swallows_cancellation(
    kind: str,
    tmp_path: Path,
    short_stuck_bound: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store: str | MemoryStore = MemoryStore() if kind == "memory" else f"sqlite:///{tmp_path}/w.db"
    release = anyio.Event()
    started = anyio.Event()
    finished = anyio.Event()
    grace = 0.2

    async def stubborn(ctx: wm.WorkContext) -> None:
        started.set()
        try:
            with anyio.CancelScope(shield=True):  # deaf to every cancellation
                await release.wait()
        finally:
            finished.set()

    first = wm.WorkManager(store, shutdown_grace=grace, blocked_loop_warning=None)
    first.register_worker("stubborn", stubborn)
    req = wm.OneTimeWorkRequest("stubborn")
    try:
        async with first:
            await first.enqueue(req)
            with anyio.fail_after(10):
                await started.wait()
            leaving = time.monotonic()
        took = time.monotonic() - leaving
        # Bounded by grace + the stuck bound (plus the bookkeeping write); the margin is
        # for a loaded machine. Without the bound it waits for the worker, which never ends.
        assert took < grace + short_stuck_bound + 5, took
        assert not finished.is_set()
        stuck = [r for r in caplog.records if "ignored cancellation" in r.getMessage()]
        assert stuck
        assert stuck[0].levelno == logging.ERROR
        assert str(req.id) in stuck[0].getMessage()
        assert "'stubborn'" in stuck[0].getMessage()
    finally:
        release.set()
    with anyio.fail_after(10):
        await finished.wait()  # its late result is ignored: the store may be closed

    second = wm.WorkManager(store, shutdown_grace=0, blocked_loop_warning=None)
    second.register_worker("stubborn", ok)
    async with second:
        info = await second.get_work_info(req.id)
        assert info is not None
        # Recorded as a shutdown interruption: it runs again on this start.
        assert (
            info.stop_reason is wm.StopReason.SHUTDOWN or info.state is not wm.WorkState.ENQUEUED
        )
        done = await second.wait(req.id, timeout=10)
        assert done.state is wm.WorkState.SUCCEEDED
        assert done.run_attempt_count == 2


# -- blocks the loop -------------------------------------------------------------------------


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


async def test_blocking_worker_is_detected_and_named(caplog: pytest.LogCaptureFixture) -> None:
    manager = wm.WorkManager("memory://", blocked_loop_warning=0.2, shutdown_grace=0)

    @manager.worker("blocker")
    async def blocker(ctx: wm.WorkContext) -> None:
        time.sleep(1.5)  # noqa: ASYNC251  # the misbehaviour under test

    caplog.set_level(logging.WARNING, logger="wm_async.watchdog")
    async with manager:
        assert len(watchdog_threads()) == 1
        req = wm.OneTimeWorkRequest("blocker")
        await manager.enqueue(req)
        info = await manager.wait(req.id, timeout=30)
        assert info.state is wm.WorkState.SUCCEEDED
        with anyio.fail_after(10):
            # The watchdog logs from its thread: poll the capture (bounded).
            while not any("turned again" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                await anyio.sleep(0.05)
    assert watchdog_threads() == []  # stops with the manager
    warnings = [r for r in caplog.records if r.name == "wm_async.watchdog"]
    blocked = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert "blocked" in blocked
    assert str(req.id) in blocked
    assert "'blocker'" in blocked
    assert "test_misbehaving_workers.py" in blocked  # where it blocks


async def test_watchdog_is_quiet_for_a_healthy_loop_and_can_be_turned_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wm_async.watchdog")
    manager = wm.WorkManager("memory://", blocked_loop_warning=1.0, shutdown_grace=0)

    @manager.worker("polite")
    async def polite(ctx: wm.WorkContext) -> None:
        for _ in range(6):
            await anyio.sleep(0.05)

    async with manager:
        reqs = [wm.OneTimeWorkRequest("polite") for _ in range(5)]
        await manager.enqueue(*reqs)
        for req in reqs:
            await manager.wait(req.id, timeout=30)
    assert [r for r in caplog.records if r.name == "wm_async.watchdog"] == []

    off = wm.WorkManager("memory://", blocked_loop_warning=None)
    async with off:
        assert watchdog_threads() == []


def test_blocked_loop_warning_is_validated() -> None:
    with pytest.raises(wm.InvalidRequestError, match="blocked_loop_warning"):
        wm.WorkManager("memory://", blocked_loop_warning=0)
    with pytest.raises(wm.InvalidRequestError, match="blocked_loop_warning"):
        wm.WorkManager("memory://", blocked_loop_warning="soon")  # type: ignore[arg-type]


# -- returns the wrong type ------------------------------------------------------------------


async def test_wrong_return_types_fail_the_work_clearly(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()

    async def returns_int(ctx: wm.WorkContext) -> int:
        return 42

    def returns_dict(ctx: wm.WorkContext) -> dict[str, int]:
        return {"a": 1}

    manager.register_worker("int", returns_int)  # type: ignore[arg-type]  # the bug tested
    manager.register_worker("dict", returns_dict)  # type: ignore[arg-type]

    async def coroutine(ctx: wm.WorkContext) -> None:
        return None

    # A sync callable returning a coroutine: it runs in a thread and "returns" the
    # coroutine object, which is closed (no never-awaited warning) and explained.
    manager.register_worker("wrapped", lambda ctx: coroutine(ctx))

    async with manager:
        reqs = {n: wm.OneTimeWorkRequest(n) for n in ("int", "dict", "wrapped")}
        await manager.enqueue(*reqs.values())
        await clock.advance(0)
        for name, expected in (("int", "int"), ("dict", "dict"), ("wrapped", "coroutine")):
            info = await manager.wait(reqs[name].id, timeout=10)  # some run in threads
            assert info.state is wm.WorkState.FAILED
            assert info.error is not None
            assert info.error.type == "TypeError"
            assert f"worker {name!r} returned {expected}" in info.error.message
            assert "wm_async.Result or None" in info.error.message
        wrapped = await manager.get_work_info(reqs["wrapped"].id)
        assert wrapped is not None
        assert wrapped.error is not None
        assert "register the async function itself" in wrapped.error.message


# -- raises BaseException --------------------------------------------------------------------


def raise_keyboard_interrupt(ctx: wm.WorkContext) -> None:
    raise KeyboardInterrupt("from a worker")


async def raise_system_exit(ctx: wm.WorkContext) -> None:
    raise SystemExit(3)


def raise_system_exit_in_thread(ctx: wm.WorkContext) -> None:
    raise SystemExit(4)


async def raise_keyboard_interrupt_async(ctx: wm.WorkContext) -> None:
    raise KeyboardInterrupt("from an async worker")


class CustomBase(BaseException):
    """A BaseException that is neither of the usual two."""


async def raise_custom_base(ctx: wm.WorkContext) -> None:
    raise CustomBase("odd")


@pytest.mark.parametrize(
    ("fn", "error_type", "message"),
    [
        (raise_keyboard_interrupt_async, "KeyboardInterrupt", "from an async worker"),
        (raise_keyboard_interrupt, "KeyboardInterrupt", "from a worker"),
        (raise_system_exit, "SystemExit", "3"),
        (raise_system_exit_in_thread, "SystemExit", "4"),
        (raise_custom_base, "test_misbehaving_workers.CustomBase", "odd"),
    ],
    ids=["kbd-async", "kbd-sync", "exit-async", "exit-sync", "custom"],
)
async def test_base_exceptions_fail_the_work_and_the_manager_keeps_running(
    make_manager: MakeManager,
    clock: VirtualClock,
    caplog: pytest.LogCaptureFixture,
    fn: WorkerFn,
    error_type: str,
    message: str,
) -> None:
    manager = make_manager(max_concurrency=1)  # the one slot must come back
    manager.register_worker("bad", fn)
    manager.register_worker("ok", ok)
    async with manager:
        bad = wm.OneTimeWorkRequest("bad")
        dependent = wm.OneTimeWorkRequest("ok")
        await manager.begin_with(bad).then(dependent).enqueue()
        await clock.advance(0)
        info = await manager.wait(bad.id, timeout=10)  # sync workers run in a thread
        assert info.state is wm.WorkState.FAILED
        assert info.error is not None
        assert info.error.type.endswith(error_type)
        assert info.error.message == message
        after = await manager.get_work_info(dependent.id)
        assert after is not None
        assert after.state is wm.WorkState.FAILED  # propagated as for any failure
        assert manager.state is wm.RunState.STARTED
        assert manager.statistics()["running"] == 0
        later = [wm.OneTimeWorkRequest("ok") for _ in range(3)]
        await manager.enqueue(*later)
        await clock.advance(0)
        for req in later:
            done = await manager.wait(req.id, timeout=10)
            assert done.state is wm.WorkState.SUCCEEDED
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(str(bad.id) in r.getMessage() and "'bad'" in r.getMessage() for r in errors)


# -- references to finished runs --------------------------------------------------------------


@pytest.fixture
def quiet_worker_log() -> Iterator[None]:
    """Keep failure log records (and the tracebacks they hold) out of pytest's capture, so
    only the manager could keep a failed run's context alive."""
    log = logging.getLogger("wm_async.worker")
    handler = logging.NullHandler()
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.propagate = True
        log.removeHandler(handler)


async def test_manager_keeps_no_reference_to_finished_runs_contexts(
    make_manager: MakeManager, clock: VirtualClock, quiet_worker_log: None
) -> None:
    manager = make_manager()
    contexts: list[weakref.ref[wm.WorkContext]] = []
    gate = anyio.Event()

    def remember(ctx: wm.WorkContext) -> None:
        contexts.append(weakref.ref(ctx))

    @manager.worker("mixed")
    async def mixed(ctx: wm.WorkContext) -> wm.Result | None:
        remember(ctx)
        mode = ctx.input["mode"]
        if mode == "raise":
            raise RuntimeError("boom")
        if mode == "fail":
            return wm.Result.failure({"x": 1})
        if mode == "retry":
            return wm.Result.retry() if ctx.run_attempt_count == 0 else None
        if mode == "wrong":
            return 3  # type: ignore[return-value]  # a wrong type, on purpose
        if mode == "hang":
            await anyio.sleep_forever()
        if mode == "cancel":
            await gate.wait()
        return wm.Result.success({"big": "x" * 1000})

    @manager.worker("long")
    async def long(ctx: wm.WorkContext) -> None:
        await gate.wait()  # a long run started first: later ones finish behind it

    async with manager:
        blocker = wm.OneTimeWorkRequest("long")
        await manager.enqueue(blocker)
        await clock.advance(0)
        modes = ["ok", "raise", "fail", "retry", "wrong", "hang", "cancel"] * 5
        reqs = [
            wm.OneTimeWorkRequest(
                "mixed", input={"mode": m}, timeout=10, backoff=wm.Backoff(delay=0)
            )
            for m in modes
        ]
        await manager.enqueue(*reqs)
        await clock.advance(0)
        for req, mode in zip(reqs, modes, strict=True):
            if mode == "cancel":
                await manager.cancel_work_by_id(req.id)
        await clock.advance(11)  # the hanging ones time out (and run again, hanging)
        for req, mode in zip(reqs, modes, strict=True):
            if mode == "hang":
                await manager.cancel_work_by_id(req.id)
        await clock.advance(0)
        assert manager.statistics()["running"] == 1  # only the long one
        gc.collect()
        alive = [ref() for ref in contexts if ref() is not None]
        assert len(contexts) >= len(reqs)
        assert alive == [], f"{len(alive)} finished runs' contexts are still referenced"
        gate.set()
        await manager.wait(blocker.id, timeout=10)


async def test_an_idle_watchdog_sleeps_and_always_stops() -> None:
    """With nothing running the watchdog thread sleeps (it pings the loop only once woken
    by runs starting), and stop() ends it whatever it was doing, even when it stops
    right as the thread checks whether to sleep."""
    busy = False
    asked: list[bool] = []

    def is_busy() -> bool:
        asked.append(busy)
        return busy

    dog = LoopWatchdog(0.02, is_busy)
    dog.start()
    await anyio.sleep(0.1)  # twenty periods, idle
    assert len(asked) <= 2  # it asked once (maybe twice), then slept: no polling
    assert dog._acked == 0  # no ping reached the loop
    busy = True
    dog.wake()
    with anyio.fail_after(5):
        while dog._acked == 0:  # noqa: ASYNC110  # the thread sets it; no event to await
            await anyio.sleep(0.01)
    dog.stop()
    for _ in range(200):  # a 1 ms period: stop() races the thread's checks
        quick = LoopWatchdog(0.004, lambda: False)
        quick.start()
        await anyio.lowlevel.checkpoint()
        quick.stop()
    assert watchdog_threads() == []
