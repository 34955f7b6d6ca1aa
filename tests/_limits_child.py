"""A process of ``test_flow_limits_processes.py`` (not a test module): a
``WorkManager`` on a PostgreSQL or SQLite URL with the workers ``capped``
(``max_running`` given) and ``rated`` (``RateLimit(n, per=, burst=)`` given).

The workers count themselves, not through the store: a ``capped`` run adds one to this
process's entry in a JSON gauge file (under ``flock``), records the most runs at once
across the live processes, holds for its input's ``hold`` seconds (``first_hold`` on its
first attempt), and takes its one back; a ``rated`` run logs its start time. Each run
logs ``<pid> <worker> <work id> <time>``. The process prints ``ready <role>`` once
started (``scheduler`` or ``standby`` on SQLite) and stops gracefully when its stdin
closes.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from typing import Any

import anyio

import wm_async as wm
from wm_async.stores.postgres import PostgresStore


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a killed process its parent has not reaped yet, a zombie,
    runs nothing any more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: kill() answered


def gauge(path: str, delta: int) -> None:
    """Add ``delta`` to this process's running count; record the most at once (of
    the processes alive: a killed one's runs ended with it)."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        state: dict[str, Any] = json.loads(text) if text else {"running": {}, "most": 0}
        running: dict[str, int] = dict(state["running"])
        pid = str(os.getpid())
        running[pid] = running.get(pid, 0) + delta
        now = sum(n for p, n in running.items() if _alive(int(p)))
        most = max(int(str(state["most"])), now)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"running": running, "most": most}))


async def main(url: str, log: str, gauge_path: str, cap: str, rate: str, lease: str) -> None:
    store: PostgresStore | str = url
    if not url.startswith("sqlite"):
        store = PostgresStore(url, lease=float(lease), rescue_interval=float(lease) / 4)
    manager = wm.WorkManager(store, max_concurrency=8, shutdown_grace=30)
    runs = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    n, per, burst = (float(x) for x in rate.split(","))

    def note(ctx: wm.WorkContext) -> None:
        os.write(runs, f"{os.getpid()} {ctx.worker} {ctx.id} {time.time():.6f}\n".encode())

    async def capped(ctx: wm.WorkContext) -> None:
        gauge(gauge_path, 1)
        note(ctx)
        try:
            hold = ctx.input.get("first_hold" if ctx.run_attempt_count == 0 else "hold")
            await anyio.sleep(float(hold) if isinstance(hold, int | float) else 0.05)
        finally:
            gauge(gauge_path, -1)

    async def rated(ctx: wm.WorkContext) -> None:
        note(ctx)

    manager.register_worker("capped", capped, max_running=int(cap))
    manager.register_worker(
        "rated", rated, rate_limit=wm.RateLimit(int(n), per=per, burst=int(burst))
    )
    async with manager:
        sys.stdout.write(f"ready {manager.role}\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the parent closes it


if __name__ == "__main__":
    url, log, gauge_path, cap, rate, lease = sys.argv[1:7]
    anyio.run(main, url, log, gauge_path, cap, rate, lease)
