"""The ``wm-async`` command, run as a subprocess as users run it: the demo, the admin
subcommands against a SQLite store, the worker and its signals, and one-line errors."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import anyio
import attrs
import pytest
from conftest import PgSchema, require_postgres

import wm_async as wm
from wm_async.cli import main
from wm_async.testing import VirtualClock

#: Bounds every wait on a subprocess (real time; a loaded machine is slow).
TIMEOUT = 60

# One row of the demo's table: time, short id, worker, state, attempts, details.
_ROW = re.compile(
    r"^\s*(?P<time>\d+\.\d+)s\s+(?P<id>[0-9a-f]{8})\s+(?P<worker>\w+)\s+"
    r"(?P<state>ENQUEUED|RUNNING|SUCCEEDED|FAILED|BLOCKED|CANCELLED)\s+(?P<attempts>\d+)"
    r"(?:\s+(?P<details>.*))?$"
)
_DEMO_WORKERS = {"progress", "delayed", "flaky", "heartbeat", "gated", "fetch", "summarise"}
_DEMO_SUMMARY = "6 succeeded, 0 failed, 1 cancelled, 0 unfinished"


@attrs.frozen
class Row:
    time: float
    state: str
    attempts: int
    details: str


def _rows(stdout: str) -> dict[str, list[Row]]:
    """The demo's state-change rows, per worker, in printed order."""
    rows: dict[str, list[Row]] = {}
    for line in stdout.splitlines():
        m = _ROW.match(line)
        if m:
            row = Row(float(m["time"]), m["state"], int(m["attempts"]), m["details"] or "")
            rows.setdefault(m["worker"], []).append(row)
    return rows


def _next_run_in(details: str) -> float:
    """The seconds in an ENQUEUED row's "next run in 1.0s"."""
    m = re.match(r"next run in (\d+\.\d)s", details)
    assert m, details
    return float(m[1])


def _env(tmp_path: Path, store: str | None = None) -> dict[str, str]:
    # TMPDIR: the demo's default SQLite file goes under tmp_path, not the real /tmp.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("WM_ASYNC_STORE", None)
    if store is not None:
        env["WM_ASYNC_STORE"] = store
    return env


