"""Several real processes on one SQLite file: producers (``run_work=False``) enqueue,
unique-enqueue and cancel; one worker process schedules and runs the works; a standby
takes over when the scheduling process is SIGKILLed (semantics 15: the interrupted runs
run again, counted; nothing that finished runs twice). The processes are
``tests/_multi_child.py``; what they did is read back from their files and the database.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import wm_async as wm

pytest.importorskip("wm_async.stores.sqlite")

CHILD = Path(__file__).with_name("_multi_child.py")
#: Generous bounds for conditions polled under load; never a timing assertion.
DEADLINE = 60.0
PRODUCERS, PER_PRODUCER, UNIQUE_NAMES, CANCELS = 4, 60, 5, 5


class Cluster:
    """The child processes of one test, their files, and how to stop them."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.url = f"sqlite:///{tmp_path / 'wm.db'}"
        self.db = tmp_path / "wm.db"
        self.log = tmp_path / "runs.log"
        self.stop_file = tmp_path / "stop"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.dir / f"{name}.out").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args, "--url", self.url],
            env=self._env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def worker(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            name, "worker", "--log", str(self.log), "--roles", str(self.roles(name)),
            "--stop", str(self.stop_file), *args,
        )  # fmt: skip

    def producer(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, "producer", "--out", str(self.dir / f"{name}.json"), *args)

    def roles(self, name: str) -> Path:
        return self.dir / f"{name}.roles"

    def role_changes(self, name: str) -> list[str]:
        path = self.roles(name)
        return path.read_text().split() if path.exists() else []

    def output(self, name: str) -> str:
        return (self.dir / f"{name}.out").read_text(errors="replace")

    def runs(self) -> list[tuple[int, str, int]]:
        """(pid, work id, attempt) of every run started, in order."""
        if not self.log.exists():
            return []
        return [
            (int(pid), wid, int(attempt))
            for pid, wid, attempt in (line.split() for line in self.log.read_text().splitlines())
        ]

    def rows(self) -> dict[str, tuple[str, int, str | None]]:
        """id -> (state, run_attempt_count, unique_name), read straight from the file."""
        with sqlite3.connect(self.db, timeout=30) as conn:
            rows = conn.execute(
                "SELECT id, state, run_attempt_count, unique_name FROM wm_work"
            ).fetchall()
        conn.close()
        return {wid: (state, attempts, name) for wid, state, attempts, name in rows}

    def close(self) -> None:
        self.stop_file.touch()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


