"""The crash matrix: SIGKILL a manager at random moments (also just before and just after
a COMMIT), restart it on the same store (SQLite, and PostgreSQL), and check the
invariants after every trial.

- no work lost: every setup step is stored entirely or not at all, and every stored
  work is still there, finished as its kind says;
- no finished work ran again: a work finished when the process died has no later run;
- every interrupted run ran again, with the interrupted attempt counted;
- chains are consistent: steps ran in order, with their prerequisites' outputs, and the
  dependents of a failure never ran; unique names hold one chain (APPEND) or at most
  one unfinished work (KEEP);
- ``PRAGMA integrity_check`` is ``ok`` after the kill and at the end (PostgreSQL: no
  dependency edge outlives its work).

``WM_ASYNC_FAULT_TRIALS`` sets the number of trials (default 50); a failure names the
seed and kill mode that reproduce it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import attrs
import pytest
from conftest import pg_execute, require_postgres

TRIALS = int(os.environ.get("WM_ASYNC_FAULT_TRIALS", "50"))
MODES = ("timer", "before-commit", "after-commit", "timer")
CHILD = Path(__file__).with_name("child.py")
FINISHED = {"SUCCEEDED", "FAILED", "CANCELLED"}


def _load_child() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wm_async_fault_child", CHILD)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


child = _load_child()


@attrs.frozen
class Row:
    state: str
    attempts: int
    unique_name: str | None
    periodic: bool
    input: dict[str, Any]
    output: dict[str, Any]


_COLUMNS = "id, state, run_attempt_count, unique_name, periodic, input, output"


def _rows(rows: list[tuple[Any, ...]]) -> dict[str, Row]:
    return {
        r[0]: Row(r[1], r[2], r[3], bool(r[4]), json.loads(r[5] or "{}"), json.loads(r[6] or "{}"))
        for r in rows
    }


def snapshot(target: Path | str) -> dict[str, Row]:
    """Every work in the store (a SQLite file, after checking its integrity, or a
    PostgreSQL schema, after checking that every edge joins two stored works)."""
    if isinstance(target, str):
        return anyio.run(_pg_snapshot, target)
    if not target.exists():
        return {}
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "wm_work" not in tables:
            return {}  # killed before the first migration committed
        return _rows(conn.execute(f"SELECT {_COLUMNS} FROM wm_work").fetchall())


async def _pg_snapshot(schema: str) -> dict[str, Row]:
    tables = {r[0] for r in await pg_execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )}  # fmt: skip
    if "wm_dependency" not in tables:
        return {}  # killed before the migrations committed
    dangling = await pg_execute(
        f'SELECT count(*) FROM "{schema}".wm_dependency AS d WHERE NOT EXISTS '
        f'(SELECT 1 FROM "{schema}".wm_work AS w WHERE w.id = d.work_id)'
    )
    assert dangling == [(0,)], "an edge outlives its work"
    return _rows(await pg_execute(f'SELECT {_COLUMNS} FROM "{schema}".wm_work'))


async def _pg_backends_gone(app: str) -> None:
    query = "SELECT 1 FROM pg_stat_activity WHERE application_name = $1"
    with anyio.fail_after(60):
        while True:
            if not await pg_execute(query, app):
                return
            await anyio.sleep(0.05)


def log_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


@attrs.frozen
class Trial:
    seed: int
    mode: str

    def __str__(self) -> str:
        return f"seed={self.seed} mode={self.mode}"


def run_trial(trial: Trial, folder: Path, pg_dsn: str | None = None) -> bool:
    """Run one trial; return whether the kill interrupted a running work."""
    folder.mkdir()
    log = folder / "runs.log"
    target: Path | str
    if pg_dsn is None:
        target = folder / "wm.db"
        url = f"sqlite:///{target}"
    else:
        target = f"wm_fault_{os.getpid()}_{trial.seed}"
        url = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}schema={target}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, str(CHILD), url, str(log)]
    rng = random.Random(trial.seed)
    try:
        return _trial(trial, target, command, env, rng, log)
    finally:
        if isinstance(target, str):
            anyio.run(pg_execute, f'DROP SCHEMA IF EXISTS "{target}" CASCADE')


def _trial(
    trial: Trial,
    target: Path | str,
    command: list[str],
    env: dict[str, str],
    rng: random.Random,
    log: Path,
) -> bool:
    app, command_a = None, command
    if isinstance(target, str):  # name phase A's connections, to see them end
        app = f"wm_fault_a_{os.getpid()}_{trial.seed}"
        command_a = [*command[:2], f"{command[2]}&application_name={app}", *command[3:]]
    first = subprocess.Popen(
        [*command_a, "A", str(trial.seed), trial.mode], env=env, stderr=subprocess.PIPE
    )
    try:
        if trial.mode == "timer":
            # Python starts in about 0.2 s; the whole phase takes about a second.
            time.sleep(rng.uniform(0.15, 1.0))
            first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    _, stderr = first.communicate()
    assert first.returncode in (0, -signal.SIGKILL), stderr.decode()
    if app is not None:
        # A statement the killed process sent runs on to its end, and an autocommitted
        # one (a claim, outcomes recorded) commits: the store is only still once its
        # backends have gone.
        anyio.run(_pg_backends_gone, app)

    before = snapshot(target)
    check_atomic_steps(trial, before)

    second = subprocess.run(
        [*command, "B", str(trial.seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    after = snapshot(target)
    check_final(trial, before, after, log_lines(log))
    return any(r.state == "RUNNING" for r in before.values())


def check_atomic_steps(trial: Trial, stored: dict[str, Row]) -> None:
    work = child.Workload(trial.seed)
    for step in (work.plain, work.chain, work.failing):
        present = {str(r.id) in stored for r in step}
        assert len(present) == 1, f"{trial}: a setup step was stored in part"
    unfinished_keep = [
        r for r in stored.values() if r.unique_name == "keep" and r.state not in FINISHED
    ]
    assert len(unfinished_keep) <= 1, f"{trial}: KEEP let two unfinished works in"


def check_final(
    trial: Trial, before: dict[str, Row], after: dict[str, Row], lines: list[list[str]]
) -> None:
    work = child.Workload(trial.seed)

    def state(request: Any) -> str:
        return after[str(request.id)].state

    # No work lost, each finished as its kind says.
    assert all(state(r) == "SUCCEEDED" for r in work.plain), trial
    retried = [r for r in work.plain if r.input["retry"]]
    assert all(after[str(r.id)].attempts >= 2 for r in retried), trial
    c0a, c0b, c1, c2 = work.chain
    assert [state(r) for r in work.chain] == ["SUCCEEDED"] * 4, trial
    assert after[str(c1.id)].input == {"emit": {"c": 3}, "a": 1, "b": 2}, trial
    assert after[str(c2.id)].input == {"c": 3}, trial
    f2 = work.failing[2]
    assert [state(r) for r in work.failing] == ["SUCCEEDED", "FAILED", "FAILED"], trial
    kept = [wid for wid, r in after.items() if r.unique_name == "keep"]
    assert len(kept) == 1, f"{trial}: {kept}"
    assert after[kept[0]].state == "SUCCEEDED", trial
    assert [state(r) for r in work.append] == ["SUCCEEDED"] * 5, trial
    assert after[str(work.append[-1].id)].output == {"seen": [0, 1, 2, 3, 4]}, trial
    tick = after[str(work.tick.id)]
    assert tick.periodic, trial
    assert tick.state in ("ENQUEUED", "RUNNING"), trial

    # Nothing finished ran again; everything interrupted did.
    starts_b = {wid for phase, event, wid, *_ in _runs(lines) if phase == "B" and event == "start"}
    finished_before = {wid for wid, r in before.items() if r.state in FINISHED}
    assert not (starts_b & finished_before), f"{trial}: finished work ran again"
    running_before = {wid for wid, r in before.items() if r.state == "RUNNING"}
    assert running_before <= starts_b, f"{trial}: an interrupted run did not run again"
    # KEEP may legitimately replace a finished work under its name: the only works that
    # may be gone at the end.
    replaceable = {str(r.id) for r in work.keep}
    assert set(before) - set(after) <= replaceable, f"{trial}: a work was lost"
    for wid in running_before - {str(work.tick.id)}:
        if wid in after:
            assert after[wid].attempts > before[wid].attempts, f"{trial}: attempt not counted"

    # Chains ran in order; a failed prerequisite's dependents never ran.
    order = _runs(lines)

    def last(event: str, request: Any) -> int:
        hits = [
            i for i, (_, e, wid, *_) in enumerate(order) if e == event and wid == str(request.id)
        ]
        assert hits, f"{trial}: {request.id} never {event}ed"
        return hits[-1]

    assert last("start", c1) > max(last("end", c0a), last("end", c0b)), trial
    assert last("start", c2) > last("end", c1), trial
    assert str(f2.id) not in {wid for _, _, wid, *_ in order}, trial
    for earlier, later in zip(work.append, work.append[1:], strict=False):
        assert last("start", later) > last("end", earlier), f"{trial}: APPEND out of order"


def _runs(lines: list[list[str]]) -> list[list[str]]:
    return [line for line in lines if len(line) == 4 and line[1] in ("start", "end")]


def _matrix(tmp_path: Path, pg_dsn: str | None = None) -> None:
    trials = [Trial(seed, MODES[seed % len(MODES)]) for seed in range(TRIALS)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        interrupted = list(
            pool.map(lambda t: run_trial(t, tmp_path / f"trial-{t.seed}", pg_dsn), trials)
        )
    # The kills must land mid-run often enough for the matrix to mean something.
    assert sum(interrupted) >= TRIALS // 5, f"only {sum(interrupted)} kills caught a run"


@pytest.mark.timeout(max(900, TRIALS * 3))
def test_crash_matrix_sqlite(tmp_path: Path) -> None:
    _matrix(tmp_path)


@pytest.mark.postgres
@pytest.mark.timeout(max(1200, TRIALS * 4))
def test_crash_matrix_postgres(tmp_path: Path) -> None:
    """The same matrix on PostgreSQL: the restarted process rescues the killed one's runs
    once their (1 s) lease expires."""
    dsn = anyio.run(require_postgres)
    _matrix(tmp_path, dsn)
