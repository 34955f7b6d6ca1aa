"""``wm-async enqueue WORKER``: store one work from a shell, a cron line or a deploy
script.

It enqueues through a producer (``WorkManager(run_work=False)``): it never runs a work
and takes no scheduler lock, so it works beside a running ``wm-async worker`` process on
the same SQLite file or PostgreSQL database. Every argument is checked before the store
is opened: bad JSON, a bad policy or an invalid request store nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TypeAlias

import anyio

from .._api.manager import WorkManager
from .._api.requests import OneTimeWorkRequest
from .._core.model import UNFINISHED_STATES, ExistingWorkPolicy, WorkInfo, WorkQuery
from .admin import STORE_ENV, admin_store, print_json
from .common import CommandError, Parser, duration

_Commands: TypeAlias = "argparse._SubParsersAction[Parser]"

_POLICIES = [p.value for p in ExistingWorkPolicy]


def add_command(commands: _Commands) -> None:
    """Add ``enqueue``."""
    enqueue = commands.add_parser(
        "enqueue",
        help="enqueue a work",
        description=(
            "Store one work for WORKER and print its id (with --json, its WorkInfo). It "
            "never runs the work: a 'wm-async worker' process (or an app's manager) with "
            "WORKER registered does. It works while a worker process runs on the same store."
        ),
    )
    enqueue.add_argument("worker", metavar="WORKER", help="the worker's name")
    enqueue.add_argument(
        "--input",
        metavar="JSON",
        help="the work's input, a JSON object (e.g. '{\"user\": 42}')",
    )
    enqueue.add_argument(
        "--delay",
        metavar="DURATION",
        type=duration,
        help="run it no sooner than this from now (90, 30s, 15m, 2h, 1d, 1w)",
    )
    enqueue.add_argument(
        "--unique",
        metavar="NAME",
        help="enqueue it under this unique name, as --policy says",
    )
    enqueue.add_argument(
        "--policy",
        type=str.upper,
        choices=_POLICIES,
        help="with --unique: what to do when works under the name exist (default: KEEP)",
    )
    enqueue.add_argument(
        "--tag", action="append", default=[], help="a tag to find it by (repeatable)"
    )
    enqueue.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV),
        help=f"the store, e.g. sqlite:///wm_async.db (default: ${STORE_ENV})",
    )
    enqueue.add_argument(
        "--json", action="store_true", help="print the work's WorkInfo as JSON, for scripts"
    )
    enqueue.set_defaults(handler=_run_enqueue)


def _request(args: argparse.Namespace) -> OneTimeWorkRequest:
    """The request the arguments describe (checked: nothing is opened yet).

    :raises CommandError: (status 2) for bad JSON or --policy without --unique
    :raises InvalidRequestError: for an invalid request
    """
    if args.policy is not None and args.unique is None:
        raise CommandError("--policy needs --unique NAME", 2)
    data = None
    if args.input is not None:
        try:
            data = json.loads(args.input)
        except ValueError as exc:
            raise CommandError(f"--input is not valid JSON: {exc}", 2) from None
        if not isinstance(data, dict):
            raise CommandError(
                f"--input must be a JSON object (like '{{\"key\": 1}}'), "
                f"not {type(data).__name__}",
                2,
            )
    return OneTimeWorkRequest(
        args.worker, input=data, initial_delay=args.delay or 0, tags=args.tag
    )


def _run_enqueue(args: argparse.Namespace) -> int:
    request = _request(args)
    if not args.store:
        raise CommandError(f"no store given: pass --store URL or set {STORE_ENV}", 2)
    info, enqueued = anyio.run(_enqueue, args, request, backend="asyncio")
    if not enqueued:
        print(
            f"wm-async enqueue: kept the unfinished work under {args.unique!r} "
            "(policy KEEP); nothing enqueued",
            file=sys.stderr,
        )
    if args.json:
        print_json(info)
    else:
        print(info.id)
    return 0


async def _enqueue(args: argparse.Namespace, request: OneTimeWorkRequest) -> tuple[WorkInfo, bool]:
    """Enqueue ``request``; the WorkInfo of the work stored, and whether it is this
    request's (``False``: KEEP kept the unfinished work under the name, returned)."""
    # Checked as the other commands check it (no memory://, no missing SQLite file).
    async with admin_store(args.store):
        pass
    manager = WorkManager(args.store, run_work=False, blocked_loop_warning=None)
    async with manager:
        if args.unique is None:
            await manager.enqueue(request)
        else:
            policy = args.policy or ExistingWorkPolicy.KEEP.value
            if not await manager.enqueue_unique_work(args.unique, policy, request):
                kept = await manager.get_work_infos(
                    WorkQuery(unique_names={args.unique}, states=UNFINISHED_STATES)
                )
                if kept:
                    return kept[0], False
        info = await manager.get_work_info(request.id)
    if info is None:  # pragma: no cover  # only if another process removed it at once
        raise CommandError(f"work {request.id} was enqueued but is gone from the store")
    return info, True
