"""PostgreSQL faults found by fault testing (a server restarted mid-run, every backend
killed again and again), each reproduced where its timing is exact:

- a COMMIT (or an autocommitted statement) that takes effect while the client loses the
  connection before the answer arrives: injected at the driver, which terminates the
  test's own backend right after the server answered, so the store meets a real
  ``ConnectionDoesNotExistError`` and retries. Every public call must report what it
  would have reported without the fault;
- a claim that takes effect after the client gave up on it (the statement ran late);
- the works of a SIGKILLed process must run again about a lease later while other
  processes keep writing (real processes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from conftest import PG_DSN, PgSchema, pg_execute

import wm_async as wm
from wm_async._core import lifecycle as lc
from wm_async._core.model import (
    StopReason,
    WorkState,
)
from wm_async._core.record import WorkRecord
from wm_async.stores import (
    ClaimParams,
    StoreListener,
)
from wm_async.testing import VirtualClock

pytestmark = pytest.mark.postgres

asyncpg = pytest.importorskip("asyncpg")
from wm_async.stores.postgres import PostgresStore  # after the skip: needs asyncpg

NOW = 1_700_000_000.0
CHILD = Path(__file__).with_name("_pg_child.py")
#: Statements the faults pick by their text (on the code before and after the fixes).
CLAIM = "SET state = 'RUNNING'"
RESPEC = "AND generation ="
RECOGNITION = "AND txn = "
#: The one-round-trip recording of outcomes (autocommitted: its answer lost = a COMMIT's).
APPLY = ".wm_apply("


def record(worker: str = "w", *, at: float = NOW, **kw: object) -> WorkRecord:
    request = wm.OneTimeWorkRequest(worker, **kw)  # type: ignore[arg-type]
    return WorkRecord.from_request(request, now=at)


# -- the fault injector --------------------------------------------------------------------


@attrs.define
class _Fault:
    commit: bool  # after a COMMIT; else after (or, late, instead of) a statement
    match: str = ""
    when: Callable[[list[Any]], bool] | None = None
    late: bool = False
    release: bool = False  # when the pool resets the connection after the statement


@attrs.define
class LostAnswers:
    """Faults armed on the connections of one test's store (its application name).

    - :meth:`after_commit`: the next COMMIT takes effect, then the backend is
      terminated before the client reads on: the answer is lost.
    - :meth:`before_commit`: the backend is terminated instead of the next COMMIT: the
      transaction is rolled back.
    - :meth:`after_statement`: the same for the next autocommitted statement whose text
      contains ``match`` (and whose rows satisfy ``when``).
    - :meth:`instead_of_statement`: the next such statement is not sent; the backend is
      terminated, and the statement is kept in :attr:`held` for the test to run later
      on a connection of its own (as a server that ran it after the client gave up).
    - :meth:`at_release_after`: the next such statement is answered; the backend is
      terminated when the pool resets the connection it gets back.
    """

    app: str
    armed: list[_Fault] = attrs.field(factory=list)
    fired: int = 0
    held: list[tuple[str, tuple[object, ...]]] = attrs.field(factory=list)
    doomed: list[Any] = attrs.field(factory=list)  # connections to fail at their reset

    def after_commit(self) -> None:
        self.armed.append(_Fault(commit=True))

    def before_commit(self) -> None:
        self.armed.append(_Fault(commit=True, late=True))

    def after_statement(self, match: str, when: Callable[[list[Any]], bool] | None = None) -> None:
        self.armed.append(_Fault(commit=False, match=match, when=when))

    def instead_of_statement(self, match: str) -> None:
        self.armed.append(_Fault(commit=False, match=match, late=True))

    def at_release_after(
        self, match: str, when: Callable[[list[Any]], bool] | None = None
    ) -> None:
        self.armed.append(_Fault(commit=False, match=match, when=when, release=True))

    def _next(self, conn: Any, query: str | None) -> _Fault | None:
        if not self.armed or conn.get_settings().application_name != self.app:
            return None
        fault = self.armed[0]
        if fault.commit != (query is None) or (query is not None and fault.match not in query):
            return None
        return fault

    async def _lose(self, conn: Any, fault: _Fault | None) -> None:
        if fault is not None:
            self.armed.remove(fault)
        self.fired += 1
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        raise AssertionError("the backend outlived its termination")


@pytest.fixture
def lost(schema: PgSchema, monkeypatch: pytest.MonkeyPatch) -> LostAnswers:
    """Arms lost answers on the connections of the test's schema."""
    faults = LostAnswers(schema.app)
    transaction = asyncpg.transaction.Transaction
    commit = transaction._Transaction__commit
    fetch = asyncpg.connection.Connection.fetch
    # The pool's release runs Connection._reset (local state, and a ROLLBACK if a
    # transaction is open) whatever reset query it sends, if any: the store's pool sends
    # none.
    reset = asyncpg.connection.Connection._reset

    async def lossy_commit(self: Any) -> None:
        fault = faults._next(self._connection, None)
        if fault is not None and fault.late:
            await faults._lose(self._connection, fault)
        await commit(self)
        if fault is not None:
            await faults._lose(self._connection, fault)

    async def lossy_fetch(self: Any, query: str, *args: object, **kwargs: object) -> Any:
        fault = faults._next(self, query)
        if fault is not None and fault.late:
            faults.held.append((query, args))
            await faults._lose(self, fault)
        rows = await fetch(self, query, *args, **kwargs)
        if fault is not None and (fault.when is None or fault.when(list(rows))):
            if fault.release:
                faults.armed.remove(fault)
                faults.doomed.append(self)
            else:
                await faults._lose(self, fault)
        return rows

    async def lossy_reset(self: Any) -> None:
        if self in faults.doomed:
            faults.doomed.remove(self)
            await faults._lose(self, None)
        await reset(self)

    monkeypatch.setattr(transaction, "_Transaction__commit", lossy_commit)
    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", lossy_fetch)
    monkeypatch.setattr(asyncpg.connection.Connection, "_reset", lossy_reset)
    return faults


