"""PostgreSQL only: schema options and migrations, leases, several managers on one
database (in this process, then as OS processes: drain, SIGKILL, lost connections, a
unique-name race). The semantic suites also run on PostgreSQL via the ``store`` and
``store_url`` fixtures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from conftest import PG_DSN, PgSchema, pg_execute

import wm_async as wm
from wm_async._api.requests import OneTimeWorkRequest
from wm_async._core import lifecycle as lc
from wm_async._core.model import (
    StopReason,
    WorkState,
)
from wm_async._core.record import WorkRecord
from wm_async.stores import (
    ClaimParams,
    open_store,
)

pytestmark = pytest.mark.postgres

asyncpg = pytest.importorskip("asyncpg")
from wm_async.stores._postgres_sql import migrations
from wm_async.stores.postgres import PostgresStore  # after the skip: needs asyncpg

NOW = 1_700_000_000.0
CHILD = Path(__file__).with_name("_pg_child.py")


def record(worker: str = "w", *, at: float = NOW, **kw: object) -> WorkRecord:
    request = OneTimeWorkRequest(worker, **kw)  # type: ignore[arg-type]
    return WorkRecord.from_request(request, now=at)


# -- configuration and schema ------------------------------------------------------------


def test_url_options_and_arguments() -> None:
    store = open_store("postgresql://u@h/db?schema=myapp&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert store.schema == "myapp"
    assert store.lease_duration == 30.0
    assert "schema=" not in store._dsn
    assert "sslmode=disable" in store._dsn
    assert PostgresStore("postgresql://h/db").schema == "wm_async"
    assert PostgresStore("postgresql://h/db?schema=a", schema="b").schema == "b"
    assert "secret" not in repr(PostgresStore("postgresql://u:secret@h/db"))
    for bad in ('a"b', "1abc", "", "x" * 49, "a-b", "a;drop"):
        with pytest.raises(wm.InvalidRequestError, match="schema"):
            PostgresStore("postgresql://h/db", schema=bad)
    with pytest.raises(wm.InvalidRequestError, match="lease"):
        PostgresStore("postgresql://h/db", lease=0)
    with pytest.raises(wm.InvalidRequestError, match="clock"):
        PostgresStore("postgresql://h/db", clock="wall")  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError, match="dsn"):
        PostgresStore("mysql://h/db")


def test_the_one_round_trip_recording_writes_every_runtime_column() -> None:
    """wm_apply (a migration, so fixed once released) writes what the transaction's
    UPDATE writes: a new runtime column needs a migration replacing it."""
    from wm_async.stores._codec import RUNTIME_COLUMNS

    script = next(text for _, text in migrations() if "FUNCTION wm_apply(" in text)
    for column in RUNTIME_COLUMNS:
        assert f"p_{column} " in script
        assert f"{column} = v.{column}" in script


async def test_concurrent_opens_migrate_once(schema: PgSchema) -> None:
    stores = [PostgresStore(schema.url(), pool_size=2) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for s in stores:
            tg.start_soon(s.open)
    try:
        rows = await pg_execute(f'SELECT version FROM "{schema.name}".wm_schema ORDER BY 1')
        assert rows == [(n,) for n, _ in migrations()]  # each applied once
        await stores[0].insert([work := record()])
        assert await stores[3].get([work.id]) == [work]
    finally:
        for s in stores:
            await s.close()


async def test_schemas_keep_apps_apart(schema: PgSchema) -> None:
    other = PgSchema()
    try:
        async with (
            PostgresStore(schema.url()) as a,
            PostgresStore(other.url(), schema=other.name) as b,
        ):
            await a.insert([work := record()])
            assert await b.get([work.id]) == []
    finally:
        await other.drop()


async def test_newer_schema_is_refused_untouched(schema: PgSchema) -> None:
    async with PostgresStore(schema.url()):
        pass
    await pg_execute(f'INSERT INTO "{schema.name}".wm_schema (version) VALUES (999)')
    with pytest.raises(wm.StoreCorruptError, match="newer wm_async"):
        await PostgresStore(schema.url()).open()


async def test_unreachable_server_raises_store_error() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", retry_timeout=0.2)
    with pytest.raises(wm.StoreError) as info:
        await store.open()
    assert info.value.__cause__ is not None


async def test_driver_errors_become_store_errors(schema: PgSchema) -> None:
    async with PostgresStore(schema.url()) as store:
        await pg_execute(f'DROP TABLE "{schema.name}".wm_work')
        with pytest.raises(wm.StoreError, match="reading") as info:
            await store.get(["x"])
        assert isinstance(info.value.__cause__, asyncpg.PostgresError)


# -- leases (VirtualClock time passed as `now`) -----------------------------------------


async def test_expired_leases_are_requeued_and_live_ones_kept(schema: PgSchema) -> None:
    async with PostgresStore(schema.url(), lease=30) as store:
        await store.insert([a := record(), b := record()])
        first = await store.claim_due(ClaimParams(now=NOW, limit=1, owner="A"))
        second = await store.claim_due(ClaimParams(now=NOW + 20, limit=1, owner="B"))
        assert [r.id for r in first.records + second.records] == [a.id, b.id]

        assert await store.requeue_orphans(now=NOW + 29) == []  # nobody's lease expired
        assert await store.renew_leases(owner="B", ids=[b.id], now=NOW + 40) == set()
        rescued = await store.requeue_orphans(now=NOW + 31)  # A's expired, B's renewed
        assert [r.id for r in rescued] == [a.id]
        assert rescued[0].state is WorkState.ENQUEUED
        assert rescued[0].stop_reason is StopReason.UNKNOWN
        assert rescued[0].run_attempt_count == 1
        assert await store.requeue_orphans(now=NOW + 31) == []  # idempotent

        # A lost its lease: renewing says so, and its late result is not recorded.
        assert await store.renew_leases(owner="A", ids=[a.id], now=NOW + 32) == {a.id}
        late = lc.finish(first.records[0], lc.Succeeded(), now=NOW + 33)
        assert await store.apply([late]) == []
        again = await store.claim_due(ClaimParams(now=NOW + 34, limit=5, owner="C"))
        assert [(r.id, r.run_attempt_count) for r in again.records] == [(a.id, 2)]


async def test_a_result_is_recorded_only_by_the_lease_owner(schema: PgSchema) -> None:
    async with PostgresStore(schema.url()) as store:
        await store.insert([work := record()])
        mine = (await store.claim_due(ClaimParams(now=NOW, limit=1, owner="A"))).records[0]
        forged = lc.finish(wm_evolve_owner(mine, "B"), lc.Succeeded(), now=NOW + 1)
        assert await store.apply([forged]) == []
        done = lc.finish(mine, lc.Succeeded(), now=NOW + 1)
        assert await store.apply([done]) == [done.after]
        assert (await store.get([work.id]))[0].state is WorkState.SUCCEEDED


async def test_database_clock_ignores_a_skewed_caller_clock(schema: PgSchema) -> None:
    # A host clock far ahead must neither start work early nor rescue a live lease.
    async with PostgresStore(schema.url(), clock="database", lease=30) as store:
        rows = await pg_execute("SELECT extract(epoch from now())::float8")
        db_now = float(str(rows[0][0]))
        await store.insert([later := record(at=db_now + 600), now_due := record(at=db_now)])
        ahead = db_now + 3600
        claimed = await store.claim_due(ClaimParams(now=ahead, limit=10, owner="A"))
        assert [r.id for r in claimed.records] == [now_due.id]
        # next_due is given on the caller's clock: its 600 s, shifted by the skew
        assert claimed.next_due is not None
        assert abs(claimed.next_due - (ahead + 600)) < 60
        assert await store.requeue_orphans(now=ahead) == []
        assert (await store.get([later.id]))[0].state is WorkState.ENQUEUED


def wm_evolve_owner(r: WorkRecord, owner: str) -> WorkRecord:
    from wm_async._core.record import evolve

    return evolve(r, owner=owner)


# -- several managers in this process (real time, bounded) -------------------------------


async def test_cancel_from_another_manager_stops_the_run(schema: PgSchema) -> None:
    url = schema.url()
    runner = wm.WorkManager(PostgresStore(url, poll_interval=0.2), shutdown_grace=0)
    other = wm.WorkManager(PostgresStore(url, poll_interval=0.2), shutdown_grace=0)
    started, stopped, reasons = anyio.Event(), anyio.Event(), []

    @runner.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            reasons.append(ctx.stop_reason)
            stopped.set()

    other.register_worker("w", work)
    with anyio.fail_after(60):
        async with runner, other:
            req = wm.OneTimeWorkRequest("w")
            await runner.enqueue(req)
            await started.wait()
            assert await other.cancel_work_by_id(req.id)
            got = await runner.wait(req.id)
            # The run stops when its process hears of the cancel (a notification), which
            # may come after wait() read the CANCELLED state: wait for it before leaving,
            # or the shutdown would stop the run first.
            await stopped.wait()
    assert got.state is wm.WorkState.CANCELLED
    assert reasons == [wm.StopReason.CANCELLED_BY_APP]


async def test_a_replace_from_another_manager_stops_the_run_at_once(schema: PgSchema) -> None:
    """REPLACE cancels the name's running work, then deletes it: the process running it
    re-reads nothing, and stops the run when it hears of the cancel (not at its next
    lease renewal, half a lease later, as LEASE_LOST)."""
    url = schema.url()
    runner = wm.WorkManager(PostgresStore(url, poll_interval=30), shutdown_grace=0)
    other = wm.WorkManager(PostgresStore(url, poll_interval=30), shutdown_grace=0)
    started, stopped, reasons = anyio.Event(), anyio.Event(), []

    @runner.worker("hold")
    async def hold(ctx: wm.WorkContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            reasons.append(ctx.stop_reason)
            stopped.set()

    # The old work needs a signal that holds only on the runner's side, the new one a
    # signal that holds nowhere: only the runner runs the old one, nobody the new one.
    mine = wm.signals.Flag()
    mine.set()
    runner.register_signal("mine", mine)
    other.register_worker("hold", hold)
    for manager in (runner, other):
        manager.register_signal("side", wm.signals.Flag())
    other.register_signal("mine", wm.signals.Flag())
    with anyio.fail_after(60):
        async with runner, other:
            old = wm.OneTimeWorkRequest("hold", constraints=wm.Constraints(signals={"mine"}))
            await runner.enqueue_unique_work("name", "REPLACE", old)
            await started.wait()
            new = wm.OneTimeWorkRequest("hold", constraints=wm.Constraints(signals={"side"}))
            assert await other.enqueue_unique_work("name", "REPLACE", new)
            with anyio.fail_after(10):  # the lease (30 s) is renewed every 15 s
                await stopped.wait()
    assert reasons == [wm.StopReason.CANCELLED_BY_APP]


async def test_a_run_whose_lease_was_taken_over_stops_with_lease_lost(
    schema: PgSchema,
) -> None:
    """A process that stalled past its lease finds, at its next renewal, that another
    process owns the work now: its run is stopped (LEASE_LOST) and its late result is
    not recorded over the new owner's."""
    url = schema.url()
    manager = wm.WorkManager(PostgresStore(url, lease=1.0, poll_interval=0.2), shutdown_grace=0)
    started, stopped, reasons = anyio.Event(), anyio.Event(), []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            reasons.append(ctx.stop_reason)
            stopped.set()

    with anyio.fail_after(60):
        async with manager:
            req = wm.OneTimeWorkRequest("w")
            await manager.enqueue(req)
            await started.wait()
            # What a rescuing process does once the lease expired: take the work over.
            await pg_execute(
                f'UPDATE "{schema.name}".wm_work SET owner = $1, '
                "run_attempt_count = run_attempt_count + 1 WHERE id = $2",
                "another-process",
                str(req.id),
            )
            await stopped.wait()  # the next renewal (every half lease) notices
        rows = await pg_execute(
            f'SELECT state, owner, run_attempt_count FROM "{schema.name}".wm_work WHERE id = $1',
            str(req.id),
        )
    assert reasons == [wm.StopReason.LEASE_LOST]
    assert rows == [("RUNNING", "another-process", 2)]  # the new owner's run is untouched