def _run_cli(
    tmp_path: Path, *args: str, store: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wm_async", *args],
        cwd=tmp_path,
        env=_env(tmp_path, store),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _one_error_line(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("wm-async")
    assert ": error: " in line
    return line


# -- demo


def test_demo_runs_every_work_to_its_end(tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, "demo", "--duration", "45")  # on the default SQLite store

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = _rows(proc.stdout)
    assert set(rows) == _DEMO_WORKERS, proc.stdout
    last = {worker: (r[-1].state, r[-1].attempts) for worker, r in rows.items()}
    assert last == {
        "progress": ("SUCCEEDED", 1),
        "delayed": ("SUCCEEDED", 1),
        "flaky": ("SUCCEEDED", 3),
        "heartbeat": ("CANCELLED", 0),
        "gated": ("SUCCEEDED", 1),
        "fetch": ("SUCCEEDED", 1),
        "summarise": ("SUCCEEDED", 1),
    }, proc.stdout

    # the chain: summarise is BLOCKED until fetch succeeds, then gets its output
    assert rows["summarise"][0].state == "BLOCKED"
    fetched = next(r.time for r in rows["fetch"] if r.state == "SUCCEEDED")
    assert all(r.time >= fetched for r in rows["summarise"] if r.state != "BLOCKED")
    assert 'output {"summary": "read 12 pages"}' in rows["summarise"][-1].details

    # progress: reported while RUNNING, its output shown when it SUCCEEDED
    assert any(r.state == "RUNNING" and '"step": 3' in r.details for r in rows["progress"])
    assert 'output {"items": 3}' in rows["progress"][-1].details

    # flaky: re-ENQUEUED after each failed run, attempts going up 1, 2, then SUCCEEDED at 3
    flaky = rows["flaky"]
    retries = [r for r in flaky if r.state == "ENQUEUED" and r.attempts]
    assert [r.attempts for r in retries] == [1, 2]
    attempts = [r.attempts for r in flaky]
    assert attempts == sorted(attempts)
    # LINEAR backoff of 1 s: the wait after the second failed run is the longer one
    first, second = (_next_run_in(r.details) for r in retries)
    assert first < second

    # delayed: ENQUEUED first, and not started before its 2 s initial delay
    delayed = rows["delayed"]
    assert delayed[0].state == "ENQUEUED"
    assert delayed[0].details.startswith("next run in")
    started = next(r for r in delayed if r.state != "ENQUEUED")
    assert started.time >= 1.95  # the clock starts before enqueue; the delay counts from it

    # heartbeat: three periods, then cancelled by the demo
    assert "periods done 3" in rows["heartbeat"][-1].details
    assert [r.state for r in rows["heartbeat"]].count("RUNNING") == 3
    assert "cancelling 'heartbeat' after 3 periods" in proc.stdout

    # gated: waits for its signal, runs once the demo turns it on
    gated = rows["gated"]
    assert gated[0].details == "waits for signal 'demo_gate'"
    turned_on = float(re.search(r"(\d+\.\d+)s  -- turning signal", proc.stdout)[1])  # type: ignore[index]
    assert all(r.time >= turned_on for r in gated if r.state != "ENQUEUED")

    assert "all finished in" in proc.stdout
    assert _DEMO_SUMMARY in proc.stdout
    # the temporary store: named at the start, deleted at the end, and the user told so
    shown = re.search(r"store sqlite:///(\S+)/demo\.db\n", proc.stdout)
    assert shown, proc.stdout
    assert Path(shown[1]).parent == tmp_path
    assert f"deleted the temporary store {shown[1]} (--keep keeps it)" in proc.stdout
    assert not list(tmp_path.glob("wm-async-demo-*"))
    assert "Each row is one state change" in proc.stdout  # the legend
    ended = proc.stdout.split("where each work ended:\n")[1].splitlines()[:7]
    assert [line.split()[:3] for line in ended] == [
        ["progress", "SUCCEEDED", "1"],
        ["delayed", "SUCCEEDED", "1"],
        ["flaky", "SUCCEEDED", "3"],
        ["heartbeat", "CANCELLED", "3"],
        ["gated", "SUCCEEDED", "1"],
        ["fetch", "SUCCEEDED", "1"],
        ["summarise", "SUCCEEDED", "1"],
    ]


def test_main_runs_the_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--store", "memory://", "--duration", "45"]) == 0

    out = capsys.readouterr().out
    assert set(_rows(out)) == _DEMO_WORKERS
    assert _DEMO_SUMMARY in out


def test_demo_stops_at_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--store", "memory://", "--duration", "0.5"]) == 0

    out = capsys.readouterr().out
    # The delayed work (2 s) cannot have run yet; the demo still exits 0.
    assert [r.state for r in _rows(out)["delayed"]] == ["ENQUEUED"]
    assert "stopped by --duration after" in out
    assert "unfinished" in out


# -- argument errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--duration", "-1"], "argument --duration: expected a positive number"),
        (["frob"], "invalid choice: 'frob'"),
        ([], "the following arguments are required: COMMAND"),
        (["list", "--state", "DONE"], "argument --state: invalid choice: 'DONE'"),
        (["prune", "--older-than", "soon"], "expected a duration like 30s"),
        (["cancel"], "one of the arguments ID --tag --unique-name --all is required"),
        (["cancel", "--all", "--tag", "x"], "not allowed with argument"),
        (["list"], "no store given: pass --store URL or set WM_ASYNC_STORE"),
        (["list", "--store", "memory://"], "memory:// holds works only inside the process"),
        (["list", "--store", "bogus"], "invalid store='bogus'"),
        (
            ["show", "not-an-id", "--store", "sqlite:///x.db"],
            "a UUID, or its last 8 or more hex digits), got 'not-an-id'",
        ),
        (["worker", "app"], "expected MODULE:ATTRIBUTE"),
    ],
    ids=[
        "negative-duration",
        "unknown-command",
        "no-command",
        "unknown-state",
        "bad-older-than",
        "cancel-nothing",
        "cancel-two-ways",
        "no-store",
        "memory-store",
        "bad-store-url",
        "bad-id",
        "worker-no-colon",
    ],
)
def test_bad_arguments_print_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "x.db").touch()
    proc = _run_cli(tmp_path, *args)

    line = _one_error_line(proc, 2)
    assert proc.stdout == ""
    assert message in line


def test_main_reports_work_manager_errors_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--store", "bogus"]) == 2

    err = capsys.readouterr().err
    assert err == (
        "wm-async: error: invalid store='bogus': expected a URL such as sqlite:///wm_async.db\n"
    )