def holding(work_id: str) -> Callable[[list[Any]], bool]:
    """A ``when`` for :meth:`LostAnswers.after_statement`: the rows include the work."""
    return lambda rows: any(work_id in tuple(row) for row in rows)


@pytest.fixture
def manager(schema: PgSchema, clock: VirtualClock) -> wm.WorkManager:
    """A manager on the test's schema and a virtual clock (nothing polls or rescues, so
    the only commits are the ones the test causes)."""
    return wm.WorkManager(PostgresStore(schema.url(), pool_size=4), clock=clock, shutdown_grace=0)


def state_of(rows: list[tuple[object, ...]]) -> list[tuple[str, ...]]:
    return [tuple(str(v) for v in row) for row in rows]


# -- 1. claims ---------------------------------------------------------------------------


async def test_a_claim_whose_answer_was_lost_returns_its_works(
    schema: PgSchema, lost: LostAnswers
) -> None:
    async with PostgresStore(schema.url()) as store:
        await store.insert([work := record(max_attempts=1)])
        lost.after_statement(CLAIM, when=holding(work.id))
        with anyio.fail_after(30):
            claimed = await store.claim_due(ClaimParams(now=NOW, limit=10, owner="A"))
        assert lost.fired == 1
        assert [(r.id, r.state, r.run_attempt_count) for r in claimed.records] == [
            (work.id, WorkState.RUNNING, 1)
        ]
        # Claimed once: nothing else is RUNNING-and-unknown to the claimer.
        again = await store.claim_due(ClaimParams(now=NOW, limit=10, owner="A"))
        assert again.records == []
        assert again.next_due is None