async def test_wait_and_watch_see_other_processes_changes(schema: PgSchema) -> None:
    url = schema.url()
    runner = wm.WorkManager(PostgresStore(url, poll_interval=0.2), shutdown_grace=0)
    observer = wm.WorkManager(PostgresStore(url, poll_interval=0.2), shutdown_grace=0)
    release = anyio.Event()
    # The work needs a signal that holds only on the runner's side, so the observer (which
    # has no worker for it) never claims it: what it sees comes from the other manager.
    runner_side = wm.signals.Flag()
    runner_side.set()
    runner.register_signal("side", runner_side)
    observer.register_signal("side", wm.signals.Flag())

    @runner.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        await release.wait()
        return wm.Result.success({"n": 1})

    with anyio.fail_after(60):
        async with observer:
            req = wm.OneTimeWorkRequest("w", constraints=wm.Constraints(signals={"side"}))
            seen: list[wm.WorkState] = []
            async with observer.watch(wm.WorkQuery(ids={req.id})) as infos, runner:
                await runner.enqueue(req)
                async for info in infos:
                    seen.append(info.state)
                    if info.state is wm.WorkState.RUNNING:
                        release.set()
                    if info.is_finished:
                        break
            got = await observer.wait(req.id)
    assert got.state is wm.WorkState.SUCCEEDED
    assert dict(got.output) == {"n": 1}
    assert seen[-1] is wm.WorkState.SUCCEEDED
    assert wm.WorkState.RUNNING in seen


