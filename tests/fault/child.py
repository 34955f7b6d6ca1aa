"""The process the crash matrix kills: a manager running a mixed workload.

    python child.py STORE_URL LOG PHASE SEED [KILL_MODE]

Phase A sets the workload up and runs it; the test SIGKILLs it at a random moment (or
it kills itself just before or just after a COMMIT, with KILL_MODE ``before-commit`` /
``after-commit``). Phase B, on the same store, finishes whatever setup step is missing
(every step is one atomic call, and ids are derived from SEED, so a step is either
fully stored or not at all) and runs until every one-time work has finished.

Workers append one line per event to LOG with a single O_APPEND write, so a line is
never torn by SIGKILL: ``PHASE start ID ATTEMPT`` and ``PHASE end ID ATTEMPT``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import uuid
from datetime import timedelta
from typing import Any

import anyio

import wm_async as wm
import wm_async.stores

FAST = wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(milliseconds=10))


def ids(seed: int, name: str, n: int) -> list[uuid.UUID]:
    """Deterministic ids for the trial ``seed``."""
    return [uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}:{name}:{i}") for i in range(n)]


class Workload:
    """The setup steps, each one atomic call, and their requests."""

    def __init__(self, seed: int) -> None:
        def req(wid: uuid.UUID, worker: str = "step", **kw: object) -> wm.OneTimeWorkRequest:
            return wm.OneTimeWorkRequest(worker, id=wid, backoff=FAST, **kw)  # type: ignore[arg-type]

        self.plain = [
            req(i, input={"retry": n % 5 == 0}) for n, i in enumerate(ids(seed, "plain", 12))
        ]
        c0a, c0b, c1, c2 = ids(seed, "chain", 4)
        self.chain = [
            req(c0a, input={"emit": {"a": 1}}),
            req(c0b, input={"emit": {"b": 2}}),
            req(c1, input={"emit": {"c": 3}}),
            req(c2),
        ]
        f0, f1, f2 = ids(seed, "failing", 3)
        self.failing = [req(f0), req(f1, input={"fail": True}), req(f2)]
        self.keep = [req(i) for i in ids(seed, "keep", 2)]
        self.append = [
            req(i, "link", input={"k": k}) for k, i in enumerate(ids(seed, "append", 5))
        ]
        self.tick = wm.PeriodicWorkRequest(
            "tick", repeat_interval=timedelta(milliseconds=200), id=ids(seed, "tick", 1)[0]
        )

    def one_time(self) -> list[wm.OneTimeWorkRequest]:
        """Every one-time request of the workload."""
        return [*self.plain, *self.chain, *self.failing, *self.keep, *self.append]

    async def set_up(self, manager: wm.WorkManager) -> None:
        """Run every step whose works are not stored yet."""

        async def missing(request: wm.OneTimeWorkRequest | wm.PeriodicWorkRequest) -> bool:
            return await manager.get_work_info(request.id) is None

        if await missing(self.plain[0]):
            await manager.enqueue(*self.plain)
        if await missing(self.chain[0]):
            c0a, c0b, c1, c2 = self.chain
            await manager.begin_with(c0a, c0b).then(c1).then(c2).enqueue()
        if await missing(self.failing[0]):
            f0, f1, f2 = self.failing
            await manager.begin_with(f0).then(f1).then(f2).enqueue()
        for request in self.keep:
            if await missing(request):
                await manager.enqueue_unique_work("keep", wm.ExistingWorkPolicy.KEEP, request)
        for request in self.append:
            if await missing(request):
                await manager.enqueue_unique_work("log", wm.ExistingWorkPolicy.APPEND, request)
        if await missing(self.tick):
            await manager.enqueue_unique_periodic_work(
                "tick", wm.ExistingPeriodicWorkPolicy.KEEP, self.tick
            )


def arm_commit_kill(url: str, mode: str, rng: random.Random) -> None:
    """Kill this process just before or just after one of its first COMMITs."""
    # Among the first commits: the recorder writes results in batches, so a trial makes
    # fewer commits than it did, and a later target could miss the run altogether.
    target = rng.randint(1, 25)
    seen = 0

    def at_commit(when: str) -> None:
        if seen == target and mode == when:
            os.kill(os.getpid(), signal.SIGKILL)

    if url.startswith("postgresql"):
        import asyncpg.transaction

        commit = asyncpg.transaction.Transaction._Transaction__commit  # type: ignore[attr-defined, unused-ignore]

        async def pg_commit(self: object) -> None:
            nonlocal seen
            seen += 1
            at_commit("before-commit")
            await commit(self)
            at_commit("after-commit")

        asyncpg.transaction.Transaction._Transaction__commit = pg_commit  # type: ignore[attr-defined, unused-ignore]
        # Outcomes are mostly recorded by one autocommitted statement (wm_apply): its
        # execution is a commit too.
        fetch = asyncpg.Connection.fetch

        async def pg_fetch(self: object, query: str, *args: object, **kwargs: object) -> object:
            nonlocal seen
            if ".wm_apply(" not in query:
                return await fetch(self, query, *args, **kwargs)
            seen += 1
            at_commit("before-commit")
            result = await fetch(self, query, *args, **kwargs)
            at_commit("after-commit")
            return result

        asyncpg.Connection.fetch = pg_fetch  # type: ignore[method-assign, unused-ignore]
        return

    import aiosqlite

    from wm_async.stores import _sqlite_ops as sqlite_store

    # Transactions run statement by statement through aiosqlite, or whole inside the
    # connection's thread through sqlite_store._InThread: hook both.
    for cls in (aiosqlite.Connection, sqlite_store._InThread):
        original = cls.execute_fetchall

        async def execute_fetchall(
            self: object, sql: str, *args: object, _original: Any = original
        ) -> object:
            nonlocal seen
            if sql == "COMMIT":
                seen += 1
                at_commit("before-commit")
                result = await _original(self, sql, *args)
                at_commit("after-commit")
                return result
            return await _original(self, sql, *args)

        setattr(cls, "execute_fetchall", execute_fetchall)  # noqa: B010  # two classes


def open_manager(url: str) -> wm.WorkManager:
    """A manager on ``url``; on PostgreSQL with a 1 s lease, so that the restarted
    process rescues the killed one's runs quickly."""
    store: str | wm.stores.Store = url
    if url.startswith("postgresql"):
        from wm_async.stores.postgres import PostgresStore

        store = PostgresStore(url, lease=1.0, poll_interval=0.2, pool_size=4)
    return wm.WorkManager(store, max_concurrency=8, shutdown_grace=timedelta(seconds=5))