def test_main_returns_a_status_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "soon"]) == 2
    assert main(["demo", "--help"]) == 0

    captured = capsys.readouterr()
    assert "usage: wm-async demo" in captured.out
    assert "got 'soon'" in captured.err


# -- list, show, cancel, prune against a SQLite store


@attrs.frozen
class Seeded:
    """Works in a store, two days old: one SUCCEEDED, one FAILED, two ENQUEUED (due in a
    month, one of them under the unique name "nightly")."""

    url: str
    succeeded: str
    failed: str
    unique: str
    plain: str


def _seed(db: Path) -> Seeded:
    async def seed() -> Seeded:
        clock = VirtualClock(start=datetime.now(UTC) - timedelta(days=2))
        manager = wm.WorkManager(store=f"sqlite:///{db}", clock=clock, shutdown_grace=0)

        @manager.worker("ok")
        async def ok(ctx: wm.WorkContext) -> wm.Result:
            return wm.Result.success({"answer": 42})

        @manager.worker("bad")
        async def bad(ctx: wm.WorkContext) -> None:
            raise ValueError("no luck")

        manager.register_worker("later", ok)
        month = timedelta(days=30)
        succeeded = wm.OneTimeWorkRequest("ok", tags={"batch"})
        failed = wm.OneTimeWorkRequest("bad", tags={"batch"})
        unique = wm.OneTimeWorkRequest("later", initial_delay=month, tags={"batch"})
        plain = wm.OneTimeWorkRequest("later", initial_delay=month, priority=4)
        async with manager:
            await manager.enqueue(succeeded, failed, plain)
            await manager.enqueue_unique_work("nightly", wm.ExistingWorkPolicy.KEEP, unique)
            await clock.advance(0)
        ids = (str(r.id) for r in (succeeded, failed, unique, plain))
        return Seeded(f"sqlite:///{db}", *ids)

    result: Seeded = anyio.run(seed)
    return result


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return _seed(tmp_path / "wm.db")


def _json(tmp_path: Path, *args: str, store: str) -> object:
    proc = _run_cli(tmp_path, *args, "--json", store=store)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _states(tmp_path: Path, store: str) -> dict[str, str]:
    listed = _json(tmp_path, "list", store=store)
    assert isinstance(listed, list)
    return {info["id"]: info["state"] for info in listed}


def test_list_prints_a_table_and_json(tmp_path: Path, seeded: Seeded) -> None:
    proc = _run_cli(tmp_path, "list", store=seeded.url)  # the store from WM_ASYNC_STORE

    assert proc.returncode == 0, proc.stderr
    header, *lines = proc.stdout.splitlines()
    assert header.split() == ["ID", "WORKER", "STATE", "ATTEMPTS", "UNIQUE", "NAME", "WHEN"]
    table = {line.split()[0]: line.split() for line in lines}
    assert table[seeded.succeeded][1:4] == ["ok", "SUCCEEDED", "1"]
    assert table[seeded.failed][1:4] == ["bad", "FAILED", "1"]
    assert table[seeded.unique][1:5] == ["later", "ENQUEUED", "0", "nightly"]
    assert "due in 2" in proc.stdout  # 30 days from two days ago: "due in 27d23h"-ish

    assert _states(tmp_path, seeded.url) == {
        seeded.succeeded: "SUCCEEDED",
        seeded.failed: "FAILED",
        seeded.unique: "ENQUEUED",
        seeded.plain: "ENQUEUED",
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--state", "enqueued"], {"unique", "plain"}),
        (["--state", "FAILED", "--state", "SUCCEEDED"], {"failed", "succeeded"}),
        (["--tag", "batch"], {"succeeded", "failed", "unique"}),
        (["--tag", "batch", "--state", "ENQUEUED"], {"unique"}),
        (["--unique-name", "nightly"], {"unique"}),
        (["--tag", "nothing"], set()),
    ],
)
def test_list_filters(
    tmp_path: Path, seeded: Seeded, filters: list[str], expected: set[str]
) -> None:
    listed = _json(tmp_path, "list", *filters, "--store", seeded.url, store=None)  # type: ignore[arg-type]
    assert isinstance(listed, list)
    assert {info["id"] for info in listed} == {getattr(seeded, name) for name in expected}


