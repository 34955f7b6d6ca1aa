"""Instructions per work: the memory store's throughput path, counted by callgrind.

Wall-clock figures on a shared 2-core machine move by a third between runs; the number
of instructions the interpreter executes per work does not (two runs agree to 0.01%).
This runs N immediately due trivial works through a ``memory://`` manager (requests
built in batches of 1,000, as the throughput workload does) under valgrind's callgrind,
at two sizes, and prints the difference per work: start-up and imports cancel out. The
garbage collector's share is the difference with collection disabled.

Needs valgrind (``apt install valgrind``); about a minute. Used to measure each change
to the hot path before and after (see benchmarks/README.md).

    python -m benchmarks.instructions [--small 1000] [--large 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys

import wm_async as wm

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


async def _drain(n: int) -> None:
    manager = wm.WorkManager("memory://", max_concurrency=500)
    done = asyncio.Event()
    count = 0

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async with manager:
        last: wm.OneTimeWorkRequest | None = None
        for start in range(0, n, 1000):
            requests = [wm.OneTimeWorkRequest("job") for _ in range(min(1000, n - start))]
            await manager.enqueue(*requests)
            last = requests[-1]
        await done.wait()
        if last is not None:
            await manager.wait(last.id)


def _count(n: int, *, collect: bool) -> int:
    """Instructions of a whole child process draining ``n`` works."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        str(n),
    ]
    if not collect:
        command.append("--no-gc")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    match = _COLLECTED.search(done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=6000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-gc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        if args.no_gc:
            gc.disable()
        asyncio.run(_drain(args.child))
        return
    if shutil.which("valgrind") is None:
        print("skipped: valgrind is not installed (apt install valgrind)")
        return
    works = args.large - args.small
    print(f"memory store, {works:,} works (runs of {args.large:,} minus {args.small:,})")
    for label, collect in (("with the garbage collector", True), ("collector disabled", False)):
        per_work = (
            _count(args.large, collect=collect) - _count(args.small, collect=collect)
        ) / works
        print(f"  {label:28s} {per_work:>10,.0f} instructions per work")


if __name__ == "__main__":
    main()