async def until(condition: Callable[[], bool], what: str, *procs: subprocess.Popen[bytes]) -> None:
    """Poll ``condition`` until it holds; fail after :data:`DEADLINE`, or at once if one
    of ``procs`` (which should keep running) exited."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"a child exited ({proc.returncode}) before: {what}"
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        await anyio.sleep(0.05)


async def start_worker_and_standby(cluster: Cluster, *args: str) -> tuple[
    subprocess.Popen[bytes], subprocess.Popen[bytes]
]:  # fmt: skip
    """The first worker process schedules; a second one on the file stands by."""
    first = cluster.worker("first", *args)
    await until(lambda: cluster.role_changes("first") == ["scheduler"], "first schedules", first)
    second = cluster.worker("second", *args)
    await until(lambda: cluster.role_changes("second") == ["standby"], "second stands by", second)
    return first, second


async def test_producers_in_several_processes_and_one_worker_process(cluster: Cluster) -> None:
    first, second = await start_worker_and_standby(cluster)
    names = [f"producer{i}" for i in range(PRODUCERS)]
    sizes = ["--n", str(PER_PRODUCER), "--unique", str(UNIQUE_NAMES), "--cancels", str(CANCELS)]
    producers = [cluster.producer(name, *sizes) for name in names]
    for name, proc in zip(names, producers, strict=True):
        await until(lambda p=proc: p.poll() is not None, f"{name} is done", first, second)  # type: ignore[misc]
        assert proc.returncode == 0, cluster.output(name)
    done = [json.loads((cluster.dir / f"{name}.json").read_text()) for name in names]

    works = [wid for d in done for wid in d["works"]]
    cancelled = [wid for d in done for wid in d["cancelled"]]
    assert len(set(works)) == len(works) == PRODUCERS * PER_PRODUCER

    def all_succeeded() -> bool:
        rows = cluster.rows()
        return all(rows[wid][0] == "SUCCEEDED" for wid in works)

    await until(all_succeeded, "every enqueued work succeeded", first, second)
    rows = cluster.rows()

    # Every acknowledged enqueue is stored once (ids are the key), nothing else is.
    kept: dict[str, list[str]] = {
        name: [] for name in (f"shared-{k}" for k in range(UNIQUE_NAMES))
    }
    for d in done:
        for name, (wid, enqueued) in d["unique"].items():
            if enqueued:
                kept[name].append(wid)
    assert all(len(ids) == 1 for ids in kept.values()), kept  # one KEEP won per name
    unique_ids = {ids[0] for ids in kept.values()}
    assert set(rows) == set(works) | set(cancelled) | unique_ids
    by_name = Counter(name for _, _, name in rows.values() if name is not None)
    assert by_name == dict.fromkeys(kept, 1)  # the names held across processes
    assert all(rows[wid][0] == "ENQUEUED" for wid in unique_ids)  # due in an hour
    assert all(rows[wid][0] == "CANCELLED" for wid in cancelled)

    # Each work ran exactly once, in the scheduling process; nothing else ran.
    runs = cluster.runs()
    assert Counter(wid for _, wid, _ in runs) == dict.fromkeys(works, 1)
    assert {pid for pid, _, _ in runs} == {first.pid}
    assert all(rows[wid][1] == 1 for wid in works)

    # A producer's wait() returned the worker process's result.
    assert all(d["waited"] == [d["works"][0], "SUCCEEDED"] for d in done)
    assert cluster.role_changes("first") == ["scheduler"]
    assert cluster.role_changes("second") == ["standby"]
    cluster.close()
    assert (first.returncode, second.returncode) == (0, 0), cluster.output("first")


async def test_a_standby_takes_over_when_the_scheduling_process_is_killed(
    cluster: Cluster,
) -> None:
    first, second = await start_worker_and_standby(cluster, "--concurrency", "10")
    n = 60
    requests = [wm.OneTimeWorkRequest("step", input={"hold": 0.3}) for _ in range(n)]
    ids = [str(r.id) for r in requests]
    async with wm.WorkManager(cluster.url, run_work=False) as producer:
        await producer.enqueue(*requests)
        # Some outcomes written (a run's place is freed when its worker returns, so runs
        # started say nothing of outcomes written), and the next works running.
        await until(
            lambda: (
                len(cluster.runs()) >= 15
                and sum(row[0] == "SUCCEEDED" for row in cluster.rows().values()) >= 5
            ),
            "outcomes written in the scheduler",
            first,
        )
        # Frozen, the scheduling process keeps the lock and writes nothing: what the file
        # holds now is what it held at the kill.
        first.send_signal(signal.SIGSTOP)
        at_kill = cluster.rows()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        finished_before = {wid for wid in ids if at_kill[wid][0] == "SUCCEEDED"}
        running_before = {wid for wid in ids if at_kill[wid][0] == "RUNNING"}
        assert finished_before, "some works had finished before the kill"
        assert running_before, "some works were running at the kill"

        await until(
            lambda: cluster.role_changes("second") == ["standby", "scheduler"],
            "the standby takes over",
            second,
        )
        later = [wm.OneTimeWorkRequest("step") for _ in range(10)]
        await producer.enqueue(*later)  # the new scheduler hears of them
        with anyio.fail_after(DEADLINE):
            infos = [await producer.wait(wid) for wid in ids]
            later_infos = [await producer.wait(r.id) for r in later]
    assert {info.state for info in infos} == {wm.WorkState.SUCCEEDED}
    assert {info.state for info in later_infos} == {wm.WorkState.SUCCEEDED}

    runs = cluster.runs()
    after = [wid for pid, wid, _ in runs if pid == second.pid]
    assert {pid for pid, _, _ in runs} <= {first.pid, second.pid}
    later_ids = {str(r.id) for r in later}
    assert Counter(wid for wid in after if wid in later_ids) == dict.fromkeys(later_ids, 1)
    after = [wid for wid in after if wid not in later_ids]
    assert set(after) == set(ids) - finished_before  # the rest ran in the new scheduler
    assert len(after) == len(set(after))
    assert not (set(after) & finished_before), "a finished work ran again"
    assert running_before <= set(after), "every interrupted run ran again"
    twice = {wid for wid, count in Counter(wid for _, wid, _ in runs).items() if count > 1}
    assert twice <= running_before, "only the interrupted works ran twice"

    rows = cluster.rows()
    # The interrupted run counts as an attempt (semantics 15), the run after it as another.
    assert all(rows[wid][1] == 2 for wid in running_before)
    assert all(rows[wid][1] == 1 for wid in set(ids) - running_before)
    attempts_seen = {wid: attempt for pid, wid, attempt in runs if pid == second.pid}
    assert all(attempts_seen[wid] == 1 for wid in running_before)
    cluster.close()
    assert second.returncode == 0, cluster.output("second")
