"""Crash recovery on SQLite: SIGKILL a manager mid-run, restart it on the same file, and
check that no work is lost and no finished work runs again (semantics 15)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("wm_async.stores.sqlite")

N_WORKS = 200

CHILD = textwrap.dedent(
    """
    import asyncio, os, random, sys
    from datetime import timedelta
    import anyio
    import wm_async as wm

    db, log, phase, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    async def main() -> None:
        manager = wm.WorkManager(f"sqlite:///{db}", max_concurrency=20,
                                 shutdown_grace=timedelta(seconds=30))
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

        @manager.worker("step")
        async def step(ctx: wm.WorkContext) -> wm.Result | None:
            # One write() per line with O_APPEND: a line is never torn by SIGKILL.
            os.write(fd, f"{phase} {ctx.id} {ctx.run_attempt_count}\\n".encode())
            await anyio.sleep(random.uniform(0.005, 0.03))
            if int(ctx.input["i"]) % 7 == 0 and ctx.run_attempt_count == 0:
                return wm.Result.retry()
            return None

        async with manager:
            if phase == "A":
                reqs = [wm.OneTimeWorkRequest("step", input={"i": i},
                                              backoff=wm.Backoff(delay=timedelta(seconds=0.05)))
                        for i in range(n)]
                await manager.enqueue(*reqs)
                os.write(fd, b"enqueued\\n")
            while True:
                left = await manager.get_work_infos(wm.WorkQuery(
                    states={wm.WorkState.ENQUEUED, wm.WorkState.RUNNING}))
                if not left:
                    break
                await anyio.sleep(0.05)
        os.write(fd, f"{phase} done\\n".encode())

    asyncio.run(main())
    """
)


def _states(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, state FROM wm_work").fetchall())


def _log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_sigkill_mid_run_loses_nothing_and_reruns_nothing_finished(tmp_path: Path) -> None:
    db, log, child = tmp_path / "wm.db", tmp_path / "runs.log", tmp_path / "child.py"
    child.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    proc = subprocess.Popen(
        [sys.executable, str(child), str(db), str(log), "A", str(N_WORKS)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        # Kill once a fair share of runs has started and some outcomes are written (a
        # run's place is freed when its worker returns: runs started run ahead of the
        # outcomes written), while others are still running.
        while len(_log_lines(log)) < 80 or "SUCCEEDED" not in _states(db).values():
            assert proc.poll() is None, "the child exited before it could be killed"
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    before = _states(db)
    assert len(before) == N_WORKS, "enqueue is atomic and durable before it returns"
    finished_before = {wid for wid, state in before.items() if state == "SUCCEEDED"}
    running_before = {wid for wid, state in before.items() if state == "RUNNING"}
    assert finished_before, "some works had finished before the kill"
    assert running_before, "some works were running at the kill"
    assert not any(line == "A done" for line in _log_lines(log))

    restarted = subprocess.run(
        [sys.executable, str(child), str(db), str(log), "B", str(N_WORKS)],
        env=env,
        timeout=120,
        check=False,
        capture_output=True,
        text=True,
    )
    assert restarted.returncode == 0, restarted.stderr

    after = _states(db)
    assert len(after) == N_WORKS, "no work lost"
    assert set(after.values()) == {"SUCCEEDED"}
    runs_b = [
        line.split() for line in _log_lines(log) if line.startswith("B ") and "done" not in line
    ]
    rerun_ids = {wid for _, wid, _ in runs_b}
    assert not (rerun_ids & finished_before), "a work that had SUCCEEDED ran again"
    assert running_before <= rerun_ids, "every interrupted run ran again"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        attempts = dict(conn.execute("SELECT id, run_attempt_count FROM wm_work").fetchall())
    # The interrupted run counts as an attempt (semantics 15), the re-run as another.
    assert all(attempts[wid] >= 2 for wid in running_before)
