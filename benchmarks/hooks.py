"""Run hooks' cost: throughput with nothing registered, against a baseline checkout (the
commit before the hooks), with metrics on, and with tracing on (a no-op tracer
provider), side by side.

N immediately due trivial works through one manager (requests built and enqueued in
batches of 1,000, ``max_concurrency=500``), from the first enqueue to the last outcome
stored; each (configuration, round) in a fresh child process, rounds interleaved (A B C
D, A B C D, ...), the median and the range reported. Targets: metrics at most 10 %
below no hooks, tracing at most 20 % below.

    python -m benchmarks.hooks [--baseline ../wm-main] [--store memory|sqlite] [--n 20000]
        [--rounds 5]

``--baseline`` is a checkout whose ``wm_async`` package is the one to compare with (say
``git worktree add /tmp/wm-main main``); without it that row is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ("baseline", "none", "listener", "middleware", "imported", "metrics", "tracing")


async def _drain(n: int, store: str, config: str) -> tuple[float, float]:
    import wm_async as wm

    manager = wm.WorkManager(store, max_concurrency=500)
    if config == "listener":
        manager.add_listener(lambda event: None)
    elif config == "middleware":

        async def through(ctx: wm.WorkContext, call_next: wm.CallNext) -> wm.Result | None:
            return await call_next()

        manager.add_middleware(through)
    elif config == "imported":
        # prometheus_client imported, nothing registered: what its objects alone cost
        # the garbage collector (whose full collections traverse them).
        import prometheus_client  # noqa: F401
    elif config == "metrics":
        from prometheus_client import CollectorRegistry

        from wm_async.metrics import instrument

        instrument(manager, registry=CollectorRegistry())
    elif config == "tracing":
        from opentelemetry.trace import NoOpTracerProvider

        from wm_async.tracing import instrument as trace

        trace(manager, tracer_provider=NoOpTracerProvider())
    done = asyncio.Event()
    count = 0

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async with manager:
        start, cpu = time.perf_counter(), time.process_time()
        last: wm.OneTimeWorkRequest | None = None
        for first in range(0, n, 1000):
            requests = [wm.OneTimeWorkRequest("job") for _ in range(min(1000, n - first))]
            await manager.enqueue(*requests)
            last = requests[-1]
        await done.wait()
        assert last is not None
        await manager.wait(last.id)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return n / elapsed, n / cpu


def _child(args: argparse.Namespace) -> None:
    store = "memory://"
    with tempfile.TemporaryDirectory() as tmp:
        if args.store == "sqlite":
            store = f"sqlite:///{tmp}/bench.db"
        rate, cpu_rate = asyncio.run(_drain(args.n, store, args.config))
    print(json.dumps({"rate": rate, "cpu_rate": cpu_rate}))


def _command(
    config: str, args: argparse.Namespace, n: int, prefix: list[str]
) -> tuple[list[str], dict[str, str]]:
    here = Path(__file__).resolve().parent.parent
    root = Path(args.baseline).resolve() if config == "baseline" else here
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{here}", PYTHONHASHSEED="0")
    # The child imports wm_async from ``root`` (first on the path) and this script from
    # here: run it by path so that the baseline's own benchmarks are not involved.
    command = [
        *prefix,
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--config",
        "none" if config == "baseline" else config,
        "--store",
        args.store,
        "--n",
        str(n),
    ]
    return command, env


def _instructions(config: str, args: argparse.Namespace, n: int) -> int:
    """Instructions of a whole child process draining ``n`` works (callgrind)."""
    prefix = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command, env = _command(config, args, n, prefix)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    match = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"{config}: child failed:\n{done.stderr[-3000:]}")
    return int(match.group(1))


def _run(config: str, args: argparse.Namespace) -> tuple[float, float]:
    command, env = _command(config, args, args.n, [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{config}: child failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return float(figures["rate"]), float(figures["cpu_rate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", default=None, help="a checkout to compare with")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", choices=CONFIGS, help="these rows only")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count interpreter instructions per work under valgrind instead (runs of "
        "6,000 minus runs of 1,000 works)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="none", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    configs = [c for c in CONFIGS if (c != "baseline" or args.baseline)]
    configs = [c for c in configs if c == "none" or not args.only or c in args.only]
    labels = {
        "baseline": f"baseline ({args.baseline})",
        "none": "no hooks",
        "listener": "a no-op listener",
        "middleware": "a pass-through middleware",
        "imported": "prometheus_client imported",
        "metrics": "metrics (prometheus)",
        "tracing": "tracing (no-op provider)",
    }
    if args.instructions:
        small, large = 1000, 6000
        print(f"{args.store} store: instructions per work (runs of {large:,} - {small:,})")
        per_work = {
            c: (_instructions(c, args, large) - _instructions(c, args, small)) / (large - small)
            for c in configs
        }
        for config in configs:
            change = per_work[config] / per_work["none"] - 1
            print(f"{labels[config]:<32} {per_work[config]:>10,.0f} {change:>+8.1%}")
        return
    rates: dict[str, list[float]] = {c: [] for c in configs}
    cpu_rates: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for config in configs:
            rate, cpu_rate = _run(config, args)
            rates[config].append(rate)
            cpu_rates[config].append(cpu_rate)
    print(f"{args.store} store, N={args.n}, {args.rounds} rounds (median, range)")
    print(
        f"{'configuration':<32} {'works/s':>8} {'range':>15} {'vs none':>8}   "
        f"{'works/CPU-s':>11} {'range':>15} {'vs none':>8}"
    )
    none, cpu_none = statistics.median(rates["none"]), statistics.median(cpu_rates["none"])
    for config in configs:
        row = [labels[config]]
        for figures, reference in ((rates[config], none), (cpu_rates[config], cpu_none)):
            median = statistics.median(figures)
            row += [
                f"{median:,.0f}",
                f"{min(figures):,.0f}-{max(figures):,.0f}",
                f"{median / reference - 1:+.1%}",
            ]
        print(
            f"{row[0]:<32} {row[1]:>8} {row[2]:>15} {row[3]:>8}   "
            f"{row[4]:>11} {row[5]:>15} {row[6]:>8}"
        )
    print(
        "works/CPU-s: works per second of this process's CPU time (steadier than wall "
        "time on a shared machine)"
    )


if __name__ == "__main__":
    main()
