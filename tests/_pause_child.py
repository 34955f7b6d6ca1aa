"""A process of ``test_pause.py`` (not a test module): a ``WorkManager(url)`` with the
workers ``paused`` and ``other``; each run appends ``<pid> <worker> <work id>`` to the
log (one ``write()`` with ``O_APPEND``). It prints ``ready`` once started and stops
gracefully when its stdin closes."""

from __future__ import annotations

import os
import sys

import anyio

import wm_async as wm


async def main(url: str, log: str) -> None:
    manager = wm.WorkManager(url, shutdown_grace=30)
    runs = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def run(ctx: wm.WorkContext) -> None:
        os.write(runs, f"{os.getpid()} {ctx.worker} {ctx.id}\n".encode())

    manager.register_worker("paused", run)
    manager.register_worker("other", run)
    async with manager:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the parent closes it


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