async def test_a_claim_answered_then_losing_its_connection_returns_its_works(
    schema: PgSchema, lost: LostAnswers
) -> None:
    """The claim is answered, then the pool's reset of the connection fails (its backend
    was terminated meanwhile): the claim has completed, and is not run again."""
    async with PostgresStore(schema.url()) as store:
        await store.insert([work := record(max_attempts=1)])
        lost.at_release_after(CLAIM, when=holding(work.id))
        with anyio.fail_after(30):
            claimed = await store.claim_due(ClaimParams(now=NOW, limit=10, owner="A"))
        assert lost.fired == 1
        assert [(r.id, r.run_attempt_count) for r in claimed.records] == [(work.id, 1)]


async def test_a_connection_whose_backend_died_while_idle_is_replaced(
    schema: PgSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection whose backend was terminated while it was idle fails its next
    operation before sending anything (asyncpg: InternalClientError "cannot switch to
    state …"): that is retried on a fresh connection, not raised."""
    fetch = asyncpg.connection.Connection.fetch
    failures = [
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )
    ]

    async def broken_once(self: Any, query: str, *args: object, **kwargs: object) -> Any:
        if failures and "wm_work" in query:
            raise failures.pop()
        return await fetch(self, query, *args, **kwargs)

    async with PostgresStore(schema.url()) as store:
        await store.insert([work := record()])
        monkeypatch.setattr(asyncpg.connection.Connection, "fetch", broken_once)
        with anyio.fail_after(30):
            assert [r.id for r in await store.get([work.id])] == [work.id]
        assert failures == []


async def test_a_claim_that_took_effect_late_is_taken_over_by_the_next_claim(
    schema: PgSchema, lost: LostAnswers
) -> None:
    """The server runs a claim after the client gave up on it (and after the retry
    looked for its works): the claimer's next claim takes those works over, with a fresh
    lease, instead of leaving them RUNNING for a lease and counted as interrupted."""
    async with PostgresStore(schema.url(), lease=30) as store:
        await store.insert([a := record(at=NOW - 1), b := record(at=NOW)])
        lost.instead_of_statement(CLAIM)
        with anyio.fail_after(30):
            first = await store.claim_due(ClaimParams(now=NOW, limit=1, owner="A"))
        assert [r.id for r in first.records] == [a.id]  # the retry's own claim
        [(query, args)] = lost.held
        late = await asyncpg.connect(PG_DSN)
        try:
            rows = await late.fetch(query, *args)  # the lost claim lands now
        finally:
            await late.close()
        assert holding(b.id)(rows)
        second = await store.claim_due(ClaimParams(now=NOW + 10, limit=10, owner="A"))
        assert [(r.id, r.run_attempt_count) for r in second.records] == [(b.id, 1)]
        lease = await pg_execute(
            f'SELECT lease_until FROM "{schema.name}".wm_work WHERE id = $1', b.id
        )
        assert lease == [(NOW + 10 + 30,)]  # renewed when taken over
        third = await store.claim_due(ClaimParams(now=NOW + 11, limit=10, owner="A"))
        assert third.records == []  # taken over once


async def test_a_work_with_one_attempt_runs_although_its_claim_answer_was_lost(
    manager: wm.WorkManager, lost: LostAnswers
) -> None:
    runs: list[int] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        runs.append(ctx.run_attempt_count)

    request = wm.OneTimeWorkRequest("w", max_attempts=1)
    lost.after_statement(CLAIM, when=holding(str(request.id)))
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(request)
            info = await manager.wait(request.id)
    assert lost.fired == 1
    assert info.state is WorkState.SUCCEEDED
    assert runs == [0]  # run once (the context counts earlier attempts)


# -- 3. idempotent retries of writes ------------------------------------------------------


async def test_a_chain_enqueue_whose_commit_answer_was_lost_succeeds(
    manager: wm.WorkManager, lost: LostAnswers
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"n": ctx.input.get("n", 0) + 1})

    first, second = wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w")
    with anyio.fail_after(30):
        async with manager:
            lost.after_commit()
            await manager.begin_with(first).then(second).enqueue()
            assert lost.fired == 1
            info = await manager.wait(second.id)
    assert info.state is WorkState.SUCCEEDED
    assert dict(info.output) == {"n": 2}


