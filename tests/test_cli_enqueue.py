"""``wm-async enqueue`` and the worker's start-up hooks, as users run them: real
subprocesses, on SQLite and PostgreSQL, beside a running ``wm-async worker``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from conftest import PgSchema, require_postgres
from test_cli import WorkerProcess, start_worker

import wm_async as wm

__all__ = ("start_worker",)  # the fixture, used here

#: Bounds every wait on a subprocess (real time; a loaded machine is slow).
TIMEOUT = 60


def _env(tmp_path: Path, store: str | None) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("WM_ASYNC_STORE", None)
    if store is not None:
        env["WM_ASYNC_STORE"] = store
    return env


def _cli(tmp_path: Path, *args: str, store: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wm_async", *args],
        cwd=tmp_path,
        env=_env(tmp_path, store),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _infos(url: str) -> list[wm.WorkInfo]:
    with wm.SyncClient(url) as client:
        return client.get_work_infos(wm.WorkQuery(states=list(wm.WorkState)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A durable store that exists (a SQLite file made by a first client; a fresh
    PostgreSQL schema, dropped after the test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/wm.db"
        _infos(url)  # creates the file, as a worker's first start would
        yield url
        return
    anyio.run(require_postgres)
    schema = PgSchema()
    try:
        _infos(schema.url())
        yield schema.url()
    finally:
        anyio.run(schema.drop)


# -- what it stores


def test_enqueue_prints_the_id_of_the_work_it_stored(tmp_path: Path, url: str) -> None:
    proc = _cli(
        tmp_path,
        "enqueue",
        "send_welcome",
        "--input",
        '{"user": 42, "lang": "fr"}',
        "--delay",
        "5m",
        "--tag",
        "mail",
        "--tag",
        "signup",
        store=url,  # from WM_ASYNC_STORE
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

    [info] = _infos(url)
    assert proc.stdout == f"{info.id}\n"
    assert info.worker == "send_welcome"
    assert info.state is wm.WorkState.ENQUEUED
    assert info.input == {"user": 42, "lang": "fr"}
    assert info.tags == {"mail", "signup", "send_welcome"}
    assert info.next_schedule_time is not None
    assert info.next_schedule_time - info.enqueued_at == timedelta(minutes=5)


def test_enqueue_json_prints_the_work_info(tmp_path: Path, url: str) -> None:
    proc = _cli(tmp_path, "enqueue", "report", "--store", url, "--delay", "90", "--json")
    assert proc.returncode == 0, proc.stderr

    shown = json.loads(proc.stdout)
    [info] = _infos(url)
    assert shown["id"] == str(info.id)
    assert shown["worker"] == "report"
    assert shown["state"] == "ENQUEUED"
    assert shown["input"] == {}


def test_enqueue_unique_keep_keeps_one_and_replace_replaces_it(tmp_path: Path, url: str) -> None:
    first = _cli(tmp_path, "enqueue", "sync", "--unique", "feed", store=url)
    assert first.returncode == 0, first.stderr
    kept = _cli(tmp_path, "enqueue", "sync", "--unique", "feed", "--policy", "keep", store=url)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout == first.stdout  # the id of the work kept
    assert "kept the unfinished work under 'feed'" in kept.stderr
    assert [str(i.id) for i in _infos(url)] == [first.stdout.strip()]

    replaced = _cli(
        tmp_path, "enqueue", "sync", "--unique", "feed", "--policy", "REPLACE", store=url
    )
    assert replaced.returncode == 0, replaced.stderr
    [info] = [i for i in _infos(url) if i.state is wm.WorkState.ENQUEUED]
    assert str(info.id) == replaced.stdout.strip() != first.stdout.strip()


# -- bad input: one line, non-zero status, nothing stored


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["w", "--input", '{"user": '], "--input is not valid JSON"),
        (["w", "--input", "[1, 2]"], "--input must be a JSON object"),
        (["w", "--unique", "n", "--policy", "SOMETIMES"], "argument --policy: invalid choice"),
        (["w", "--policy", "KEEP"], "--policy needs --unique NAME"),
        (["w", "--delay", "soon"], "argument --delay: expected a duration"),
        (["bad name\n"], "invalid worker="),
        (["w", "--tag", ""], "invalid tag"),
        (["w", "--input", json.dumps({"big": "x" * 20_000})], "exceeds max_data_bytes"),
    ],
)
def test_bad_input_fails_with_one_line_and_stores_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    _infos(url)
    proc = _cli(tmp_path, "enqueue", *args, "--store", url)

    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert message in line
    assert proc.stdout == ""
    assert _infos(url) == []


@pytest.mark.parametrize(
    ("store", "message", "status"),
    [
        (None, "no store given: pass --store URL or set WM_ASYNC_STORE", 2),
        ("memory://", "holds works only inside the process", 2),
        ("sqlite:///nowhere.db", "the file does not exist", 1),
    ],
)
def test_a_store_it_cannot_use_fails_with_one_line(
    tmp_path: Path, store: str | None, message: str, status: int
) -> None:
    proc = _cli(tmp_path, "enqueue", "w", store=store)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert message in line
    assert not (tmp_path / "nowhere.db").exists()


# -- beside a running worker

_APP = """\
import os
import signal