async def test_a_work_enqueued_elsewhere_does_not_run_where_its_signal_does_not_hold(
    schema: PgSchema,
) -> None:
    """A process claims a work enqueued by another one before it ever watched the signal
    that work needs (its claim parks only works needing signals it knows to be false):
    the run is undone before the worker starts, without spending an attempt, and the
    work waits for the signal like a work enqueued here."""
    url = schema.url()
    here = wm.signals.Flag()  # false
    manager = wm.WorkManager(PostgresStore(url, poll_interval=0.2), shutdown_grace=0)
    manager.register_signal("side", here)
    ran: list[int] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.append(ctx.run_attempt_count)

    request = OneTimeWorkRequest("w", constraints=wm.Constraints(signals={"side"}))
    with anyio.fail_after(30):
        async with manager:
            async with manager.watch(wm.WorkQuery(ids={request.id})) as infos:
                # Enqueued by another process (a bare store): this manager hears of it by
                # a notification and claims it.
                async with PostgresStore(url) as elsewhere:
                    await elsewhere.insert([WorkRecord.from_request(request, now=time.time())])
                async for info in infos:
                    if info.stop_reason is wm.StopReason.CONSTRAINT_SIGNAL:
                        break
            assert info.state is wm.WorkState.ENQUEUED
            assert info.run_attempt_count == 0
            assert ran == []
            here.set()
            done = await manager.wait(request.id)
    assert done.state is wm.WorkState.SUCCEEDED
    assert ran == [0]