def test_show_prints_one_work(tmp_path: Path, seeded: Seeded) -> None:
    proc = _run_cli(tmp_path, "show", seeded.failed, store=seeded.url)

    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    assert fields["id"].strip() == seeded.failed
    assert fields["state"].strip().startswith("FAILED (finished 2d")
    assert fields["error"].strip() == "ValueError: no luck"
    assert fields["tags"].strip() == "bad, batch"

    shown = _json(tmp_path, "show", seeded.succeeded, store=seeded.url)
    assert isinstance(shown, dict)
    assert shown["state"] == "SUCCEEDED"
    assert shown["output"] == {"answer": 42}
    assert shown["run_attempt_count"] == 1


def test_show_prints_a_priority_other_than_the_default(tmp_path: Path, seeded: Seeded) -> None:
    proc = _run_cli(tmp_path, "show", seeded.plain, store=seeded.url)
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    assert fields["priority"].strip() == "4"
    default = _run_cli(tmp_path, "show", seeded.unique, store=seeded.url)
    assert "priority" not in default.stdout
    shown = _json(tmp_path, "show", seeded.plain, store=seeded.url)
    assert isinstance(shown, dict)
    assert shown["priority"] == 4


def test_show_names_a_pause_that_holds_a_due_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    request = wm.OneTimeWorkRequest("mailer")

    async def seed() -> None:
        async with wm.WorkManager(url, run_work=False) as producer:
            await producer.pause_worker("mailer")
            await producer.enqueue(request)

    anyio.run(seed)
    proc = _run_cli(tmp_path, "show", str(request.id), store=url)
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    assert fields["held by"].strip() == "its worker is paused"
    shown = _json(tmp_path, "show", str(request.id), store=url)
    assert isinstance(shown, dict)
    assert shown["held_by"] == "paused"


def test_show_unknown_id_is_one_line(tmp_path: Path, seeded: Seeded) -> None:
    unknown = str(uuid.uuid4())
    proc = _run_cli(tmp_path, "show", unknown, store=seeded.url)

    assert _one_error_line(proc, 1) == f"wm-async: error: no work with id {unknown} in the store"


def test_unreachable_store_is_one_line(tmp_path: Path) -> None:
    missing = _run_cli(tmp_path, "list", store=f"sqlite:///{tmp_path}/missing.db")
    assert "no store at" in _one_error_line(missing, 1)
    assert not (tmp_path / "missing.db").exists()  # not created by looking

    (tmp_path / "notes.db").write_text("not a database")
    garbage = _run_cli(tmp_path, "list", store=f"sqlite:///{tmp_path}/notes.db")
    assert "is not a SQLite database" in _one_error_line(garbage, 1)


def test_cancel_by_id_tag_unique_name_and_all(tmp_path: Path, seeded: Seeded) -> None:
    url = seeded.url

    by_name = _run_cli(tmp_path, "cancel", "--unique-name", "nightly", store=url)
    assert by_name.stdout == "cancelled 1 work(s)\n", by_name.stderr
    assert _states(tmp_path, url)[seeded.unique] == "CANCELLED"

    finished = _run_cli(tmp_path, "cancel", seeded.succeeded, store=url)
    assert finished.returncode == 0
    assert "is already SUCCEEDED; nothing to cancel" in finished.stdout

    by_tag = _run_cli(tmp_path, "cancel", "--tag", "batch", store=url)
    assert by_tag.stdout == "cancelled 0 work(s)\n"  # the rest of the batch is finished

    by_id = _run_cli(tmp_path, "cancel", seeded.plain, store=url)
    assert by_id.stdout == "cancelled 1 work(s)\n"
    assert _states(tmp_path, url) == {
        seeded.succeeded: "SUCCEEDED",
        seeded.failed: "FAILED",
        seeded.unique: "CANCELLED",
        seeded.plain: "CANCELLED",
    }

    unknown = _run_cli(tmp_path, "cancel", str(uuid.uuid4()), store=url)
    assert "no work with id" in _one_error_line(unknown, 1)


