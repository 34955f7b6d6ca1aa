"""Flow limits across processes (semantics 50): three worker processes on one
PostgreSQL schema never run more than ``max_running`` works of a capped worker at once
(as the workers themselves count), start a rate-limited worker's works within its
tokens, and give a SIGKILLed process's slots back once its leases end. On one SQLite
file, a producer process and a scheduling process keep the cap, and so does the standby
that takes over when the scheduling one is SIGKILLed mid-run (semantics 41, 43). (A
pause seen by three processes: ``test_pause.py``.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from conftest import PgSchema, require_postgres

import wm_async as wm

CHILD = Path(__file__).with_name("_limits_child.py")
#: Bounds every real-time wait (a loaded machine is slow).
TIMEOUT = 60.0


class Children:
    """The worker processes of one test, and their files."""

    def __init__(self, url: str, tmp_path: Path, *, cap: int, rate: str, lease: float) -> None:
        self.url, self.cap, self.rate, self.lease = url, cap, rate, lease
        self.log = tmp_path / "runs.log"
        self.gauge = tmp_path / "gauge.json"
        self.procs: list[subprocess.Popen[str]] = []
        #: The role each process started in (``scheduler`` or ``standby`` on SQLite).
        self.roles: dict[int, str] = {}

    async def spawn(self, n: int) -> list[subprocess.Popen[str]]:
        new = [
            subprocess.Popen(  # noqa: ASYNC220  # started at once; waited for below
                [
                    sys.executable,
                    str(CHILD),
                    self.url,
                    str(self.log),
                    str(self.gauge),
                    str(self.cap),
                    self.rate,
                    str(self.lease),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        self.procs += new
        for child in new:
            assert child.stdout is not None
            with anyio.fail_after(TIMEOUT):
                line = await anyio.to_thread.run_sync(child.stdout.readline)
            assert line.startswith("ready "), line
            self.roles[child.pid] = line.split()[1]
        return new

    def runs(self, worker: str) -> list[tuple[int, str, float]]:
        """``(pid, work id, time)`` of each run of ``worker`` started, in log order."""
        if not self.log.exists():
            return []
        lines = [ln.split() for ln in self.log.read_text().splitlines()]
        return [(int(p), i, float(t)) for p, w, i, t in lines if w == worker]

    def most(self) -> int:
        """The most ``capped`` runs at once, as the workers counted them."""
        return int(json.loads(self.gauge.read_text())["most"])

    async def close(self) -> None:
        for child in self.procs:
            if child.poll() is None:
                assert child.stdin is not None
                child.stdin.close()
        for child in self.procs:
            await anyio.to_thread.run_sync(lambda c=child: c.wait(TIMEOUT))  # type: ignore[misc]
            assert child.stdout is not None
            child.stdout.close()
            if child.stdin is not None and not child.stdin.closed:
                child.stdin.close()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (real time) until it holds, up to TIMEOUT."""
    with anyio.fail_after(TIMEOUT):
        while not await check():  # noqa: ASYNC110  # other processes: no event to await
            await anyio.sleep(0.05)


async def all_succeeded(producer: wm.WorkManager, requests: list[wm.OneTimeWorkRequest]) -> bool:
    infos = [await producer.get_work_info(r.id) for r in requests]
    return all(i is not None and i.state is wm.WorkState.SUCCEEDED for i in infos)


@pytest.mark.postgres
async def test_three_processes_never_run_more_than_max_running(tmp_path: Path) -> None:
    await require_postgres()
    schema = PgSchema()
    children = Children(schema.url(), tmp_path, cap=3, rate="1000,1,1000", lease=30)
    try:
        async with wm.WorkManager(schema.url(), run_work=False) as producer:
            await children.spawn(3)  # 24 places in all, for a cap of 3
            works = [wm.OneTimeWorkRequest("capped", input={"hold": 0.1}) for _ in range(30)]
            await producer.enqueue(*works)
            await eventually(lambda: all_succeeded(producer, works))
        runs = children.runs("capped")
        assert sorted(i for _, i, _ in runs) == sorted(str(w.id) for w in works)  # once each
        assert children.most() == 3  # reached, never passed
        assert len({pid for pid, _, _ in runs}) >= 2  # the processes shared the works
    finally:
        await children.close()
        await schema.drop()


@pytest.mark.postgres
async def test_three_processes_start_within_the_rate(tmp_path: Path) -> None:
    await require_postgres()
    schema = PgSchema()
    n, per, burst = 5, 1.0, 2
    children = Children(schema.url(), tmp_path, cap=1, rate=f"{n},{per},{burst}", lease=30)
    try:
        async with wm.WorkManager(schema.url(), run_work=False) as producer:
            await children.spawn(3)
            works = [wm.OneTimeWorkRequest("rated") for _ in range(15)]
            await producer.enqueue(*works)
            await eventually(lambda: all_succeeded(producer, works))
        starts = sorted(t for _, _, t in children.runs("rated"))
        assert len(starts) == 15
        # Over any span, at most burst + n·span/per starts, within one token (a start
        # is logged a little after its claim took the token).
        for i in range(len(starts)):
            for j in range(i + 1, len(starts)):
                allowed = burst + (starts[j] - starts[i]) * n / per + 1
                assert j - i + 1 <= allowed, (i, j, starts[j] - starts[i])
        # And the rate is used, not undershot by a poll: 13 tokens after the burst.
        assert starts[-1] - starts[0] < (15 - burst) / n * per + 2.0
    finally:
        await children.close()
        await schema.drop()