async def main(url: str, log: str, phase: str, seed: int, mode: str) -> None:
    rng = random.Random(f"{seed}:{phase}")
    if mode != "timer" and phase == "A":
        arm_commit_kill(url, mode, rng)
    manager = open_manager(url)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(event: str, ctx: wm.WorkContext) -> None:
        os.write(fd, f"{phase} {event} {ctx.id} {ctx.run_attempt_count}\n".encode())

    @manager.worker("step")
    async def step(ctx: wm.WorkContext) -> wm.Result:
        note("start", ctx)
        await anyio.sleep(rng.uniform(0.001, 0.02))
        note("end", ctx)
        if ctx.input.get("fail"):
            return wm.Result.failure({"failed": True})
        if ctx.input.get("retry") and ctx.run_attempt_count == 0:
            return wm.Result.retry()
        emit = ctx.input.get("emit", {})
        assert isinstance(emit, dict)
        return wm.Result.success(emit)

    @manager.worker("link")
    async def link(ctx: wm.WorkContext) -> wm.Result:
        note("start", ctx)
        await anyio.sleep(rng.uniform(0.001, 0.01))
        note("end", ctx)
        seen = ctx.input.get("seen", [])
        assert isinstance(seen, list)
        return wm.Result.success({"seen": [*seen, ctx.input["k"]]})

    ticked = anyio.Event()

    @manager.worker("tick")
    async def tick(ctx: wm.WorkContext) -> None:
        note("start", ctx)
        note("end", ctx)
        ticked.set()

    workload = Workload(seed)
    async with manager:
        await workload.set_up(manager)
        os.write(fd, f"{phase} setup-done\n".encode())
        for request in workload.one_time():
            if await manager.get_work_info(request.id) is not None:
                await manager.wait(request.id)
        # The periodic work runs here too (a run the kill interrupted runs again once
        # recovered, on PostgreSQL after its lease expires): wait for one.
        with anyio.move_on_after(30):
            await ticked.wait()
    os.write(fd, f"{phase} done\n".encode())


if __name__ == "__main__":
    url, log, phase, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else "timer"
    anyio.run(main, url, log, phase, seed, mode)