def test_cancel_reaches_the_dependents_of_a_chain(tmp_path: Path) -> None:
    db = tmp_path / "chain.db"

    async def seed() -> list[str]:
        manager = wm.WorkManager(store=f"sqlite:///{db}", shutdown_grace=0)
        manager.register_worker("later", lambda ctx: None)
        steps = [wm.OneTimeWorkRequest("later", initial_delay=timedelta(days=1)) for _ in "abc"]
        async with manager:
            await manager.begin_with(steps[0]).then(steps[1]).then(steps[2]).enqueue()
        return [str(r.id) for r in steps]

    a, b, c = anyio.run(seed)
    url = f"sqlite:///{db}"
    assert _states(tmp_path, url) == {a: "ENQUEUED", b: "BLOCKED", c: "BLOCKED"}
    proc = _run_cli(tmp_path, "cancel", a, store=url)
    assert proc.returncode == 0, proc.stderr
    assert _states(tmp_path, url) == {a: "CANCELLED", b: "CANCELLED", c: "CANCELLED"}


def test_cancel_all(tmp_path: Path, seeded: Seeded) -> None:
    proc = _run_cli(tmp_path, "cancel", "--all", store=seeded.url)

    assert proc.stdout == "cancelled 2 work(s)\n"
    states = _states(tmp_path, seeded.url)
    assert states[seeded.unique] == states[seeded.plain] == "CANCELLED"


def test_prune_older_than_and_all(tmp_path: Path, seeded: Seeded) -> None:
    url = seeded.url

    assert _run_cli(tmp_path, "prune", "--older-than", "3d", store=url).stdout == (
        "pruned 0 finished work(s)\n"
    )
    assert _run_cli(tmp_path, "prune", "--older-than", "1d", store=url).stdout == (
        "pruned 2 finished work(s)\n"
    )
    assert set(_states(tmp_path, url)) == {seeded.unique, seeded.plain}

    _run_cli(tmp_path, "cancel", seeded.plain, store=url)
    assert _run_cli(tmp_path, "prune", store=url).stdout == "pruned 1 finished work(s)\n"
    assert set(_states(tmp_path, url)) == {seeded.unique}


# -- worker

_APP = """\
import os

import anyio

import wm_async as wm

manager = wm.WorkManager(
    store=os.environ["WM_ASYNC_STORE"], shutdown_grace=float(os.environ.get("GRACE", 1))
)
manager.register_signal("go", wm.Flag(True))


@manager.worker("slow")
async def slow(ctx: wm.WorkContext) -> None:
    while True:  # runs until stopped, reporting progress as it goes
        await ctx.set_progress({"alive": True})
        await anyio.sleep(0.05)


not_manager = 42
"""