import wm_async as wm

manager = wm.WorkManager(store=os.environ["WM_ASYNC_STORE"], shutdown_grace=1)


@manager.worker("greet")
async def greet(ctx: wm.WorkContext) -> wm.Result:
    return wm.Result.success({"greeting": f"hello {ctx.input['name']}"})


@manager.on_start
async def declare(manager: wm.WorkManager) -> None:
    declared = await manager.enqueue_unique_periodic_work(
        "hourly-greeting",
        wm.ExistingPeriodicWorkPolicy.KEEP,
        wm.PeriodicWorkRequest("greet", repeat_interval=3600, input={"name": "hook"}),
    )
    print(f"on_start: declared={declared}", flush=True)
"""


def _until(condition: object, what: str) -> None:
    """Poll ``condition()`` until true (up to TIMEOUT seconds of real time)."""
    assert callable(condition)
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_enqueue_while_a_worker_process_runs_on_the_same_sqlite_file(
    tmp_path: Path, start_worker: type[WorkerProcess]
) -> None:
    (tmp_path / "app.py").write_text(_APP)
    url = f"sqlite:///{tmp_path}/wm.db"
    worker = start_worker(tmp_path, url, grace=1)
    worker.expect(r"wm-async worker: running .* with workers: greet")

    proc = _cli(tmp_path, "enqueue", "greet", "--input", '{"name": "cli"}', store=url)
    assert proc.returncode == 0, proc.stderr
    work_id = proc.stdout.strip()

    # The worker process runs it; a SyncClient in this process waits for its result.
    with wm.SyncClient(url) as client:
        info = client.wait(work_id, timeout=TIMEOUT)
    assert info.state is wm.WorkState.SUCCEEDED
    assert info.output == {"greeting": "hello cli"}
    worker.expect(rf"work {work_id} \('greet'\): RUNNING -> SUCCEEDED")


def test_the_worker_runs_its_start_up_hook_and_a_second_start_keeps_one_work(
    tmp_path: Path, start_worker: type[WorkerProcess]
) -> None:
    (tmp_path / "app.py").write_text(_APP)
    url = f"sqlite:///{tmp_path}/wm.db"

    def declared() -> list[wm.WorkInfo]:
        if not (tmp_path / "wm.db").exists():
            return []
        with wm.SyncClient(url) as client:
            return client.get_work_infos(wm.WorkQuery(unique_names={"hourly-greeting"}))

    first = start_worker(tmp_path, url, grace=1)
    first.expect(r"on_start: declared=True")
    first.expect(r"wm-async worker: running")
    _until(lambda: [i.period_count for i in declared()] == [1], "the first period to run")
    [work] = declared()
    assert work.periodicity is not None
    assert work.periodicity.interval == timedelta(hours=1)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0

    second = start_worker(tmp_path, url, grace=1)
    second.expect(r"on_start: declared=False")  # KEEP: the work is there
    second.expect(r"wm-async worker: running")
    [again] = declared()
    assert again.id == work.id
    assert again.period_count == 1  # not run again before its hour
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_a_hook_that_raises_stops_the_worker_with_one_line(
    tmp_path: Path, start_worker: type[WorkerProcess]
) -> None:
    (tmp_path / "app.py").write_text(
        _APP
        + textwrap.dedent(
            """
            @manager.on_start
            async def broken(manager: wm.WorkManager) -> None:
                raise wm.InvalidRequestError("config", None, "no mail server configured")
            """
        )
    )
    worker = start_worker(tmp_path, f"sqlite:///{tmp_path}/wm.db", grace=1)
    line = worker.expect(r"error")
    assert "no mail server configured" in line
    assert worker.wait() != 0
    assert not any("wm-async worker: running" in seen for seen in worker.seen), worker.seen
