"""SyncClient: wm_async from plain threads, on real stores. Many threads at once (each
work stored once), waits that time out or end when a worker finishes, cancels, errors at
the call, close, calls from an event loop, a forked child using the parent's client, and
a Flask app whose view enqueues."""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from conftest import PgSchema, require_postgres

import wm_async as wm

#: Bounds every wait (real time; a loaded machine is slow).
TIMEOUT = 60
ALL_STATES = wm.WorkQuery(states=list(wm.WorkState))


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wm_async SyncClient"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh durable store's URL (a schema of its own on PostgreSQL, dropped after the
    test, which fails if a connection was left open); every client thread ended."""
    before = set(_client_threads())
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/wm.db"
    else:
        anyio.run(require_postgres)
        schema = PgSchema()
        try:
            yield schema.url()
        finally:
            anyio.run(schema.drop)
    assert set(_client_threads()) <= before, "a SyncClient's loop thread was left running"


@pytest.fixture
def client(url: str) -> Iterator[wm.SyncClient]:
    with wm.SyncClient(url) as client:
        yield client


# -- from many threads


def test_many_threads_enqueue_at_once_and_each_work_is_stored_once(
    client: wm.SyncClient,
) -> None:
    threads, per_thread = 16, 20

    def produce(n: int) -> list[str]:
        ids = []
        for i in range(per_thread):
            request = wm.OneTimeWorkRequest("mail", input={"thread": n, "i": i}, tags={"bulk"})
            client.enqueue(request)
            ids.append(str(request.id))
        # and all at once on one unique name: KEEP keeps the first
        client.enqueue_unique_work("nightly", "KEEP", wm.OneTimeWorkRequest("report"))
        return ids

    with ThreadPoolExecutor(threads) as pool:
        sent = [i for ids in pool.map(produce, range(threads)) for i in ids]

    infos = client.get_work_infos(wm.WorkQuery(tags={"bulk"}))
    assert sorted(str(i.id) for i in infos) == sorted(sent)
    assert len(sent) == threads * per_thread
    assert {i.state for i in infos} == {wm.WorkState.ENQUEUED}
    assert len(client.get_work_infos(wm.WorkQuery(unique_names={"nightly"}))) == 1
    # the loop thread was started once, by whichever thread came first
    assert len(_client_threads()) == 1


# -- wait


def test_wait_raises_timeout_error_when_nothing_runs_the_work(client: wm.SyncClient) -> None:
    request = wm.OneTimeWorkRequest("nobody_runs_this")
    client.enqueue(request)

    with pytest.raises(TimeoutError):
        client.wait(request.id, timeout=0.2)

    info = client.get_work_info(request.id)
    assert info is not None
    assert info.state is wm.WorkState.ENQUEUED


async def test_wait_returns_when_a_worker_finishes_the_work(url: str) -> None:
    """The client in threads of its own; the worker a manager in this test's loop (the
    store tells the client's manager of the worker's result: PostgreSQL's change feed,
    SQLite's notifications between the processes, or managers, on one file)."""
    worker = wm.WorkManager(url, shutdown_grace=0)

    @worker.worker("double")
    async def double(ctx: wm.WorkContext) -> wm.Result:
        value = ctx.input["n"]
        assert isinstance(value, int)
        return wm.Result.success({"n": value * 2})

    client = wm.SyncClient(url)
    try:
        request = wm.OneTimeWorkRequest("double", input={"n": 21})
        await anyio.to_thread.run_sync(client.enqueue, request)
        async with worker:
            info = await anyio.to_thread.run_sync(client.wait, request.id, TIMEOUT)
    finally:
        await anyio.to_thread.run_sync(client.close)

    assert info.state is wm.WorkState.SUCCEEDED
    assert info.output == {"n": 42}


# -- cancel and update