class WorkerProcess:
    """``wm-async worker app:manager`` in a subprocess, its output read line by line."""

    def __init__(self, tmp_path: Path, store: str, grace: float, app: str = "app:manager") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wm_async", "worker", app, "--log-level", "debug"],
            cwd=tmp_path,
            env={**_env(tmp_path, store), "GRACE": str(grace)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str) -> str:
        """The first line printed so far or from now on (stdout or stderr, whose relative
        order is not kept) that matches ``pattern``."""
        for line in self.seen:
            if re.search(pattern, line):
                return line
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no line matched {pattern!r}; seen: {self.seen}") from None
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self) -> int:
        return self.proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        """Kill the process if it still runs; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        for reader in self.readers:
            reader.join(timeout=TIMEOUT)  # they end at the pipes' end of file
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def app_store(tmp_path: Path) -> tuple[str, str]:
    """An app module in tmp_path and a store holding one work for its "slow" worker."""
    (tmp_path / "app.py").write_text(_APP)
    db = tmp_path / "wm.db"

    async def seed() -> str:
        # Enqueued while its signal is off here, so it waits for the worker process
        # (whose app turns the signal on).
        manager = wm.WorkManager(store=f"sqlite:///{db}", shutdown_grace=0)
        manager.register_worker("slow", lambda ctx: None)
        manager.register_signal("go", wm.Flag())
        async with manager:
            request = wm.OneTimeWorkRequest("slow", constraints=wm.Constraints(signals={"go"}))
            await manager.enqueue(request)
        return str(request.id)

    work_id: str = anyio.run(seed)
    return f"sqlite:///{db}", work_id


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[type[WorkerProcess]]:
    started: list[WorkerProcess] = []

    class Started(WorkerProcess):
        def __init__(
            self, tmp_path: Path, store: str, grace: float, app: str = "app:manager"
        ) -> None:
            super().__init__(tmp_path, store, grace, app)
            started.append(self)

    yield Started
    for worker in started:
        worker.close()


def _show(tmp_path: Path, work_id: str, store: str) -> dict[str, object]:
    shown = _json(tmp_path, "show", work_id, store=store)
    assert isinstance(shown, dict)
    return shown


def test_worker_stops_gracefully_on_sigterm_and_re_enqueues_the_run(
    tmp_path: Path, app_store: tuple[str, str], start_worker: type[WorkerProcess]
) -> None:
    store, work_id = app_store
    worker = start_worker(tmp_path, store, grace=0.2)
    worker.expect(r"wm-async worker: running .* with workers: slow")
    worker.expect(rf"work {work_id} \('slow'\): - -> RUNNING attempts=1")
    assert _show(tmp_path, work_id, store)["state"] == "RUNNING"  # read while it runs

    worker.signal(signal.SIGTERM)

    assert worker.wait() == 0
    worker.expect(r"SIGTERM: stopping; running work has 0.2s to finish")
    worker.expect(r"wm-async worker: stopped$")
    shown = _show(tmp_path, work_id, store)
    assert (shown["state"], shown["stop_reason"], shown["run_attempt_count"]) == (
        "ENQUEUED",
        "SHUTDOWN",
        1,
    )


def test_worker_second_signal_stops_at_once(
    tmp_path: Path, app_store: tuple[str, str], start_worker: type[WorkerProcess]
) -> None:
    store, work_id = app_store
    worker = start_worker(tmp_path, store, grace=3600)  # the grace alone would outlast the test
    worker.expect(rf"work {work_id} .*-> RUNNING")

    worker.signal(signal.SIGINT)
    worker.expect(r"SIGINT: stopping; running work has 3600s to finish")
    worker.signal(signal.SIGTERM)

    assert worker.wait() == 1
    worker.expect(r"SIGTERM again: stopping at once")
    shown = _show(tmp_path, work_id, store)
    assert (shown["state"], shown["stop_reason"]) == ("ENQUEUED", "SHUTDOWN")


def test_cancel_from_another_process_stops_the_running_work(
    tmp_path: Path, start_worker: type[WorkerProcess]
) -> None:
    # A run that never reports progress: the worker process hears of the cancel.
    (tmp_path / "silent_app.py").write_text(_SILENT_APP)
    store = f"sqlite:///{tmp_path}/wm.db"
    work_id = _seed_waiting(store, "silent")
    worker = start_worker(tmp_path, store, grace=0.2, app="silent_app:manager")
    worker.expect(rf"work {work_id} .*-> RUNNING")

    cancel = _run_cli(tmp_path, "cancel", work_id, store=store)

    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout == (
        "cancelled 1 work(s)\n1 of them were RUNNING: the worker process running each hears "
        "of the cancel at once and stops it\n"
    )
    worker.expect(r"^silent run stopped: CANCELLED_BY_APP$")  # before the SIGTERM below
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    shown = _show(tmp_path, work_id, store)
    assert (shown["state"], shown["stop_reason"]) == ("CANCELLED", "CANCELLED_BY_APP")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing_module:manager", "cannot import 'missing_module': ModuleNotFoundError"),
        ("app:nothing", "module 'app' has no attribute 'nothing'"),
        ("app:not_manager", "app:not_manager is a int, not a WorkManager"),
    ],
)
def test_worker_that_cannot_load_the_app_prints_one_line(
    tmp_path: Path, spec: str, message: str
) -> None:
    (tmp_path / "app.py").write_text(_APP)
    proc = _run_cli(tmp_path, "worker", spec, store=f"sqlite:///{tmp_path}/wm.db")

    assert message in _one_error_line(proc, 1)


# -- PostgreSQL: cancel, and credentials never shown

_SILENT_APP = """\
import os

import anyio

import wm_async as wm

manager = wm.WorkManager(store=os.environ["WM_ASYNC_STORE"], shutdown_grace=0.2)
manager.register_signal("go", wm.Flag(True))


