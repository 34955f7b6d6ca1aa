"""``wm-async demo``: a tour of wm_async on a temporary SQLite store.

A handful of works show the main ideas: one reporting progress, one delayed, one that
fails twice and succeeds on its third run, a periodic one (cancelled after three
periods), and one waiting on a signal that the demo turns on after a moment. Each state
change is printed as one row, after a short legend; on a terminal the states are in
colour (``--color``). The temporary store is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import anyio

from .._api.manager import WorkManager
from .._api.requests import (
    OneTimeWorkRequest,
    PeriodicWorkRequest,
)
from .._core.model import (
    Backoff,
    BackoffPolicy,
    Constraints,
    Result,
    StopReason,
    WorkInfo,
    WorkQuery,
    WorkState,
)
from .._core.redact import mask_url
from .._runtime.executor import WorkContext
from ..signals import Flag
from .common import (
    format_duration,
    positive_seconds,
)

if TYPE_CHECKING:
    from .common import Parser

_Commands: TypeAlias = "argparse._SubParsersAction[Parser]"

_TAG = "demo"
_GATE = "demo_gate"
#: Periods the periodic work runs before the demo cancels it.
_PERIODS = 3
#: When the demo turns the gate signal on (seconds after it starts).
_GATE_OPENS_AFTER = 1.5
_STATE_WIDTH = max(len(s.value) for s in WorkState)
#: How many hex digits of a work's id the rows show: its last ones (a UUIDv7 begins with
#: the time it was made, the same for works made together; it ends with random bits).
SHORT_ID = 8
#: ANSI colours of the states, on a terminal.
_COLOURS = {
    WorkState.ENQUEUED: "\033[2m",  # dim
    WorkState.BLOCKED: "\033[2m",
    WorkState.RUNNING: "\033[36m",  # cyan
    WorkState.SUCCEEDED: "\033[32m",  # green
    WorkState.FAILED: "\033[31m",  # red
    WorkState.CANCELLED: "\033[33m",  # yellow
}
_RESET = "\033[0m"

_INTRO = """\
Each row is one state change of a work:
  ENQUEUED  waits for its delay, backoff or signals   RUNNING    its worker runs
  BLOCKED   waits for the works before it in a chain
  SUCCEEDED / FAILED / CANCELLED: finished for good   attempts:  runs started so far
  id: the last {short} hex digits of the work's id (wm-async show and cancel take them)
The works: 'progress' reports progress; 'delayed' waits 2 s first; 'flaky' fails twice
and succeeds on its third run; 'heartbeat' repeats every second until the demo cancels
it; 'gated' waits for the signal {gate!r}, which the demo turns on after {after:g} s;
'summarise' waits for 'fetch' and takes its output as input.
"""


def add_command(commands: _Commands) -> None:
    """Add ``demo``."""
    demo = commands.add_parser(
        "demo",
        help="take a tour: a few example works, each state change printed as it happens",
        description=(
            "Run a few example works (progress, a delay, retries, a periodic work, a work "
            "waiting for a signal) and print each state change as it happens."
        ),
    )
    demo.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: a fresh SQLite file in a temporary directory)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary store at the end (default: delete it), to look into it "
        "with 'wm-async list' and 'wm-async show'",
    )
    demo.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the states: auto (default) when printing to a terminal and NO_COLOR is "
        "not set",
    )
    demo.add_argument(
        "--duration",
        metavar="SECONDS",
        type=positive_seconds,
        default=60.0,
        help="stop after this long even if works are unfinished (default: %(default)s)",
    )
    demo.set_defaults(handler=_run_demo)


def use_colour(choice: str) -> bool:
    """Whether ``--color choice`` colours what is printed to stdout."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