def test_cancel_by_id_tag_and_unique_name(client: wm.SyncClient) -> None:
    one = wm.OneTimeWorkRequest("w")
    tagged = [wm.OneTimeWorkRequest("w", tags={"batch"}) for _ in range(3)]
    client.enqueue(one, *tagged)
    client.enqueue_unique_work("sync", wm.ExistingWorkPolicy.REPLACE, wm.OneTimeWorkRequest("w"))

    assert client.cancel_work_by_id(one.id) is True
    assert client.cancel_work_by_id(one.id) is False  # already finished
    assert client.cancel_all_work_by_tag("batch") == 3
    assert client.cancel_unique_work("sync") == 1

    states = {i.state for i in client.get_work_infos(ALL_STATES)}
    assert states == {wm.WorkState.CANCELLED}
    info = client.wait(one.id, timeout=TIMEOUT)  # finished: returns at once
    assert info.state is wm.WorkState.CANCELLED


def test_update_work_and_unique_periodic_work(client: wm.SyncClient) -> None:
    request = wm.OneTimeWorkRequest("w", input={"v": 1})
    client.enqueue(request)
    updated = wm.OneTimeWorkRequest("w", id=request.id, input={"v": 2})
    assert client.update_work(updated) is wm.UpdateResult.APPLIED_IMMEDIATELY
    info = client.get_work_info(request.id)
    assert info is not None
    assert info.input == {"v": 2}

    periodic = wm.PeriodicWorkRequest("cleanup", repeat_interval=3600)
    assert client.enqueue_unique_periodic_work("cleanup", "KEEP", periodic) is True
    again = wm.PeriodicWorkRequest("cleanup", repeat_interval=3600)
    assert client.enqueue_unique_periodic_work("cleanup", "KEEP", again) is False
    assert len(client.get_work_infos(wm.WorkQuery(unique_names={"cleanup"}))) == 1


def test_enqueue_chain_blocks_the_later_steps(client: wm.SyncClient) -> None:
    first, second, third = (wm.OneTimeWorkRequest("step") for _ in range(3))
    client.enqueue_chain(first, [second, third])

    states = {str(i.id): i.state for i in client.get_work_infos(ALL_STATES)}
    assert states == {
        str(first.id): wm.WorkState.ENQUEUED,
        str(second.id): wm.WorkState.BLOCKED,
        str(third.id): wm.WorkState.BLOCKED,
    }


# -- errors reach the caller at the call


def test_bad_input_raises_the_manager_s_error_at_the_call_and_stores_nothing(url: str) -> None:
    with wm.SyncClient(url, known_workers=["mail"], max_data_bytes=100) as client:
        with pytest.raises(wm.UnknownWorkerError) as unknown:
            client.enqueue(wm.OneTimeWorkRequest("mial"))
        assert unknown.value.name == "mial"
        with pytest.raises(wm.DataTooLargeError):
            client.enqueue(wm.OneTimeWorkRequest("mail", input={"blob": "x" * 500}))
        with pytest.raises(wm.InvalidRequestError, match="policy"):
            client.enqueue_unique_work("n", "SOMETIMES", wm.OneTimeWorkRequest("mail"))
        with pytest.raises(wm.InvalidRequestError, match="no such work"):
            client.wait(uuid.uuid4(), timeout=TIMEOUT)
        with pytest.raises(wm.InvalidRequestError, match="query"):
            client.get_work_infos("all")  # type: ignore[arg-type]
        assert client.get_work_infos(ALL_STATES) == []
        # the client goes on working after errors
        client.enqueue(wm.OneTimeWorkRequest("mail"))
        assert len(client.get_work_infos(ALL_STATES)) == 1


def test_bad_arguments_raise_at_construction() -> None:
    with pytest.raises(wm.InvalidRequestError):
        wm.SyncClient("nosuchscheme://x")
    with pytest.raises(wm.InvalidRequestError):
        wm.SyncClient("memory://", known_workers=[""])
    with pytest.raises(wm.InvalidRequestError):
        wm.SyncClient("memory://", call_timeout=0)


def test_a_store_that_cannot_open_raises_store_error_and_a_later_call_tries_again(
    tmp_path: Path,
) -> None:
    missing_dir = tmp_path / "not_yet"
    with wm.SyncClient(f"sqlite:///{missing_dir}/wm.db") as client:
        with pytest.raises(wm.StoreError):
            client.enqueue(wm.OneTimeWorkRequest("w"))
        missing_dir.mkdir()
        client.enqueue(wm.OneTimeWorkRequest("w"))
        assert len(client.get_work_infos(ALL_STATES)) == 1


