"""``wm-async pause NAME`` and ``wm-async resume NAME``: pause and resume a worker in
every process using the store (semantics 47), also while worker processes run on it.

The store is opened without scheduling (as ``list`` and ``cancel`` open it). No worker
registry is at hand here, so any valid worker name is accepted (as a producer without
``known_workers`` accepts it).
"""

from __future__ import annotations

import argparse
import os

from .._clock import SystemClock
from .._core import validators
from .admin import STORE_ENV, _Commands, _run, admin_store
from .common import Parser


def add_commands(commands: _Commands) -> None:
    """Add ``pause`` and ``resume``."""
    store = Parser(add_help=False)
    store.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV),
        help=f"the store, e.g. sqlite:///wm_async.db (default: ${STORE_ENV})",
    )
    pause = commands.add_parser(
        "pause",
        parents=[store],
        help="pause a worker",
        description=(
            "Pause a worker in every process using the store, until `wm-async resume`: "
            "its due works stay ENQUEUED, running ones finish. Survives restarts."
        ),
    )
    pause.add_argument("name", metavar="NAME", help="the worker's name")
    pause.set_defaults(handler=lambda args: _run(_pause, args, True))
    resume = commands.add_parser(
        "resume",
        parents=[store],
        help="resume a paused worker",
        description="Resume a paused worker: its due works start at once.",
    )
    resume.add_argument("name", metavar="NAME", help="the worker's name")
    resume.set_defaults(handler=lambda args: _run(_pause, args, False))


async def _pause(args: argparse.Namespace, pausing: bool) -> int:
    name = validators.check_name("worker", args.name)
    async with admin_store(args.store) as store:
        if pausing:
            await store.pause_worker(name, now=SystemClock().now())
        else:
            await store.resume_worker(name)
        paused = await store.paused_workers()
    print(f"{'paused' if pausing else 'resumed'} worker {name!r}")
    print(f"paused workers: {', '.join(sorted(paused)) or 'none'}")
    return 0
