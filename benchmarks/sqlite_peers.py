"""SQLite notifications between processes: what a commit costs with no peer, with the
sender switched off, and with followers in other processes; and how long a follower
takes to hear of a commit.

    python -m benchmarks.sqlite_peers [--n 3000] [--rounds 3] [--peers 2]

Each commit is one ``insert`` of one work, awaited before the next (the worst case for a
per-commit cost: no group commit to share it). The latency is from the writer's
``insert`` returning to the follower's listener being called (both read
``time.time()`` on one machine); the follower's poll is an hour, so only datagrams count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from wm_async.stores import _sqlite_peers as peers
from wm_async.stores._base import StoreListener
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing.conformance._helpers import record


async def _follow(path: str) -> None:
    """The child: follow ``path``, print ``<time> <ids>`` per call, until stdin closes."""

    async def changed(ids: Sequence[str] | None) -> None:
        sys.stdout.write(f"{time.time()} {','.join(ids or ['*'])}\n")
        sys.stdout.flush()

    listener = StoreListener(now=time.time, real_time=True, wake=lambda: None, changed=changed)
    store = SQLiteStore(path, poll_interval=3600)
    async with store, anyio.create_task_group() as tg:
        await tg.start(store.follow, listener)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.read)
        tg.cancel_scope.cancel()


async def _commits(path: str, n: int) -> tuple[float, dict[str, float]]:
    """Seconds per commit over ``n`` commits, and when each work's insert returned."""
    returned: dict[str, float] = {}
    async with SQLiteStore(path) as store:
        await store.insert([record()])  # warm up: the peer list is read
        start = time.perf_counter()
        for _ in range(n):
            work = record()
            await store.insert([work])
            returned[work.id] = time.time()
        elapsed = time.perf_counter() - start
    return elapsed / n, returned


class _Follower:
    """A follower process, its output read as it comes (a full pipe would stall it)."""

    def __init__(self, path: str) -> None:
        self.proc = _spawn(path)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(self.proc.stdout)

    def heard(self) -> dict[str, float]:
        """When it heard of each id (it is stopped first)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.reader.join(timeout=60)
        heard: dict[str, float] = {}
        for line in self.lines:
            stamp, _, ids = line.strip().partition(" ")
            for work_id in ids.split(","):
                heard.setdefault(work_id, float(stamp))
        return heard


def _spawn(path: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sqlite_peers", "--child", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


async def _round(folder: Path, n: int, n_peers: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    alone = str(folder / "alone.db")
    figures["alone"], _ = await _commits(alone, n)
    committed = peers.Notifier.committed
    peers.Notifier.committed = lambda self, ops: None  # type: ignore[method-assign]
    try:
        figures["sender off"], _ = await _commits(str(folder / "off.db"), n)
    finally:
        peers.Notifier.committed = committed  # type: ignore[method-assign]
    shared = str(folder / "shared.db")
    async with SQLiteStore(shared):
        pass
    children = [_Follower(shared) for _ in range(n_peers)]
    try:
        figures[f"{n_peers} followers"], returned = await _commits(shared, n)
    finally:
        heard = [child.heard() for child in children]
    delays = sorted(h[i] - t for h in heard for i, t in returned.items() if i in h)
    figures["heard"] = len(delays) / (len(returned) * n_peers)
    figures["latency p50"] = statistics.median(delays) if delays else float("nan")
    figures["latency p99"] = delays[int(len(delays) * 0.99)] if delays else float("nan")
    return figures


async def main(n: int, rounds: int, n_peers: int) -> None:
    results: list[dict[str, float]] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            results.append(await _round(Path(folder), n, n_peers))
    print(f"{n} commits of one insert each, {rounds} rounds (median, range)")
    for key in results[0]:
        values = sorted(r[key] for r in results)
        if key == "heard":
            print(f"  {key:14} {values[len(values) // 2]:.1%} of ids (min {values[0]:.1%})")
        else:
            scale, unit = 1e6, "µs"
            print(
                f"  {key:14} {statistics.median(values) * scale:8.1f} {unit}"
                f"  ({values[0] * scale:.1f}-{values[-1] * scale:.1f})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        anyio.run(_follow, args.child)
    else:
        anyio.run(main, args.n, args.rounds, args.peers)