async def test_idle_manager_wakes_for_work_enqueued_elsewhere(schema: PgSchema) -> None:
    # Both sides poll only every 30 s: a prompt start needs the notification. The work
    # needs a signal that holds only on the worker side, so the producer cannot run it.
    url = schema.url()
    worker_side = wm.WorkManager(PostgresStore(url, poll_interval=30), shutdown_grace=0)
    producer = wm.WorkManager(PostgresStore(url, poll_interval=30), shutdown_grace=0)
    ran = anyio.Event()
    here = wm.signals.Flag()
    here.set()
    worker_side.register_signal("side", here)
    producer.register_signal("side", wm.signals.Flag())

    @worker_side.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        ran.set()

    producer.register_worker("w", work)
    async with worker_side:
        await anyio.sleep(0.2)  # let it claim (nothing) and fall asleep
        async with producer:
            request = wm.OneTimeWorkRequest("w", constraints=wm.Constraints(signals={"side"}))
            with anyio.fail_after(10):  # well under the 30 s poll
                await producer.enqueue(request)
                await ran.wait()
                got = await producer.wait(request.id)
    assert got.state is wm.WorkState.SUCCEEDED


async def test_a_period_runs_once_across_managers(schema: PgSchema) -> None:
    url = schema.url()
    managers = [
        wm.WorkManager(PostgresStore(url, poll_interval=0.1), shutdown_grace=0) for _ in range(3)
    ]
    runs: list[int] = []
    enough = anyio.Event()

    async def work(ctx: wm.WorkContext) -> None:
        runs.append(ctx.run_attempt_count)
        if len(runs) >= 6:
            enough.set()

    for m in managers:
        m.register_worker("w", work)
    request = wm.PeriodicWorkRequest("w", repeat_interval=0.3, flex_interval=0.3)
    with anyio.fail_after(60):
        async with managers[0], managers[1], managers[2]:
            await managers[0].enqueue(request)
            await enough.wait()
            await managers[2].cancel_work_by_id(request.id)
            got = await managers[1].wait(request.id)
    # Each finished period was run once: as many runs as periods (plus at most the one
    # running when it was cancelled).
    assert got.period_count <= len(runs) <= got.period_count + 1
    assert runs == [0] * len(runs)


# -- several OS processes ----------------------------------------------------------------


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # Output goes to a file: a pipe nobody reads would fill up and block the child.
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(CHILD.parent.parent)},
        )


