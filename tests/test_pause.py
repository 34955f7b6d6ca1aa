"""Pausing and resuming a worker name (semantics 47): durable, seen by every process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from conftest import PgSchema, require_postgres

import wm_async as wm
from wm_async.stores.memory import MemoryStore
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]

#: Bounds every real-time wait (a loaded machine is slow).
TIMEOUT = 30.0


async def state(manager: wm.WorkManager, req: wm.OneTimeWorkRequest) -> wm.WorkState:
    info = await manager.get_work_info(req.id)
    assert info is not None
    return info.state


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (real time) until it holds, up to TIMEOUT."""
    with anyio.fail_after(TIMEOUT):
        while not await check():  # noqa: ASYNC110  # other processes: no event to await
            await anyio.sleep(0.02)


def register(manager: wm.WorkManager, ran: list[str]) -> None:
    @manager.worker("paused")
    async def paused(ctx: wm.WorkContext) -> None:
        ran.append("paused")

    @manager.worker("other")
    async def other(ctx: wm.WorkContext) -> None:
        ran.append("other")


async def test_paused_works_stay_enqueued_and_resume_runs_them_at_once(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    ran: list[str] = []
    register(manager, ran)
    held, free = wm.OneTimeWorkRequest("paused"), wm.OneTimeWorkRequest("other")
    later = wm.OneTimeWorkRequest("paused", initial_delay=60)
    async with manager:
        await manager.pause_worker("paused")
        assert await manager.paused_workers() == {"paused"}
        await manager.enqueue(held, free, later)
        await clock.advance(120)
        assert ran == ["other"]
        assert await state(manager, held) is wm.WorkState.ENQUEUED
        assert await state(manager, later) is wm.WorkState.ENQUEUED
        explanation = await manager.explain(held.id)
        assert explanation is not None
        assert explanation.worker_paused
        assert "'paused' is paused" in explanation.reasons[0]
        await manager.resume_worker("paused")
        await clock.advance(0)  # no time passes: resuming claims them at once
        assert ran == ["other", "paused", "paused"]
        assert await manager.paused_workers() == frozenset()
        explanation = await manager.explain(held.id)
        assert explanation is not None
        assert not explanation.worker_paused


async def test_running_works_finish_when_their_worker_is_paused(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    release = anyio.Event()
    started: list[str] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        started.append(str(ctx.id))
        await release.wait()

    running, queued = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w", initial_delay=1)
    async with manager:
        await manager.enqueue(running, queued)
        await clock.advance(0)
        assert await state(manager, running) is wm.WorkState.RUNNING
        await manager.pause_worker("w")
        release.set()
        await clock.advance(10)
        assert await state(manager, running) is wm.WorkState.SUCCEEDED
        assert await state(manager, queued) is wm.WorkState.ENQUEUED
        assert started == [str(running.id)]


async def test_a_pause_survives_a_restart(
    make_manager: MakeManager, clock: VirtualClock, store_url: str
) -> None:
    # memory:// opens a new store each time: the memory store keeps its pauses, like its
    # works, in the store object.
    store: object = MemoryStore() if store_url == "memory://" else store_url
    ran: list[str] = []
    req = wm.OneTimeWorkRequest("paused")
    first = make_manager(store=store)
    register(first, ran)
    async with first:
        await first.pause_worker("paused")
        await first.enqueue(req)
    second = make_manager(store=store)
    register(second, ran)
    async with second:
        assert await second.paused_workers() == {"paused"}
        await clock.advance(10)
        assert ran == []
        assert await state(second, req) is wm.WorkState.ENQUEUED
        await second.resume_worker("paused")
        await clock.advance(0)
        assert ran == ["paused"]


async def test_bad_names(make_manager: MakeManager) -> None:
    manager = make_manager()

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None: ...

    async with manager:
        with pytest.raises(wm.UnknownWorkerError):
            await manager.pause_worker("nope")
        with pytest.raises(wm.UnknownWorkerError):
            await manager.resume_worker("nope")
        with pytest.raises(wm.InvalidRequestError):
            await manager.pause_worker("")
        with pytest.raises(wm.InvalidRequestError):
            await manager.pause_worker(3)  # type: ignore[arg-type]
        assert await manager.paused_workers() == frozenset()
    known = make_manager(run_work=False, known_workers=["a"])
    async with known:
        await known.pause_worker("a")
        with pytest.raises(wm.UnknownWorkerError):
            await known.pause_worker("b")
    # A producer without known_workers accepts any valid name.
    async with make_manager(run_work=False) as producer:
        await producer.pause_worker("anything")
        assert "anything" in await producer.paused_workers()
        await producer.resume_worker("anything")
    with pytest.raises(wm.NotRunningError):
        await manager.pause_worker("w")


# -- other managers and processes


def cli(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    """``wm-async ARGS --store STORE`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "wm_async", *args, "--store", store],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def shared(store_url: str) -> str:
    """The store URL, if other managers and processes can share it."""
    if store_url == "memory://":
        pytest.skip("a memory store is one process's own")
    return store_url


async def test_a_pause_by_another_manager_is_seen(
    make_manager: MakeManager, store_url: str
) -> None:
    url = shared(store_url)
    ran: list[str] = []
    runner = make_manager(store=url)
    register(runner, ran)
    producer = make_manager(store=url, run_work=False)
    held, free = wm.OneTimeWorkRequest("paused"), wm.OneTimeWorkRequest("other")
    async with runner, producer:
        await producer.pause_worker("paused")
        await producer.enqueue(held, free)  # told to the runner after the pause
        await eventually(lambda: _has(ran, "other"))
        assert await state(runner, held) is wm.WorkState.ENQUEUED
        assert await runner.paused_workers() == {"paused"}
        explanation = await runner.explain(held.id)
        assert explanation is not None
        assert explanation.worker_paused
        await producer.resume_worker("paused")
        await eventually(lambda: _succeeded(runner, held))
        assert ran.count("paused") == 1


async def _has(ran: list[str], name: str) -> bool:
    return name in ran


async def _succeeded(manager: wm.WorkManager, req: wm.OneTimeWorkRequest) -> bool:
    return await state(manager, req) is wm.WorkState.SUCCEEDED


async def test_cli_pause_and_resume_in_other_processes(
    make_manager: MakeManager, store_url: str
) -> None:
    url = shared(store_url)
    ran: list[str] = []
    runner = make_manager(store=url)
    register(runner, ran)
    async with runner:  # creates the store (the CLI opens only an existing one)
        paused = await anyio.to_thread.run_sync(lambda: cli("pause", "paused", store=url))
        assert paused.returncode == 0, paused.stderr
        assert "paused worker 'paused'" in paused.stdout
        assert "paused workers: paused" in paused.stdout
        # Enqueued by yet another process, whose notification follows the pause's.
        held = await anyio.to_thread.run_sync(lambda: cli("enqueue", "paused", store=url))
        free = await anyio.to_thread.run_sync(lambda: cli("enqueue", "other", store=url))
        assert held.returncode == 0, held.stderr
        assert free.returncode == 0, free.stderr
        await eventually(lambda: _has(ran, "other"))
        held_id = held.stdout.strip().splitlines()[-1]
        info = await runner.get_work_info(held_id)
        assert info is not None
        assert info.state is wm.WorkState.ENQUEUED
        resumed = await anyio.to_thread.run_sync(lambda: cli("resume", "paused", store=url))
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed worker 'paused'" in resumed.stdout
        assert "paused workers: none" in resumed.stdout
        await eventually(lambda: _has(ran, "paused"))


CHILD = Path(__file__).with_name("_pause_child.py")


@pytest.mark.postgres
async def test_a_pause_is_seen_by_three_worker_processes(tmp_path: Path) -> None:
    """Three processes run the workers on one PostgreSQL schema; this one pauses,
    enqueues, resumes: no process runs a paused work, and on resume they all run."""
    await require_postgres()
    schema = PgSchema()
    url = schema.url()
    log = tmp_path / "runs.log"
    children: list[subprocess.Popen[str]] = []
    try:
        async with wm.WorkManager(url, run_work=False) as producer:  # creates the schema
            await producer.pause_worker("paused")
            children.extend(_spawn(url, log) for _ in range(3))
            for child in children:
                assert child.stdout is not None
                line = await anyio.to_thread.run_sync(child.stdout.readline)
                assert line == "ready\n"
            held = [wm.OneTimeWorkRequest("paused") for _ in range(6)]
            free = [wm.OneTimeWorkRequest("other") for _ in range(30)]
            await producer.enqueue(*held)
            await producer.enqueue(*free)  # every process hears of it after the pause

            async def all_ran(requests: list[wm.OneTimeWorkRequest]) -> bool:
                return all([await _succeeded(producer, r) for r in requests])

            await eventually(lambda: all_ran(free))
            assert {await state(producer, r) for r in held} == {wm.WorkState.ENQUEUED}
            await producer.resume_worker("paused")
            await eventually(lambda: all_ran(held))
        lines = [ln.split() for ln in log.read_text().splitlines()]
        ran = sorted(work_id for _, worker, work_id in lines if worker == "paused")
        assert ran == sorted(str(r.id) for r in held)  # each once
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child in children:
            await anyio.to_thread.run_sync(lambda c=child: c.wait(TIMEOUT))  # type: ignore[misc]
            assert child.stdout is not None
            child.stdout.close()
        await schema.drop()


def _spawn(url: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), url, str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_cli_rejects_a_bad_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"

    async def create() -> None:
        async with wm.WorkManager(url):
            pass

    anyio.run(create)
    proc = cli("pause", "", store=url)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("wm-async: error: invalid worker=''")
