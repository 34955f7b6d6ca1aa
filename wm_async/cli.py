"""The ``wm-async`` command (also ``python -m wm_async``).

Each subcommand is a function that adds its parser to the ``commands`` group and sets a
``handler`` default: ``handler(args) -> int`` does the work and returns the exit status.
:func:`main` parses, dispatches, and turns a :class:`~wm_async.WorkManagerError` into one
``wm-async: error: …`` line on stderr (status 2) instead of a traceback.

Subcommands: ``demo``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, TypeAlias

import anyio

from ._errors import WorkManagerError
from ._executor import WorkContext
from ._manager import WorkManager
from ._model import (
    Backoff,
    BackoffPolicy,
    Result,
    StopReason,
    WorkInfo,
    WorkQuery,
    WorkState,
)
from ._requests import OneTimeWorkRequest

__all__ = ("build_parser", "main")

_PROG = "wm-async"

#: What a subcommand runs: takes the parsed arguments, returns the exit status.
_Handler: TypeAlias = Callable[[argparse.Namespace], int]
_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


class _Exit(Exception):
    """Raised by the parser instead of ``SystemExit``, so :func:`main` returns a status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and which never calls ``sys.exit``."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    """The ``wm-async`` argument parser, with every subcommand."""
    parser = _Parser(
        prog=_PROG,
        description="Durable background work for asyncio, as Android's WorkManager does it.",
    )
    commands: _Commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for add in (_add_demo,):
        add(commands)
    return parser


def _unwrap(exc: BaseException) -> BaseException:
    # The manager's task group wraps what its body raises in an ExceptionGroup.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wm-async`` command and return its exit status.

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``)
    :return: 0 on success, 2 for bad arguments or a wm_async error, 130 if interrupted
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _Exit as exit_:
        return exit_.status
    handler: _Handler = args.handler
    try:
        return handler(args)
    except BaseException as raised:
        exc = _unwrap(raised)
        if isinstance(exc, WorkManagerError):
            print(f"{_PROG}: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, KeyboardInterrupt):
            print(f"{_PROG}: interrupted", file=sys.stderr)
            return 130
        raise


# -- demo

_DEMO_TAG = "demo"
_STATE_WIDTH = max(len(s.value) for s in WorkState)


def _add_demo(commands: _Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="run three example works and print every state change",
        description=(
            "Run three example works (one reporting progress, one delayed, one that retries "
            "twice) and print each state change as it happens."
        ),
    )
    demo.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: a fresh SQLite file in a temporary directory)",
    )
    demo.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_positive_seconds,
        default=60.0,
        help="stop after this long even if works are unfinished (default: %(default)s)",
    )
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    store: str | None = args.store
    if store is None:
        path = Path(tempfile.mkdtemp(prefix="wm-async-demo-")) / "demo.db"
        store = f"sqlite:///{path}"
    return anyio.run(_demo, store, args.duration, backend="asyncio")


def _register_demo_workers(manager: WorkManager) -> None:
    @manager.worker("progress")
    async def progress(ctx: WorkContext) -> Result:
        for step in (1, 2, 3):
            await anyio.sleep(0.2)
            await ctx.set_progress({"step": step, "of": 3})
        await anyio.sleep(0.2)
        return Result.success({"items": 3})

    @manager.worker("delayed")
    async def delayed(ctx: WorkContext) -> Result:
        await anyio.sleep(0.1)
        return Result.success({"greeting": "hello, later"})

    @manager.worker("flaky")
    async def flaky(ctx: WorkContext) -> Result:
        await anyio.sleep(0.1)
        if ctx.run_attempt_count < 2:  # runs before this one
            return Result.retry()
        return Result.success({"succeeded_on_run": ctx.run_attempt_count + 1})


def _demo_requests() -> list[OneTimeWorkRequest]:
    tags = {_DEMO_TAG}
    return [
        OneTimeWorkRequest("progress", tags=tags),
        OneTimeWorkRequest("delayed", tags=tags, initial_delay=timedelta(seconds=2)),
        OneTimeWorkRequest(
            "flaky",
            tags=tags,
            backoff=Backoff(BackoffPolicy.LINEAR, timedelta(seconds=1)),
        ),
    ]


def _details(info: WorkInfo, now: float) -> str:
    parts: list[str] = []
    if info.state is WorkState.ENQUEUED and info.next_schedule_time is not None:
        wait = info.next_schedule_time.timestamp() - now
        parts.append(f"next run in {wait:.1f}s" if wait >= 0.05 else "due now")
    if info.progress:
        parts.append(f"progress {json.dumps(info.progress)}")
    if info.output:
        parts.append(f"output {json.dumps(info.output)}")
    if info.stop_reason is not StopReason.NOT_STOPPED:
        parts.append(f"last stop {info.stop_reason.value}")
    if info.error is not None:
        parts.append(f"error {info.error.type}: {info.error.message}")
    return "  ".join(parts)


def _row(cells: tuple[str, str, str, str, str, str], worker_width: int) -> str:
    time, work_id, worker, state, attempts, details = cells
    return (
        f"{time:>8}  {work_id:<8}  {worker:<{worker_width}}  {state:<{_STATE_WIDTH}}  "
        f"{attempts:>8}  {details}"
    ).rstrip()


async def _demo(store: str, duration: float) -> int:
    manager = WorkManager(store=store)
    _register_demo_workers(manager)
    requests = _demo_requests()
    ids = {r.id for r in requests}
    width = max(len(r.worker) for r in requests)
    clock = manager.clock
    print(f"wm-async demo: store {store}", flush=True)
    async with manager:
        print(_row(("time", "id", "worker", "state", "attempts", "details"), width))
        start = clock.now()
        unfinished = set(ids)
        with anyio.move_on_after(duration) as timer:
            async with manager.watch(WorkQuery(tags={_DEMO_TAG})) as infos:
                await manager.enqueue(*requests)
                async for info in infos:
                    now = clock.now()
                    cells = (
                        f"{now - start:.2f}s",
                        info.id.hex[:8],
                        info.worker,
                        info.state.value,
                        str(info.run_attempt_count),
                        _details(info, now),
                    )
                    print(_row(cells, width), flush=True)
                    if info.is_finished:
                        unfinished.discard(info.id)
                        if not unfinished:
                            break
        final = await manager.get_work_infos(WorkQuery(ids=ids))
        elapsed = clock.now() - start
    counts = dict.fromkeys(WorkState, 0)
    for info in final:
        counts[info.state] += 1
    left = sum(n for state, n in counts.items() if not state.is_finished)
    if timer.cancelled_caught:
        how = f"stopped by --duration after {elapsed:.2f}s"
    else:
        how = f"all finished in {elapsed:.2f}s"
    print(
        f"{how}: {counts[WorkState.SUCCEEDED]} succeeded, {counts[WorkState.FAILED]} failed, "
        f"{counts[WorkState.CANCELLED]} cancelled, {left} unfinished"
    )
    return 0