# -- close


def test_close_is_idempotent_and_later_calls_raise_not_running(url: str) -> None:
    client = wm.SyncClient(url)
    client.enqueue(wm.OneTimeWorkRequest("w"))
    assert len(_client_threads()) == 1

    client.close()
    client.close()

    assert client.closed
    assert _client_threads() == []
    with pytest.raises(wm.NotRunningError, match="SyncClient is closed"):
        client.enqueue(wm.OneTimeWorkRequest("w"))
    with pytest.raises(wm.NotRunningError):
        client.get_work_infos(ALL_STATES)


def test_close_ends_a_wait_in_another_thread_with_not_running(client: wm.SyncClient) -> None:
    request = wm.OneTimeWorkRequest("nobody_runs_this")
    client.enqueue(request)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.wait, request.id)
        runner = client._runner
        assert runner is not None
        # until the wait is under way in the client's loop
        _until_true(lambda: runner.manager._events.is_waited(str(request.id)))
        client.close()
        with pytest.raises(wm.NotRunningError):
            waiting.result(TIMEOUT)


def test_a_client_dropped_without_close_ends_its_thread(tmp_path: Path) -> None:
    client = wm.SyncClient(f"sqlite:///{tmp_path}/wm.db")
    client.enqueue(wm.OneTimeWorkRequest("w"))
    [thread] = _client_threads()

    del client
    gc.collect()

    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_a_client_never_used_starts_no_thread(tmp_path: Path) -> None:
    with wm.SyncClient(f"sqlite:///{tmp_path}/wm.db"):
        assert _client_threads() == []
    assert not (tmp_path / "wm.db").exists()


def test_a_script_that_never_closes_the_client_exits_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import wm_async as wm

            client = wm.SyncClient("sqlite:///{tmp_path}/wm.db")
            request = wm.OneTimeWorkRequest("w")
            client.enqueue(request)
            print(request.id)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    with wm.SyncClient(f"sqlite:///{tmp_path}/wm.db") as client:
        info = client.get_work_info(proc.stdout.strip())
    assert info is not None
    assert info.state is wm.WorkState.ENQUEUED