@pytest.mark.postgres
async def test_a_killed_process_gives_its_slots_back_after_its_lease(tmp_path: Path) -> None:
    await require_postgres()
    schema = PgSchema()
    lease = 2.0
    children = Children(schema.url(), tmp_path, cap=2, rate="1000,1,1000", lease=lease)
    try:
        async with wm.WorkManager(schema.url(), run_work=False) as producer:
            (victim,) = await children.spawn(1)
            # Long on their first run: the victim holds both slots.
            long = [wm.OneTimeWorkRequest("capped", input={"first_hold": 600}) for _ in range(2)]
            await producer.enqueue(*long)

            async def victim_holds_both() -> bool:
                return len(children.runs("capped")) == 2

            await eventually(victim_holds_both)
            await children.spawn(2)
            short = [wm.OneTimeWorkRequest("capped", input={"hold": 0.05}) for _ in range(4)]
            await producer.enqueue(*short)
            await anyio.sleep(1.0)  # the other processes hear of them, and hold them back
            assert len(children.runs("capped")) == 2
            info = await producer.get_work_info(short[0].id)
            assert info is not None
            assert info.state is wm.WorkState.ENQUEUED
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            await anyio.to_thread.run_sync(victim.wait)
            await eventually(lambda: all_succeeded(producer, [*long, *short]))
        runs = children.runs("capped")
        later = [t for pid, _, t in runs if pid != victim.pid]
        assert len(later) == 6  # the short works and the killed runs, run again
        assert min(later) > killed_at
        assert children.most() == 2
    finally:
        await children.close()
        await schema.drop(check_leaks=False)


async def test_on_sqlite_the_cap_holds_across_a_takeover_after_sigkill(tmp_path: Path) -> None:
    """A producer (this process) and a scheduling process on one SQLite file, a cap of
    2; the scheduling process is SIGKILLed while it runs two works and holds others
    back; the standby takes over, runs the killed runs again and the rest: never more
    than two at once across both processes' lives."""
    url = f"sqlite:///{tmp_path / 'wm.db'}"
    children = Children(url, tmp_path, cap=2, rate="1000,1,1000", lease=30)
    try:
        async with wm.WorkManager(url, run_work=False) as producer:
            (first,) = await children.spawn(1)
            assert children.roles[first.pid] == "scheduler"
            # Short ones first (a higher priority), through both slots in turn; then two
            # that hang on their first run, holding both slots until the kill.
            short = [
                wm.OneTimeWorkRequest("capped", input={"hold": 0.1}, priority=1) for _ in range(4)
            ]
            long = [wm.OneTimeWorkRequest("capped", input={"first_hold": 600}) for _ in range(2)]
            await producer.enqueue(*short, *long)

            async def both_long_runs_started() -> bool:
                started = {i for _, i, _ in children.runs("capped")}
                return {str(r.id) for r in long} <= started

            await eventually(both_long_runs_started)
            assert await all_succeeded(producer, short)
            (second,) = await children.spawn(1)
            assert children.roles[second.pid] == "standby"
            held = [wm.OneTimeWorkRequest("capped", input={"hold": 0.1}) for _ in range(6)]
            await producer.enqueue(*held)
            # Time for the scheduling process to hear of them (and, were its cap not
            # kept, to start them): not a condition of the test.
            await anyio.sleep(0.5)
            killed_at = time.time()  # before: the standby may take over at once
            first.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(first.wait)
            await eventually(lambda: all_succeeded(producer, [*short, *long, *held]))
            infos = [await producer.get_work_info(r.id) for r in long]
        runs = children.runs("capped")
        before = {i for pid, i, _ in runs if pid == first.pid}
        after = [(i, t) for pid, i, t in runs if pid == second.pid]
        assert before == {str(r.id) for r in [*short, *long]}
        # The standby ran nothing before it took over; then the killed runs, again (an
        # attempt counted for each: semantics 15), and the works held back, once each.
        assert min(t for _, t in after) > killed_at
        assert sorted(i for i, _ in after) == sorted(str(r.id) for r in [*long, *held])
        assert [i.run_attempt_count if i is not None else None for i in infos] == [2, 2]
        assert {pid for pid, _, _ in runs} == {first.pid, second.pid}
        assert children.most() == 2  # reached, never passed, across both processes
    finally:
        await children.close()