async def _prepare(schema: PgSchema, n: int) -> None:
    """Create the schema with ``n`` due works and the executions table."""
    async with PostgresStore(schema.url()) as store:
        now = time.time()
        records = [record("job", at=now) for _ in range(n)]
        for i in range(0, n, 1000):
            await store.insert(records[i : i + 1000])
    await pg_execute(
        f'CREATE TABLE "{schema.name}".executions (work_id text NOT NULL, attempt int NOT NULL, '
        "owner text NOT NULL)"
    )


async def _wait_all(procs: list[subprocess.Popen[bytes]], limit: float) -> None:
    with anyio.fail_after(limit):
        for p in procs:
            await anyio.to_thread.run_sync(p.wait, abandon_on_cancel=True)


def _unique_args(schema: PgSchema, owner: str, start_at: float) -> list[str]:
    return [
        "unique", "--url", schema.url(), "--schema", schema.name, "--owner", owner,
        "--n", "25", "--start-at", str(start_at),
    ]  # fmt: skip


def _drain_args(schema: PgSchema, owner: str, **options: object) -> list[str]:
    args = [
        "drain", "--url", schema.url(), "--schema", schema.name, "--owner", owner,
        "--exec-dsn", f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}application_name={schema.app}x",
    ]  # fmt: skip
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


async def _check_succeeded(schema: PgSchema, n: int) -> dict[str, list[tuple[int, str]]]:
    states = {
        str(state): number
        for state, number in await pg_execute(
            f'SELECT state, count(*) FROM "{schema.name}".wm_work GROUP BY state'
        )
    }
    assert states == {"SUCCEEDED": n}
    runs: dict[str, list[tuple[int, str]]] = {}
    for work_id, attempt, owner in await pg_execute(
        f'SELECT work_id, attempt, owner FROM "{schema.name}".executions'
    ):
        runs.setdefault(str(work_id), []).append((int(str(attempt)), str(owner)))
    assert len(runs) == n  # every work executed
    return runs