def _run_demo(args: argparse.Namespace) -> int:
    store: str | None = args.store
    colour = use_colour(args.color)
    if store is not None:
        result: int = anyio.run(_demo, store, args.duration, colour, backend="asyncio")
        return result
    folder = Path(tempfile.mkdtemp(prefix="wm-async-demo-"))
    store = f"sqlite:///{folder / 'demo.db'}"
    try:
        result = anyio.run(_demo, store, args.duration, colour, backend="asyncio")
    finally:
        if args.keep:
            print(f"the store is kept: wm-async list --store {store}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
            print(f"deleted the temporary store {folder} (--keep keeps it)")
    return result


def _register_workers(manager: WorkManager) -> None:
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
            return Result.retry()  # say, the server did not answer: try again later
        return Result.success({"succeeded_on_run": ctx.run_attempt_count + 1})

    @manager.worker("heartbeat")
    async def heartbeat(ctx: WorkContext) -> None:
        await anyio.sleep(0.05)

    @manager.worker("gated")
    async def gated(ctx: WorkContext) -> Result:
        await anyio.sleep(0.1)
        return Result.success({"ran": "after the signal"})

    @manager.worker("fetch")
    async def fetch(ctx: WorkContext) -> Result:
        await anyio.sleep(0.3)
        return Result.success({"pages": 12})

    @manager.worker("summarise")
    async def summarise(ctx: WorkContext) -> Result:
        await anyio.sleep(0.1)
        return Result.success({"summary": f"read {ctx.input['pages']} pages"})


def _chain() -> tuple[OneTimeWorkRequest, OneTimeWorkRequest]:
    """'summarise' waits (BLOCKED) for 'fetch', then gets its output as input."""
    tags = {_TAG}
    return OneTimeWorkRequest("fetch", tags=tags), OneTimeWorkRequest("summarise", tags=tags)


def _requests() -> list[OneTimeWorkRequest | PeriodicWorkRequest]:
    tags = {_TAG}
    return [
        OneTimeWorkRequest("progress", tags=tags),
        OneTimeWorkRequest("delayed", tags=tags, initial_delay=timedelta(seconds=2)),
        OneTimeWorkRequest(
            "flaky", tags=tags, backoff=Backoff(BackoffPolicy.LINEAR, timedelta(seconds=1))
        ),
        PeriodicWorkRequest("heartbeat", tags=tags, repeat_interval=timedelta(seconds=1)),
        OneTimeWorkRequest("gated", tags=tags, constraints=Constraints(signals={_GATE})),
    ]


def _details(info: WorkInfo, now: float, gate: Flag) -> str:
    parts: list[str] = []
    if info.state is WorkState.ENQUEUED:
        if _GATE in info.constraints.signals and not gate.value:
            parts.append(f"waits for signal {_GATE!r}")
        elif info.next_schedule_time is not None:
            wait = info.next_schedule_time.timestamp() - now
            parts.append(f"next run in {wait:.1f}s" if wait >= 0.05 else "due now")
    if info.periodicity is not None:
        parts.append(f"periods done {info.period_count}")
    if info.progress:
        parts.append(f"progress {json.dumps(info.progress)}")
    if info.output:
        parts.append(f"output {json.dumps(info.output)}")
    if info.stop_reason is not StopReason.NOT_STOPPED:
        parts.append(f"last stop {info.stop_reason.value}")
    if info.error is not None:
        parts.append(f"error {info.error.type}: {info.error.message}")
    return "  ".join(parts)


def _row(cells: tuple[str, str, str, str, str, str], worker_width: int, colour: str = "") -> str:
    time, work_id, worker, state, attempts, details = cells
    state = f"{state:<{_STATE_WIDTH}}"
    if colour:
        state = f"{colour}{state}{_RESET}"
    return (
        f"{time:>8}  {work_id:<{SHORT_ID}}  {worker:<{worker_width}}  {state}  "
        f"{attempts:>8}  {details}"
    ).rstrip()


def _note(elapsed: float, text: str) -> None:
    # Not a row (no id or state), so scripts reading rows skip it.
    print(f"{elapsed:>7.2f}s  -- {text}", flush=True)


async def _demo(store: str, duration: float, colour: bool = False) -> int:
    manager = WorkManager(store=store, shutdown_grace=1)
    _register_workers(manager)
    gate = Flag()
    manager.register_signal(_GATE, gate)
    plain = _requests()
    fetch, summarise = _chain()
    requests = [*plain, fetch, summarise]
    ids = {r.id for r in requests}
    periodic = {r.id for r in requests if isinstance(r, PeriodicWorkRequest)}
    width = max(len(r.worker) for r in requests)
    clock = manager.clock
    print(f"wm-async demo: store {mask_url(store)}", flush=True)
    print(_INTRO.format(gate=_GATE, after=_GATE_OPENS_AFTER, short=SHORT_ID), flush=True)
    async with manager:
        print(_row(("time", "id", "worker", "state", "attempts", "details"), width))
        start = clock.now()
        unfinished = set(ids)

        async def open_gate() -> None:
            await anyio.sleep(_GATE_OPENS_AFTER)
            _note(clock.now() - start, f"turning signal {_GATE!r} on")
            gate.set()

        with anyio.move_on_after(duration) as timer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(open_gate, name="wm-async demo gate")
                async with manager.watch(WorkQuery(tags={_TAG})) as infos:
                    await manager.enqueue(*plain)
                    await manager.begin_with(fetch).then(summarise).enqueue()
                    async for info in infos:
                        now = clock.now()
                        cells = (
                            f"{now - start:.2f}s",
                            info.id.hex[-SHORT_ID:],
                            info.worker,
                            info.state.value,
                            str(info.run_attempt_count),
                            _details(info, now, gate),
                        )
                        shade = _COLOURS[info.state] if colour else ""
                        print(_row(cells, width, shade), flush=True)
                        if info.is_finished:
                            unfinished.discard(info.id)
                            if not unfinished:
                                break
                        elif (
                            info.id in periodic
                            and info.period_count >= _PERIODS
                            and info.state is WorkState.ENQUEUED
                        ):
                            periodic.discard(info.id)
                            _note(
                                now - start, f"cancelling {info.worker!r} after {_PERIODS} periods"
                            )
                            await manager.cancel_work_by_id(info.id)
                tg.cancel_scope.cancel()
        final = await manager.get_work_infos(WorkQuery(ids=ids))
        elapsed = clock.now() - start
    print("where each work ended:")
    for info in sorted(final, key=lambda i: [r.id for r in requests].index(i.id)):
        if info.periodicity is not None:
            runs = f"{info.period_count} periods"
        else:
            runs = f"{info.run_attempt_count} run{'' if info.run_attempt_count == 1 else 's'}"
        what = f"output {json.dumps(info.output)}" if info.output else ""
        print(
            f"  {info.worker:<{width}}  {info.state.value:<{_STATE_WIDTH}}  {runs:<9}  {what}".rstrip()
        )
    counts = dict.fromkeys(WorkState, 0)
    for info in final:
        counts[info.state] += 1
    left = sum(n for state, n in counts.items() if not state.is_finished)
    if timer.cancelled_caught:
        how = f"stopped by --duration after {format_duration(elapsed)}"
    else:
        how = f"all finished in {format_duration(elapsed)}"
    print(
        f"{how}: {counts[WorkState.SUCCEEDED]} succeeded, {counts[WorkState.FAILED]} failed, "
        f"{counts[WorkState.CANCELLED]} cancelled, {left} unfinished"
    )
    return 0