@manager.worker("silent")
async def silent(ctx: wm.WorkContext) -> None:
    try:
        await anyio.sleep_forever()  # never reports progress
    finally:
        print(f"silent run stopped: {ctx.stop_reason.name}", flush=True)
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh schema on the test PostgreSQL server, dropped afterwards."""
    pytest.importorskip("asyncpg")
    anyio.run(require_postgres)
    schema = PgSchema()
    try:
        yield schema.url()
    finally:
        anyio.run(schema.drop)


def _seed_waiting(url: str, worker: str) -> str:
    """Enqueue a work for ``worker`` that this process does not run (its signal is off
    here; the worker process's app turns it on); return its id."""

    async def seed() -> str:
        manager = wm.WorkManager(store=url, shutdown_grace=0)
        manager.register_worker(worker, lambda ctx: None)
        manager.register_signal("go", wm.Flag())
        async with manager:
            request = wm.OneTimeWorkRequest(worker, constraints=wm.Constraints(signals={"go"}))
            await manager.enqueue(request)
        return str(request.id)

    work_id: str = anyio.run(seed)
    return work_id


@pytest.mark.postgres
def test_cancel_on_postgres_stops_a_run_that_never_reports_progress(
    pg_url: str, tmp_path: Path, start_worker: type[WorkerProcess]
) -> None:
    (tmp_path / "silent_app.py").write_text(_SILENT_APP)
    work_id = _seed_waiting(pg_url, "silent")
    worker = start_worker(tmp_path, pg_url, grace=0.2, app="silent_app:manager")
    worker.expect(rf"work {work_id} .*-> RUNNING")

    cancel = _run_cli(tmp_path, "cancel", work_id, store=pg_url)

    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout == (
        "cancelled 1 work(s)\n1 of them were RUNNING: the worker process running each hears "
        "of the cancel at once and stops it\n"
    )
    worker.expect(r"^silent run stopped: CANCELLED_BY_APP$")  # before the SIGTERM below
    shown = _show(tmp_path, work_id, pg_url)
    assert (shown["state"], shown["stop_reason"]) == ("CANCELLED", "CANCELLED_BY_APP")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def _everything(worker: WorkerProcess) -> str:
    """All the worker process printed (it has ended)."""
    worker.close()
    while not worker.lines.empty():
        worker.seen.append(worker.lines.get_nowait())
    return "\n".join(worker.seen)


@pytest.mark.postgres
def test_worker_list_and_show_on_postgres_never_print_the_password(
    pg_url: str, tmp_path: Path, start_worker: type[WorkerProcess]
) -> None:
    from test_redaction import with_secrets

    secrets = [f"pw-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    url = with_secrets(
        pg_url, password=secrets[0], query_password=secrets[1], ssl_password=secrets[2]
    )
    (tmp_path / "app.py").write_text(_APP)
    work_id = _seed_waiting(url, "slow")
    worker = start_worker(tmp_path, url, grace=0.2)
    banner = worker.expect(r"wm-async worker: running .* with workers: slow")
    worker.expect(rf"work {work_id} .*-> RUNNING")

    printed = [
        _run_cli(tmp_path, "list", store=url),
        _run_cli(tmp_path, "show", work_id, store=url),
        _run_cli(tmp_path, "show", str(uuid.uuid4()), store=url),  # an error line
    ]
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0

    assert [p.returncode for p in printed] == [0, 0, 1]
    assert re.search(
        r"PostgresStore\('postgresql://postgres:\*\*\*@[^']*&password=\*\*\*&"
        r"sslpassword=\*\*\*'",
        banner,
    ), banner
    everything = _everything(worker) + "".join(p.stdout + p.stderr for p in printed)
    assert "WorkManager started (store=PostgresStore(" in everything  # the INFO log line
    for secret in secrets:
        assert secret not in everything


_SECRET = "s3cret-ZQ81"


@pytest.mark.parametrize(
    ("store", "status", "message"),
    [
        (f"mysql://u:{_SECRET}@h/db", 2, "unknown scheme"),
        (f"memory://u:{_SECRET}@x", 2, "holds works only inside the process"),
        (f"postgresql://u:{_SECRET}@[bad/db", 2, "not a valid URL"),
        (f"postgresql://u:{_SECRET}\uff03@h/db", 2, "not a valid URL"),
        (f"postgresql://postgres:{_SECRET}@127.0.0.1:1/test?sslpassword={_SECRET}", 1, "conn"),
    ],
)
def test_a_refused_or_unreachable_store_prints_no_password(
    tmp_path: Path, store: str, status: int, message: str
) -> None:
    pytest.importorskip("asyncpg")
    for args in (["list"], ["list", "--store", store]):  # from WM_ASYNC_STORE, from --store
        proc = _run_cli(tmp_path, *args, store=store)

        line = _one_error_line(proc, status)
        assert message in line
        assert "***" in line or status == 1  # a connection error does not quote the URL
        assert _SECRET not in proc.stdout + proc.stderr