def _until_true(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


# -- event loops


async def test_a_call_from_a_running_event_loop_raises_blocking_call_error(
    tmp_path: Path,
) -> None:
    client = wm.SyncClient(f"sqlite:///{tmp_path}/wm.db")
    try:
        with pytest.raises(wm.BlockingCallError, match="use the async API"):
            client.enqueue(wm.OneTimeWorkRequest("w"))
        # the same client from a thread is fine
        await anyio.to_thread.run_sync(client.enqueue, wm.OneTimeWorkRequest("w"))
    finally:
        await anyio.to_thread.run_sync(client.close)


def test_a_call_from_the_client_s_own_loop_thread_raises_instead_of_deadlocking(
    tmp_path: Path,
) -> None:
    with wm.SyncClient(f"sqlite:///{tmp_path}/wm.db") as client:
        client.enqueue(wm.OneTimeWorkRequest("w"))
        runner = client._runner
        assert runner is not None
        assert runner.loop is not None

        async def inside() -> None:
            client.get_work_infos(ALL_STATES)

        future = asyncio.run_coroutine_threadsafe(inside(), runner.loop)
        with pytest.raises(wm.BlockingCallError):
            future.result(TIMEOUT)
        assert isinstance(wm.BlockingCallError("enqueue"), wm.WorkManagerError)


# -- fork


def _child_enqueues(client: wm.SyncClient, results: multiprocessing.SimpleQueue[str]) -> None:
    request = wm.OneTimeWorkRequest("w", tags={"from_child"})
    client.enqueue(request)  # the parent's client object, in the child
    info = client.get_work_info(request.id)
    assert info is not None
    results.put(f"{request.id} {info.state.value} {len(_client_threads())}")
    client.close()


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_uses_the_parent_s_client_with_a_loop_of_its_own(url: str) -> None:
    context = multiprocessing.get_context("fork")
    with wm.SyncClient(url) as client:
        client.enqueue(wm.OneTimeWorkRequest("w", tags={"from_parent"}))  # loop started
        results: multiprocessing.SimpleQueue[str] = context.SimpleQueue()
        children = [
            context.Process(target=_child_enqueues, args=(client, results)) for _ in range(3)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(TIMEOUT)
            assert child.exitcode == 0
        reported = [results.get().split() for _ in children]

        # each child stored its work, through a loop thread of its own (one per child)
        assert all(state == "ENQUEUED" and threads == "1" for _, state, threads in reported)
        from_child = client.get_work_infos(wm.WorkQuery(tags={"from_child"}))
        assert sorted(str(i.id) for i in from_child) == sorted(r[0] for r in reported)
        # and the parent's client goes on working
        client.enqueue(wm.OneTimeWorkRequest("w", tags={"from_parent"}))
        assert len(client.get_work_infos(wm.WorkQuery(tags={"from_parent"}))) == 2


def test_a_raw_os_fork_child_enqueues_through_the_parent_s_client(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    with wm.SyncClient(url) as client:
        client.get_work_infos(ALL_STATES)  # started in the parent
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover  # the child
            status = 1
            try:
                request = wm.OneTimeWorkRequest("w")
                client.enqueue(request)
                os.write(write, str(request.id).encode())
                client.close()
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read) as pipe:
            child_id = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        info = client.get_work_info(child_id)
        assert info is not None
        assert info.state is wm.WorkState.ENQUEUED


# -- a Flask app


def test_a_flask_view_enqueues_from_many_request_threads(url: str) -> None:
    pytest.importorskip("flask")
    import flask

    client = wm.SyncClient(url, known_workers=["send_welcome"])
    app = flask.Flask("signup")

    @app.post("/signup")
    def signup() -> tuple[dict[str, str], int]:
        user = flask.request.get_json()["user"]
        request = wm.OneTimeWorkRequest("send_welcome", input={"user": user}, tags={"mail"})
        client.enqueue(request)
        return {"work": str(request.id)}, 202

    @app.get("/work/<work_id>")
    def work(work_id: str) -> tuple[dict[str, str], int]:
        info = client.get_work_info(work_id)
        return ({"state": info.state.value}, 200) if info else ({}, 404)

    def post_many(n: int) -> list[tuple[int, str]]:
        with app.test_client() as http:
            answers = []
            for i in range(10):
                response = http.post("/signup", json={"user": f"{n}-{i}"})
                work_id = json.loads(response.data)["work"]
                shown = http.get(f"/work/{work_id}")
                answers.append((response.status_code, work_id))
                assert json.loads(shown.data) == {"state": "ENQUEUED"}
            return answers

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = [a for batch in pool.map(post_many, range(8)) for a in batch]
        assert {status for status, _ in answers} == {202}
        infos = client.get_work_infos(wm.WorkQuery(tags={"mail"}))
        assert sorted(str(i.id) for i in infos) == sorted(w for _, w in answers)
        assert len(infos) == 80
        assert sorted(i.input["user"] for i in infos) == sorted(  # type: ignore[type-var]
            f"{n}-{i}" for n in range(8) for i in range(10)
        )
    finally:
        client.close()


def test_pause_and_resume_a_worker(url: str) -> None:
    with wm.SyncClient(url, known_workers=["w"]) as client:
        client.pause_worker("w")
        assert client.paused_workers() == {"w"}
        with pytest.raises(wm.UnknownWorkerError):
            client.pause_worker("other")
    with wm.SyncClient(url) as again:  # durable
        assert again.paused_workers() == {"w"}
        again.resume_worker("w")
        assert again.paused_workers() == frozenset()


def test_run_now_and_run_again(client: wm.SyncClient) -> None:
    later = wm.OneTimeWorkRequest("w", initial_delay=3600)
    client.enqueue(later)
    info = client.run_now(later.id)
    assert info.next_schedule_time is not None
    assert info.next_schedule_time <= info.enqueued_at + timedelta(seconds=5)
    client.cancel_work_by_id(later.id)
    again = client.run_again(later.id)
    assert again.id != later.id
    assert again.state is wm.WorkState.ENQUEUED
