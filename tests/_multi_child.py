"""A process of ``test_multiprocess.py`` (not a test module), on one SQLite file.

``worker``: a ``WorkManager(url)`` with the worker ``step`` registered. Each run appends
``<pid> <work id> <attempt>`` to the runs log (one ``write()`` on a file opened with
``O_APPEND``: a line is never torn, even by SIGKILL), then sleeps ``input["hold"]``
seconds. The manager's role is appended to the roles file at start and at every change
(``scheduler`` or ``standby``). It stops gracefully once the stop file exists.

``producer``: a ``WorkManager(url, run_work=False)`` that enqueues ``--n`` works (half
one call each, half in batches of 10), tries ``--unique`` unique works with KEEP under
names every producer shares (due in an hour, so they stay unfinished), enqueues
``--cancels`` works due in an hour and cancels them, then waits for its first work and
writes what it did as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import anyio

import wm_async as wm

HOUR = 3600


def stopped(path: str) -> bool:
    """Whether the test asked the process to stop."""
    return Path(path).exists()


async def worker(args: argparse.Namespace) -> None:
    manager = wm.WorkManager(args.url, max_concurrency=args.concurrency, shutdown_grace=30)
    runs = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    roles = os.open(args.roles, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @manager.worker("step")
    async def step(ctx: wm.WorkContext) -> None:
        os.write(runs, f"{os.getpid()} {ctx.id} {ctx.run_attempt_count}\n".encode())
        await anyio.sleep(float(ctx.input.get("hold", 0)))

    async with manager:
        role = ""
        while not stopped(args.stop):
            if manager.role != role:
                role = manager.role
                os.write(roles, f"{role}\n".encode())
            await anyio.sleep(0.02)


async def producer(args: argparse.Namespace) -> dict[str, object]:
    manager = wm.WorkManager(args.url, run_work=False)
    hold = {"hold": args.hold}
    works: list[str] = []
    unique: dict[str, list[object]] = {}  # name -> [work id, enqueued?]
    cancelled: list[str] = []
    async with manager:
        assert manager.role == "producer"
        half = args.n // 2
        for _ in range(half):
            request = wm.OneTimeWorkRequest("step", input=hold)
            await manager.enqueue(request)
            works.append(str(request.id))  # acknowledged: enqueue returned
        for start in range(half, args.n, 10):
            batch = [
                wm.OneTimeWorkRequest("step", input=hold) for _ in range(min(10, args.n - start))
            ]
            await manager.enqueue(*batch)
            works.extend(str(r.id) for r in batch)
        for k in range(args.unique):
            request = wm.OneTimeWorkRequest("step", initial_delay=HOUR)
            kept = await manager.enqueue_unique_work(f"shared-{k}", "KEEP", request)
            unique[f"shared-{k}"] = [str(request.id), kept]
        for _ in range(args.cancels):
            request = wm.OneTimeWorkRequest("step", initial_delay=HOUR)
            await manager.enqueue(request)
            assert await manager.cancel_work_by_id(request.id)
            cancelled.append(str(request.id))
        waited = await manager.wait(works[0], timeout=args.wait_timeout) if works else None
    return {
        "works": works,
        "unique": unique,
        "cancelled": cancelled,
        "waited": None if waited is None else [str(waited.id), waited.state.value],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["worker", "producer"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--log")
    parser.add_argument("--roles")
    parser.add_argument("--stop")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--out")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--unique", type=int, default=0)
    parser.add_argument("--cancels", type=int, default=0)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--wait-timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.mode == "worker":
        anyio.run(worker, args)
    else:
        Path(args.out).write_text(json.dumps(anyio.run(producer, args)))


if __name__ == "__main__":
    main()
