"""Producer processes and one worker process on one SQLite file, against one process
that enqueues and runs the same works (the throughput workload's shape): N immediately
due trivial works, enqueued in batches (``enqueue(*requests)``, 1,000 a call by default;
``--batch 1``: one call per work), the same pattern on both sides.

- **single process**: one ``WorkManager(url)`` enqueues the N works and runs them.
- **P producers + 1 worker**: P processes (``WorkManager(url, run_work=False)``) each
  enqueue N/P of the works at once; one worker process (``WorkManager(url)``, the
  scheduler) runs them. The worker learns of the producers' enqueues through the SQLite
  cross-process notifications.

Every process is started first and the enqueues begin at a common start time a few
seconds ahead (process start-up is not timed); the figure is N / (the moment the worker
process sees the last work's SUCCEEDED in the file - the start time). Rounds are
interleaved (single, 1, 2, 4 producers, single, …); the table shows medians and ranges.

    python -m benchmarks.multiprocess [--n 20000] [--producers 1,2,4] [--rounds 3]
        [--batch 1000] [--concurrency 500]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from typing import Any

import anyio

import wm_async as wm
from benchmarks._common import summary, table, temp_sqlite_url

#: Seconds between the processes being started and the common start of the enqueues.
LEAD = 3.0


def _succeeded(path: str) -> int:
    with sqlite3.connect(path, timeout=30) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM wm_work WHERE state = 'SUCCEEDED'"
        ).fetchone()
    conn.close()
    return int(count)


def _say(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def _sleep_until(at: float) -> None:
    await anyio.sleep(max(0.0, at - time.time()))


async def _enqueue(manager: wm.WorkManager, n: int, batch: int) -> None:
    for start in range(0, n, batch):
        await manager.enqueue(
            *(wm.OneTimeWorkRequest("noop") for _ in range(min(batch, n - start)))
        )


async def child_worker(args: argparse.Namespace) -> None:
    """The worker process (``--child worker``), or the single process (``single``): runs
    the N works; reads the start time from stdin once it schedules; reports when the
    file holds N SUCCEEDED works."""
    manager = wm.WorkManager(args.url, max_concurrency=args.concurrency)
    ran = 0
    all_ran = anyio.Event()

    @manager.worker("noop")
    async def noop(ctx: wm.WorkContext) -> None:
        nonlocal ran
        ran += 1
        if ran == args.n:
            all_ran.set()

    async with manager:
        assert manager.role == "scheduler", manager.role
        _say({"ready": time.time()})
        start = float(await anyio.to_thread.run_sync(sys.stdin.readline))
        if args.child == "single":
            await _sleep_until(start)
            await _enqueue(manager, args.n, args.batch)
        await all_ran.wait()
        path = args.url.removeprefix("sqlite:///")
        # The recorder commits the last outcomes: read the file as the others do.
        while await anyio.to_thread.run_sync(_succeeded, path) < args.n:  # noqa: ASYNC110
            await anyio.sleep(0.002)
        end = time.time()
        _say({"end": end, "runs": ran})


async def child_producer(args: argparse.Namespace) -> None:
    """A producer process (``--child producer``): enqueues its share at the start time."""
    async with wm.WorkManager(args.url, run_work=False) as manager:
        ready = time.time()
        await _sleep_until(args.start)
        await _enqueue(manager, args.n, args.batch)
        _say({"ready": ready, "enqueued": time.time()})


def _spawn(args: argparse.Namespace, child: str, url: str, n: int, start: float = 0.0) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.multiprocess", "--child", child, "--url", url,
         "--n", str(n), "--batch", str(args.batch), "--concurrency", str(args.concurrency),
         "--start", repr(start)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _read(proc: Any) -> dict[str, Any]:
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"a benchmark process exited ({proc.returncode}) without a result")
    result: dict[str, Any] = json.loads(line)
    return result


def measure(args: argparse.Namespace, producers: int) -> float:
    """One round: works/s with ``producers`` producer processes (0: single process)."""
    url, directory = temp_sqlite_url("multiprocess")
    procs: list[Any] = []
    try:
        worker = _spawn(args, "single" if producers == 0 else "worker", url, args.n)
        procs.append(worker)
        _read(worker)  # it schedules
        start = time.time() + LEAD
        shares = [args.n // producers + (i < args.n % producers) for i in range(producers)]
        procs += [_spawn(args, "producer", url, share, start) for share in shares]
        worker.stdin.write(f"{start!r}\n")
        worker.stdin.flush()
        for proc in procs[1:]:
            if _read(proc)["ready"] > start:
                raise RuntimeError("start-up took longer than the lead time; raise LEAD")
        result = _read(worker)
        if result["runs"] != args.n:
            raise RuntimeError(f"{result['runs']} runs for {args.n} works")
        for proc in procs:
            proc.stdin.close()
            if proc.wait(timeout=60):
                raise RuntimeError(f"a benchmark process failed ({proc.returncode})")
        return float(args.n / (result["end"] - start))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--producers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="works per enqueue call")
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--child", choices=["worker", "single", "producer"])
    parser.add_argument("--url")
    parser.add_argument("--start", type=float, default=0.0)
    args = parser.parse_args()
    if args.child == "producer":
        anyio.run(child_producer, args)
        return
    if args.child is not None:
        anyio.run(child_worker, args)
        return

    counts = [0, *(int(p) for p in args.producers.split(","))]
    figures: dict[int, list[float]] = {c: [] for c in counts}
    for _ in range(args.rounds):
        for count in counts:
            figures[count].append(measure(args, count))
    single = summary(figures[0])[0]
    rows = []
    for count in counts:
        median, low, high = summary(figures[count])
        label = "single process" if count == 0 else f"{count} producer(s) + 1 worker"
        rows.append([label, median, low, high, f"{median / single:.0%}"])
    pattern = "one work per call" if args.batch == 1 else f"batches of {args.batch:,} per call"
    print(
        f"multiprocess: {args.n:,} trivial works on one SQLite file, enqueued in {pattern} "
        f"(each producer its share), max_concurrency={args.concurrency}; from the common "
        f"start to the last SUCCEEDED in the file; medians of {args.rounds} rounds"
    )
    print(table(["processes", "works/s", "min", "max", "vs single process"], rows))
    four = summary(figures[4])[0] if 4 in figures else None
    if four is not None:
        verdict = "PASS" if four >= 0.8 * single else "MISS"
        print(f"target: 4 producers + 1 worker >= 80% of single process: {verdict}")


if __name__ == "__main__":
    main()