async def test_an_append_whose_commit_answer_was_lost_returns_true_and_chains(
    manager: wm.WorkManager, lost: LostAnswers
) -> None:
    release = anyio.Event()

    @manager.worker("link")
    async def link(ctx: wm.WorkContext) -> wm.Result:
        await release.wait()
        seen = ctx.input.get("seen", [])
        assert isinstance(seen, list)
        return wm.Result.success({"seen": [*seen, ctx.input["k"]]})

    first = wm.OneTimeWorkRequest("link", input={"k": 1})
    second = wm.OneTimeWorkRequest("link", input={"k": 2})
    with anyio.fail_after(30):
        async with manager:
            assert await manager.enqueue_unique_work("log", "APPEND", first)
            lost.after_commit()
            assert await manager.enqueue_unique_work("log", "APPEND", second) is True
            assert lost.fired == 1
            release.set()
            info = await manager.wait(second.id)
            infos = await manager.get_work_infos(wm.WorkQuery(unique_names={"log"}))
    assert info.state is WorkState.SUCCEEDED
    assert info.output["seen"] == [1, 2]
    assert len(infos) == 2


async def test_a_keep_whose_commit_answer_was_lost_reports_its_own_work_enqueued(
    manager: wm.WorkManager, lost: LostAnswers
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    request = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(30):
        async with manager:
            lost.after_commit()
            assert await manager.enqueue_unique_work("once", "KEEP", request) is True
            assert lost.fired == 1
            info = await manager.wait(request.id)
            infos = await manager.get_work_infos(wm.WorkQuery(unique_names={"once"}))
    assert info.state is WorkState.SUCCEEDED
    assert [i.id for i in infos] == [request.id]


@pytest.mark.parametrize("recognition_fails", [False, True], ids=["once", "recognition-lost"])
async def test_a_cancel_whose_commit_answer_was_lost_returns_true_and_stops_the_run(
    manager: wm.WorkManager, lost: LostAnswers, recognition_fails: bool
) -> None:
    started, stopped = anyio.Event(), anyio.Event()
    reasons: list[StopReason] = []

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            reasons.append(ctx.stop_reason)
            stopped.set()

    request = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(request)
            await started.wait()
            lost.after_statement(APPLY)  # autocommitted: it took effect
            if recognition_fails:  # the retry's read of what the first attempt wrote, too
                lost.after_statement(RECOGNITION)
            assert await manager.cancel_work_by_id(request.id) is True
            assert lost.fired == (2 if recognition_fails else 1)
            await stopped.wait()
            info = await manager.wait(request.id)
    assert reasons == [StopReason.CANCELLED_BY_APP]
    assert info.state is WorkState.CANCELLED


class _ReadSpy(PostgresStore):
    """Sets :attr:`read_unfinished` once a read returns an unfinished work: a waiter
    (registered before it reads) has read its state, and waits for it to finish."""

    read_unfinished: anyio.Event

    async def get(self, ids: Collection[str]) -> list[WorkRecord]:
        found = await super().get(ids)
        if any(not r.state.is_finished for r in found):
            self.read_unfinished.set()
        return found


async def test_a_result_whose_commit_answer_was_lost_reaches_wait(
    schema: PgSchema, clock: VirtualClock, lost: LostAnswers
) -> None:
    store = _ReadSpy(schema.url(), pool_size=4)
    store.read_unfinished = anyio.Event()
    manager = wm.WorkManager(store, clock=clock, shutdown_grace=0)

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> wm.Result:
        await store.read_unfinished.wait()  # the waiter below waits for the finish
        lost.after_statement(APPLY)  # the recorder writing this result (autocommitted)
        return wm.Result.success({"done": True})

    request = wm.OneTimeWorkRequest("w")
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(request)
            info = await manager.wait(request.id)
    assert lost.fired == 1
    assert info.state is WorkState.SUCCEEDED
    assert dict(info.output) == {"done": True}


async def test_an_update_whose_answer_was_lost_is_applied_once(
    manager: wm.WorkManager, lost: LostAnswers
) -> None:
    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    request = wm.OneTimeWorkRequest("w", initial_delay=3600)
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(request)
            lost.after_statement(RESPEC)
            new = wm.OneTimeWorkRequest("w", id=request.id, initial_delay=7200, tags={"v2"})
            result = await manager.update_work(new)
            assert lost.fired == 1
            info = await manager.get_work_info(request.id)
    assert result is wm.UpdateResult.APPLIED_IMMEDIATELY
    assert info is not None
    assert info.generation == 1  # applied once, not re-applied over its own write
    assert "v2" in info.tags


async def test_a_group_commit_batch_whose_answer_was_lost_reports_each_callers_writes(
    schema: PgSchema, lost: LostAnswers
) -> None:
    """Two callers' changes in one transaction (group commit), one of them finishing a
    prerequisite: after the lost answer each caller gets its own records, the
    dependent the finish unblocked included."""
    async with PostgresStore(schema.url()) as store:
        await store.insert([a := record(), b := record()])
        await store.insert([c := record(at=NOW + 1)], {c.id: [a.id]})
        claimed = await store.claim_due(ClaimParams(now=NOW, limit=2, owner="A"))
        running = {r.id: r for r in claimed.records}
        finish_a = lc.finish(running[a.id], lc.Succeeded(), now=NOW + 2)
        cancel_b = lc.cancel(running[b.id], now=NOW + 2)
        assert cancel_b is not None
        results: dict[str, list[WorkRecord]] = {}

        async def apply(name: str, change: lc.Change) -> None:
            results[name] = await store.apply([change])

        lost.after_commit()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(apply, "a", finish_a)
                tg.start_soon(apply, "b", cancel_b)
        assert lost.fired == 1  # one transaction for both
        assert [(r.id, r.state) for r in results["a"]] == [
            (a.id, WorkState.SUCCEEDED),
            (c.id, WorkState.ENQUEUED),
        ]
        assert [(r.id, r.state) for r in results["b"]] == [(b.id, WorkState.CANCELLED)]


@pytest.mark.parametrize("committed", [True, False], ids=["answer-lost", "rolled-back"])
async def test_a_rescue_whose_commit_failed_reports_the_works_once(
    schema: PgSchema, lost: LostAnswers, committed: bool
) -> None:
    async with PostgresStore(schema.url(), lease=30) as store:
        await store.insert([work := record()])
        await store.claim_due(ClaimParams(now=NOW, limit=1, owner="dead"))
        if committed:  # the retry finds nothing expired: it must recognise its write
            lost.after_commit()
        else:  # the retry re-enqueues it again: reported once, as written then
            lost.before_commit()
        with anyio.fail_after(30):
            rescued = await store.requeue_orphans(now=NOW + 31)
        assert lost.fired == 1
        assert [(r.id, r.state, r.run_attempt_count) for r in rescued] == [
            (work.id, WorkState.ENQUEUED, 1)
        ]


# -- 2. rescue on a timer of its own --------------------------------------------------------


def test_the_rescue_interval_defaults_to_half_the_lease() -> None:
    assert PostgresStore("postgresql://h/db", lease=10).rescue_interval == 5.0
    assert PostgresStore("postgresql://h/db", rescue_interval=2).rescue_interval == 2.0
    with pytest.raises(wm.InvalidRequestError, match="rescue_interval"):
        PostgresStore("postgresql://h/db", rescue_interval=0)


async def test_the_rescuer_keeps_going_after_a_failure_and_tells_the_listener() -> None:
    from wm_async.stores._postgres_listen import rescue_expired

    calls: list[float] = []
    woken, told = anyio.Event(), anyio.Event()
    changed: list[list[str] | None] = []

    async def rescue(now: float) -> list[str]:
        calls.append(now)
        if len(calls) == 1:
            raise wm.StoreError("the database is restarting")
        return ["w1"] if len(calls) == 2 else []

    async def on_change(ids: Any) -> None:
        changed.append(None if ids is None else list(ids))
        told.set()

    listener = StoreListener(now=lambda: NOW, real_time=True, wake=woken.set, changed=on_change)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rescue_expired, listener, 0.01, rescue)
            await told.wait()
            tg.cancel_scope.cancel()
    assert woken.is_set()
    assert changed == [["w1"]]
    assert calls[:2] == [NOW, NOW]


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(CHILD.parent.parent)},
        )


