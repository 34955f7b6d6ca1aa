"""Soak: a million works through the SQLite store, pruning as it goes.

Works are enqueued in batches while earlier ones run (a steady backlog of about
``--backlog``), and finished works are pruned every ``--prune-every`` works, as the
automatic pruner does with a short ``keep_results_for``. Every ``--report`` works it
prints the resident memory, the database size (file + WAL) and the throughput of that
slice. Target: memory and size flat (within 10% after warm-up), and the last slice's
throughput within 10% of the first's.

    python -m benchmarks.soak [--n 1000000] [--report 100000]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import anyio

import wm_async as wm
from benchmarks._common import rss_bytes, table, temp_sqlite_url


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


async def soak(url: str, path: Path, args: argparse.Namespace) -> list[list[object]]:
    manager = wm.WorkManager(url, max_concurrency=args.concurrency, keep_results_for=0)
    done = 0
    slice_done = anyio.Event()
    next_report = args.report

    @manager.worker("noop")
    async def work(ctx: wm.WorkContext) -> None:
        nonlocal done, slice_done
        done += 1
        if done >= next_report:
            slice_done.set()

    rows: list[list[object]] = []
    async with manager:
        enqueued = 0
        started = time.perf_counter()
        slice_start = started
        first_rate: float | None = None
        next_prune = args.prune_every
        while next_report <= args.n:
            # Keep about `backlog` works pending: enqueue when the backlog runs low.
            while enqueued < args.n and enqueued - done < args.backlog:
                size = min(args.batch, args.n - enqueued)
                await manager.enqueue(*[wm.OneTimeWorkRequest("noop") for _ in range(size)])
                enqueued += size
            if done >= next_report:
                now = time.perf_counter()
                rate = args.report / (now - slice_start)
                first_rate = first_rate or rate
                await manager.prune_work()
                rows.append(
                    [
                        f"{next_report:,}",
                        round(rss_bytes() / 2**20, 1),
                        round(db_bytes(path) / 2**20, 1),
                        round(rate),
                        f"{rate / first_rate:.2f}",
                    ]
                )
                print(*rows[-1], sep="\t", flush=True)
                slice_start = time.perf_counter()
                next_report += args.report
                slice_done = anyio.Event()
            elif enqueued - done >= args.backlog or enqueued >= args.n:
                with anyio.move_on_after(0.05):
                    await slice_done.wait()
            if done >= next_prune:
                await manager.prune_work()
                next_prune += args.prune_every
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--report", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--prune-every", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args()
    url, directory = temp_sqlite_url("soak")
    try:
        print("works\tRSS MiB\tdb MiB\tjobs/s\tvs first")
        rows = await soak(url, directory / "bench.db", args)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(table(["works", "RSS MiB", "db MiB", "jobs/s", "vs first"], rows))
    if len(rows) >= 3:
        rss = [float(str(r[1])) for r in rows[1:]]
        size = [float(str(r[2])) for r in rows[1:]]
        last = float(str(rows[-1][4]))
        print(
            f"\nafter warm-up: RSS {min(rss)}-{max(rss)} MiB "
            f"({(max(rss) / min(rss) - 1) * 100:.0f}% spread), "
            f"db {min(size)}-{max(size)} MiB ({(max(size) / min(size) - 1) * 100:.0f}% spread); "
            f"last slice at {last:.2f}x the first's throughput"
        )


if __name__ == "__main__":
    anyio.run(main)