def _kill_all(procs: list[subprocess.Popen[bytes]], log: Path) -> str:
    """Kill what still runs; return the end of the children's output."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_four_processes_drain_5000_works_exactly_once(
    schema: PgSchema, tmp_path: Path
) -> None:
    log = tmp_path / "children.log"
    n = 5000
    await _prepare(schema, n)
    procs = [_spawn(_drain_args(schema, f"p{i}"), log) for i in range(4)]
    try:
        await _wait_all(procs, 300)
    finally:
        errors = _kill_all(procs, log)
    assert [p.returncode for p in procs] == [0] * 4, errors
    runs = await _check_succeeded(schema, n)
    assert all(len(r) == 1 for r in runs.values())  # executed exactly once
    owners = {o for r in runs.values() for _, o in r}
    assert len(owners) > 1  # the work was shared


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_sigkilled_process_works_rerun_elsewhere_none_lost(
    schema: PgSchema, tmp_path: Path
) -> None:
    log = tmp_path / "children.log"
    n = 1500
    await _prepare(schema, n)
    opts = {"lease": 2, "work_ms": 20, "concurrency": 20}
    procs = [_spawn(_drain_args(schema, f"p{i}", **opts), log) for i in range(4)]
    victim = "p0"
    try:
        with anyio.fail_after(120):  # until the victim holds running works mid-run
            while True:
                await anyio.sleep(0.1)
                rows = await pg_execute(
                    f'SELECT count(*) FROM "{schema.name}".wm_work '
                    "WHERE state = 'RUNNING' AND owner = $1",
                    victim,
                )
                done = await pg_execute(f'SELECT count(*) FROM "{schema.name}".executions')
                if rows[0][0] and int(str(done[0][0])) > n // 10:
                    break
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        orphans = await pg_execute(
            f"SELECT id FROM \"{schema.name}\".wm_work WHERE state = 'RUNNING' AND owner = $1",
            victim,
        )
        assert orphans  # the victim died mid-run
        await _wait_all(procs[1:], 300)
    finally:
        errors = _kill_all(procs, log)
    assert [p.returncode for p in procs[1:]] == [0] * 3, errors
    runs = await _check_succeeded(schema, n)
    final = {
        str(work_id): int(str(attempts))
        for work_id, attempts in await pg_execute(
            f'SELECT id, run_attempt_count FROM "{schema.name}".wm_work'
        )
    }
    rerun = 0
    for (work_id,) in orphans:
        if final[str(work_id)] >= 2:  # run again by another process
            rerun += 1
            continue
        # Or its run had ended: the outcome the victim sent just before the kill was
        # still committed by the server (a statement a killed client sent runs to its
        # end), after the orphans were read. It ran once, by the victim, and never again.
        assert runs[str(work_id)] == [(0, victim)], (work_id, runs[str(work_id)])
    assert rerun, "some of the victim's runs were cut short and run again"
    for work_id, executions in runs.items():
        # The execution that succeeded is the last attempt; none ran after it (a work
        # that SUCCEEDED never runs again); earlier ones were the victim's, cut short.
        attempts = sorted(a for a, _ in executions)
        assert attempts[-1] == final[work_id] - 1
        assert len(set(attempts)) == len(attempts)
        for attempt, owner in executions:
            if attempt != final[work_id] - 1:
                assert owner == victim


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_terminated_connections_are_survived(schema: PgSchema, tmp_path: Path) -> None:
    log = tmp_path / "children.log"
    n = 2000
    await _prepare(schema, n)
    opts = {"lease": 3, "work_ms": 50, "concurrency": 20}
    procs = [_spawn(_drain_args(schema, f"p{i}", **opts), log) for i in range(4)]
    terminated = rounds = 0
    try:
        # Three rounds of kills while the drain is under way (the children's start-up may
        # be slow on a loaded machine, and the drain quick: wait for the first runs, and
        # stop once nothing is left to drain).
        with anyio.fail_after(120):
            while rounds < 3:
                await anyio.sleep(0.25)
                done = await pg_execute(f'SELECT count(*) FROM "{schema.name}".executions')
                if int(str(done[0][0])) == 0:
                    continue
                if int(str(done[0][0])) >= n:
                    break
                # Only this test's store connections (the executions pool has another name).
                rows = await pg_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    schema.app,
                )
                terminated += sum(1 for (ok,) in rows if ok)
                rounds += 1
        await _wait_all(procs, 300)
    finally:
        errors = _kill_all(procs, log)
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert terminated >= 4  # at least each process's listener, each time more
    await _check_succeeded(schema, n)  # all finished; a run cut off may have run twice


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_unique_keep_race_across_processes_leaves_one_work(
    schema: PgSchema, tmp_path: Path
) -> None:
    log = tmp_path / "children.log"
    async with PostgresStore(schema.url()):
        pass  # create the schema before the race
    start_at = time.time() + 8
    procs = [_spawn(_unique_args(schema, f"u{i}", start_at), log) for i in range(4)]
    try:
        await _wait_all(procs, 200)
    finally:
        errors = _kill_all(procs, log)
    assert [p.returncode for p in procs] == [0] * 4, errors
    rows = await pg_execute(
        f"SELECT state FROM \"{schema.name}\".wm_work WHERE unique_name = 'the-name'"
    )
    assert rows == [("ENQUEUED",)]


async def test_appends_from_two_managers_form_one_chain_while_it_runs(schema: PgSchema) -> None:
    """Chains across processes: two managers on one database APPEND to one name while
    both run the works. Each APPEND reads the leaves while another manager may be
    finishing one of them; the prerequisites are locked FOR SHARE at insert, so a
    finish either precedes the insert (the new work starts ENQUEUED) or sees its edge
    (and unblocks it). None may stay BLOCKED, and the chain is one line of 40."""
    url = schema.url()
    managers = [
        wm.WorkManager(PostgresStore(url, poll_interval=0.2), shutdown_grace=0) for _ in range(2)
    ]

    async def link(ctx: wm.WorkContext) -> wm.Result:
        await anyio.sleep(0.005)
        seen = ctx.input.get("seen", [])
        assert isinstance(seen, list)
        return wm.Result.success({"seen": [*seen, ctx.input["k"]]})

    for m in managers:
        m.register_worker("link", link)
    requests = [wm.OneTimeWorkRequest("link", input={"k": k}) for k in range(40)]
    with anyio.fail_after(90):
        async with managers[0], managers[1]:
            async with anyio.create_task_group() as tg:
                for k, request in enumerate(requests):
                    tg.start_soon(managers[k % 2].enqueue_unique_work, "log", "APPEND", request)
                    await anyio.sleep(0.003)  # enqueues interleave with runs finishing
            infos = [await managers[0].wait(r.id) for r in requests]
    assert {i.state for i in infos} == {wm.WorkState.SUCCEEDED}
    seen = [i.output["seen"] for i in infos]
    lengths = sorted(len(s) for s in seen if isinstance(s, list))
    assert lengths == list(range(1, 41))  # one chain: each saw every work before it
