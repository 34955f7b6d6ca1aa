"""The ``wm_async`` loggers: one DEBUG line per state change, failures at WARNING with
the exception, and nothing printed when the app configured no logging."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]


def _messages(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


async def test_one_debug_line_per_state_change(
    make_manager: MakeManager, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wm_async")
    manager = make_manager()

    @manager.worker("steps")
    async def steps(ctx: wm.WorkContext) -> wm.Result | None:
        await ctx.set_progress({"step": 1})  # progress is not a state change
        await ctx.set_progress({"step": 2})
        return wm.Result.retry() if ctx.run_attempt_count == 0 else None

    request = wm.OneTimeWorkRequest("steps", backoff=wm.Backoff(delay=10))
    async with manager:
        await manager.enqueue(request)
        await clock.advance(10)

    prefix = f"work {request.id} ('steps'): "
    assert _messages(caplog, "wm_async.transitions", logging.DEBUG) == [
        prefix + "- -> ENQUEUED attempts=0",
        prefix + "ENQUEUED -> RUNNING attempts=1",
        prefix + "RUNNING -> ENQUEUED attempts=1",
        prefix + "ENQUEUED -> RUNNING attempts=2",
        prefix + "RUNNING -> SUCCEEDED attempts=2",
    ]


async def test_failures_are_warnings_with_the_exception(
    make_manager: MakeManager, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wm_async")
    manager = make_manager()

    @manager.worker("bad")
    async def bad(ctx: wm.WorkContext) -> None:
        raise ValueError("no luck")

    request = wm.OneTimeWorkRequest("bad")
    async with manager:
        await manager.enqueue(request)
        await clock.advance(0)

    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == "wm_async.worker"
    assert str(request.id) in warning.getMessage()
    assert "'bad'" in warning.getMessage()
    assert warning.exc_info is not None
    assert isinstance(warning.exc_info[1], ValueError)
    assert _messages(caplog, "wm_async.transitions", logging.DEBUG)[-1] == (
        f"work {request.id} ('bad'): RUNNING -> FAILED attempts=1 error=ValueError"
    )


def test_the_library_prints_nothing_without_logging_configured() -> None:
    script = """
import anyio, wm_async as wm

async def main():
    manager = wm.WorkManager(store="memory://", shutdown_grace=0)

    @manager.worker("bad")
    async def bad(ctx):
        raise ValueError("no luck")

    async with manager:
        request = wm.OneTimeWorkRequest("bad")
        await manager.enqueue(request)
        info = await manager.wait(request.id, timeout=30)
    assert info.state is wm.WorkState.FAILED, info

anyio.run(main)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""