@pytest.fixture
def children(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[bytes]], Path]]:
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "children.log"
    try:
        yield procs, log
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


async def _count(statement: str, *args: object) -> int:
    return int(str((await pg_execute(statement, *args))[0][0]))


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Return once ``check()`` holds, polling every 0.1 s (other processes write the
    database: there is nothing to wait on)."""
    while True:
        if await check():
            return
        await anyio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_killed_process_works_are_rescued_about_a_lease_later_under_traffic(
    schema: PgSchema, children: tuple[list[subprocess.Popen[bytes]], Path]
) -> None:
    """A SIGKILLed process's RUNNING works are re-enqueued within a lease plus a rescue
    interval of the kill, while other processes keep writing: the survivor hears a
    notification every 0.1 s, so its fallback poll (5 s) never comes."""
    procs, log = children
    lease, rescue_interval, slack = 1.5, 0.75, 3.0  # the interval: half the lease
    table = f'"{schema.name}".wm_work'
    async with PostgresStore(schema.url()) as producer:
        await pg_execute(
            f'CREATE TABLE "{schema.name}".executions (work_id text NOT NULL, '
            "attempt int NOT NULL, owner text NOT NULL)"
        )

        def serve(owner: str) -> subprocess.Popen[bytes]:
            exec_dsn = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}application_name={schema.app}x"
            args = [
                "serve", "--url", schema.url(), "--schema", schema.name, "--owner", owner,
                "--exec-dsn", exec_dsn, "--lease", str(lease), "--poll-interval", "5",
                "--concurrency", "10",
            ]  # fmt: skip
            proc = _spawn(args, log)
            procs.append(proc)
            return proc

        async def running(owner: str) -> int:
            return await _count(
                f"SELECT count(*) FROM {table} WHERE state = 'RUNNING' AND owner = $1", owner
            )

        async def holds(owner: str, n: int) -> bool:
            return await running(owner) == n

        async def has_run(owner: str) -> bool:
            executions = f'SELECT count(*) FROM "{schema.name}".executions WHERE owner = $1'
            return await _count(executions, owner) > 0

        victim = serve("victim")
        await producer.insert([record("hold", at=time.time()) for _ in range(3)])
        with anyio.fail_after(60):
            await _until(lambda: holds("victim", 3))
        serve("survivor")

        async def traffic() -> None:
            while True:  # a notification every 0.1 s, and work for the survivor
                await producer.insert([record("job", at=time.time())])
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(traffic)
            with anyio.fail_after(60):  # the survivor runs: it listens and claims
                await _until(lambda: has_run("survivor"))
            victim.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await anyio.to_thread.run_sync(victim.wait)
            bound = lease + 1.25 * rescue_interval + slack
            with anyio.move_on_after(bound + 10):  # then fail below, with the figure
                await _until(lambda: holds("victim", 0))
            elapsed = time.monotonic() - killed
            left = await running("victim")
            tg.cancel_scope.cancel()
        assert left == 0, f"{left} work(s) still RUNNING {elapsed:.1f}s after the kill"
        assert elapsed <= bound, f"rescued {elapsed:.1f}s after the kill (bound {bound:.1f}s)"
        held = f"SELECT state, owner, run_attempt_count FROM {table} WHERE worker = 'hold'"

        async def run_again() -> bool:  # by the survivor, the interrupted attempt counted
            return state_of(await pg_execute(held)) == [("RUNNING", "survivor", "2")] * 3

        with anyio.fail_after(60):
            await _until(run_again)
