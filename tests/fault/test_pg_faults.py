"""PostgreSQL faults under load: the server restarted mid-run, and every connection of
the managers killed every 0.3 s, while several manager processes drain a backlog of
``max_attempts=1`` works and keep adding new ones.

After the faults stop and every work has finished, the invariants:

- no acknowledged enqueue was lost: every work whose enqueue returned is in the store;
- no work FAILED without a run: a ``max_attempts=1`` work ends FAILED only when a run of
  it really started and was then cut off (its lease lost to the outage);
- no finished work ran again, and no work ran twice: with ``max_attempts=1`` each work
  has at most one run, and a SUCCEEDED work exactly one;
- a SIGKILLed process's RUNNING works leave RUNNING within lease + one rescue interval
  of its death, whatever the traffic (the kill-storm test kills one process mid-storm).

The server-restart test is marked ``pg_restart``: restarting the server disturbs every
other test using it, so the test collection runs these last, one at a time, and the
server is left running. Longer runs are opt-in: ``WM_ASYNC_PG_RESTARTS`` (default 2)
restarts, ``WM_ASYNC_KILL_STORM_SECONDS`` (default 10) seconds of connection kills,
``WM_ASYNC_FAULT_TRAFFIC`` (default 60) new works per second meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO

import anyio
import attrs
import pytest
from conftest import PG_DSN, PgSchema, pg_execute, require_postgres

import wm_async as wm
from wm_async._core.record import WorkRecord
from wm_async.stores.postgres import PostgresStore

CHILD = Path(__file__).with_name("pg_load.py")
RESTARTS = int(os.environ.get("WM_ASYNC_PG_RESTARTS", "2"))
STORM_SECONDS = float(os.environ.get("WM_ASYNC_KILL_STORM_SECONDS", "10"))
#: New works per second the processes enqueue while the faults go on (their own load,
#: beside the backlog of 3,000 that 3 processes of 10 runs of 100 ms drain in ~10 s).
TRAFFIC = float(os.environ.get("WM_ASYNC_FAULT_TRAFFIC", "60"))
#: The lease the children use (short, so rescues happen within the test).
LEASE = 2.0


@pytest.fixture
async def schema() -> AsyncIterator[PgSchema]:
    await require_postgres()
    created = PgSchema()
    try:
        yield created
    finally:
        await _ensure_server()
        await created.drop(check_leaks=False)


async def _ensure_server() -> None:
    """Wait until the server accepts connections (it may be restarting)."""
    with anyio.fail_after(60):
        while True:
            try:
                await pg_execute("SELECT 1")
                return
            except Exception:  # noqa: BLE001  # not up yet
                await anyio.sleep(0.2)


@attrs.define
class Load:
    """Manager processes draining a schema, and what they logged."""

    schema: PgSchema
    tmp: Path
    processes: int
    traffic: float = 0.0
    work_ms: float = 100.0
    concurrency: int = 10
    procs: list[subprocess.Popen[bytes]] = attrs.field(factory=list)
    #: The works a SIGKILLed process held RUNNING when it died.
    killed_with: set[str] = attrs.field(factory=set)

    @property
    def stop_file(self) -> Path:
        return self.tmp / "stop"

    def log(self, i: int) -> Path:
        return self.tmp / f"p{i}.log"

    def start(self) -> None:
        count_dsn = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}application_name={self.schema.app}x"
        with (self.tmp / "children.out").open("ab") as out:
            for i in range(self.processes):
                self._spawn(i, count_dsn, out)

    def _spawn(self, i: int, count_dsn: str, out: IO[bytes]) -> None:
        args = [
            "--url", self.schema.url(), "--schema", self.schema.name, "--owner", f"p{i}",
            "--count-dsn", count_dsn, "--log", str(self.log(i)),
            "--stop", str(self.stop_file), "--lease", str(LEASE),
            "--concurrency", str(self.concurrency), "--work-ms", str(self.work_ms),
            "--traffic", str(self.traffic / self.processes),
        ]  # fmt: skip
        self.procs.append(
            subprocess.Popen(
                [sys.executable, str(CHILD), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(CHILD.parent.parent.parent)},
            )
        )

    async def finish(self, limit: float) -> None:
        """Ask the children to stop once every work has finished; wait for them."""
        await anyio.Path(self.stop_file).touch()
        try:
            with anyio.fail_after(limit):
                for p in self.procs:
                    await anyio.to_thread.run_sync(p.wait, abandon_on_cancel=True)
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        output = (self.tmp / "children.out").read_text(errors="replace")[-3000:]
        alive = [p.returncode for p in self.procs if p.returncode not in (0, -signal.SIGKILL)]
        assert not alive, f"children failed: {alive}\n{output}"

    def events(self) -> tuple[Counter[str], set[str]]:
        """Runs per work id, and the ids whose enqueue was acknowledged."""
        runs: Counter[str] = Counter()
        acknowledged: set[str] = set()
        for i in range(self.processes):
            path = self.log(i)
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                parts = line.split()
                if parts[:1] == ["run"] and len(parts) == 4:
                    runs[parts[1]] += 1
                elif parts[:1] == ["enq"] and len(parts) == 2:
                    acknowledged.add(parts[1])
        return runs, acknowledged


async def _backlog(schema: PgSchema, n: int) -> set[str]:
    """``n`` due works with max_attempts=1, stored before the children start."""
    async with PostgresStore(schema.url()) as store:
        now = time.time()
        records = [
            WorkRecord.from_request(wm.OneTimeWorkRequest("job", max_attempts=1), now=now)
            for _ in range(n)
        ]
        for i in range(0, n, 1000):
            await store.insert(records[i : i + 1000])
    return {r.id for r in records}


@attrs.frozen
class Outcome:
    works: int
    succeeded: int
    failed_after_a_run: int
    held_by_the_killed_process: int


async def _check(load: Load, backlog: set[str]) -> Outcome:
    """The invariants. A work the SIGKILLed process held RUNNING when it died
    (``load.killed_with``) may end FAILED without a run of its own: the process may have
    claimed it and died before calling its worker, which no other process can tell from
    a death mid-run, so the attempt counts (``max_attempts=1``: FAILED, stop reason
    UNKNOWN)."""
    runs, acknowledged = load.events()
    rows = {
        str(work_id): (str(state), str(error_type))
        for work_id, state, error_type in await pg_execute(
            f'SELECT id, state, error_type FROM "{load.schema.name}".wm_work'
        )
    }
    lost = (backlog | acknowledged) - rows.keys()
    assert not lost, f"{len(lost)} acknowledged work(s) lost, e.g. {sorted(lost)[:3]}"
    states = Counter(state for state, _ in rows.values())
    assert set(states) <= {"SUCCEEDED", "FAILED"}, states
    failed_unrun = [
        w
        for w, (s, _) in rows.items()
        if s == "FAILED" and runs[w] == 0 and w not in load.killed_with
    ]
    assert not failed_unrun, f"{len(failed_unrun)} work(s) FAILED without a run"
    ran_twice = [w for w, n in runs.items() if n > 1]
    assert not ran_twice, f"{len(ran_twice)} work(s) ran more than once"
    never_ran = [w for w, (s, _) in rows.items() if s == "SUCCEEDED" and runs[w] != 1]
    assert not never_ran, f"{len(never_ran)} SUCCEEDED work(s) without a run"
    return Outcome(
        works=len(rows),
        succeeded=states["SUCCEEDED"],
        failed_after_a_run=states["FAILED"],
        held_by_the_killed_process=len(load.killed_with),
    )


async def _under_fault(
    schema: PgSchema,
    tmp_path: Path,
    fault: Callable[[Load], Awaitable[None]],
    *,
    backlog: int,
    traffic: float,
) -> Outcome:
    ids = await _backlog(schema, backlog)
    load = Load(schema, tmp_path, processes=3, traffic=traffic)
    load.start()
    try:
        await fault(load)
        await _ensure_server()
        await load.finish(300)
    finally:
        for p in load.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outcome = await _check(load, ids)
    print(f"\n{fault.__name__}: {outcome}")  # noqa: T201  # the figures of a long run
    return outcome


# -- server restarts ---------------------------------------------------------------------------


def _restart_server() -> None:
    version = max(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.pg_restart
@pytest.mark.postgres
@pytest.mark.timeout(900 + RESTARTS * 30)
async def test_server_restarts_under_load_fail_no_work_unrun(
    schema: PgSchema, tmp_path: Path
) -> None:
    if not await anyio.Path("/etc/postgresql").is_dir():
        pytest.skip("needs a local PostgreSQL cluster managed by pg_ctlcluster")

    async def restarts(load: Load) -> None:
        for _ in range(RESTARTS):
            await anyio.sleep(3.0)  # let the processes get busy
            await anyio.to_thread.run_sync(_restart_server)
            await _ensure_server()

    outcome = await _under_fault(schema, tmp_path, restarts, backlog=3000, traffic=TRAFFIC)
    assert outcome.succeeded > 0


# -- connection-kill storms --------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(900 + STORM_SECONDS * 2)
async def test_connection_kill_storm_under_load_fails_no_work_unrun(
    schema: PgSchema, tmp_path: Path
) -> None:
    """Every connection of the managers is terminated every 0.3 s; midway one manager
    is SIGKILLed, and its RUNNING works must leave RUNNING within lease + one rescue
    interval, storm and traffic notwithstanding."""
    rescued_after: list[float] = []

    async def storm(load: Load) -> None:
        deadline = time.monotonic() + STORM_SECONDS
        killed = False
        victim: list[str] = []
        killed_at = 0.0
        give_up = deadline + 30
        while time.monotonic() < deadline or (
            killed and victim and not rescued_after and time.monotonic() < give_up
        ):
            await anyio.sleep(0.3)
            if time.monotonic() < deadline:
                await pg_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    schema.app,
                )
            if not killed and time.monotonic() > deadline - STORM_SECONDS / 2:
                load.procs[0].send_signal(signal.SIGKILL)
                load.procs[0].wait()
                killed_at = time.monotonic()
                killed = True
                victim = [
                    str(w)
                    for (w,) in await pg_execute(
                        f"SELECT id FROM \"{schema.name}\".wm_work WHERE state = 'RUNNING' "
                        "AND owner = 'p0'"
                    )
                ]
                load.killed_with.update(victim)
            elif killed and victim and not rescued_after:
                # (Seen again: a claim the dead process's backend committed after the
                # kill belongs to the victim's too.)
                still = [
                    str(w)
                    for (w,) in await pg_execute(
                        f"SELECT id FROM \"{schema.name}\".wm_work WHERE state = 'RUNNING' "
                        "AND owner = 'p0'"
                    )
                ]
                load.killed_with.update(still)
                if not still:
                    rescued_after.append(time.monotonic() - killed_at)
        assert killed

    outcome = await _under_fault(schema, tmp_path, storm, backlog=3000, traffic=TRAFFIC)
    print(f"rescued {rescued_after} s after the kill")  # noqa: T201
    assert outcome.held_by_the_killed_process > 0  # (the backlog outlasts the kill)
    if rescued_after:  # the victim held runs when it died
        # A lease, one rescue interval (half a lease by default) and slack for a busy
        # 2-core machine; before the fix a busy cluster never rescued until it idled.
        assert rescued_after[0] <= LEASE + LEASE / 2 + 3.0, rescued_after
