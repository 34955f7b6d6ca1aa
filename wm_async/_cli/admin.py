"""``wm-async list | show | cancel | prune``: the works in a store, for people and scripts.

These commands open the store *without* scheduling: they do not take SQLite's
one-manager-per-file lock and run nothing, so they work while a worker process runs on
the same file. Reads see what that process has committed. A cancel is written to the
store at once, and the process running the work hears of it at once (PostgreSQL: NOTIFY;
SQLite: a datagram on Linux, its manager's poll within a second elsewhere) and stops the
run; should it not (a notification lost), the run stops when it next reports progress.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias

import anyio
import attrs

from .._api.operations import cancel_records as cancel_works
from .._clock import SystemClock
from .._core.errors import InvalidRequestError
from .._core.jsonform import to_json
from .._core.limits import HeldBy
from .._core.model import (
    UNFINISHED_STATES,
    WorkInfo,
    WorkQuery,
    WorkState,
)
from .._core.redact import mask_url
from ..stores import (
    Store,
    open_store,
)
from ..stores.memory import MemoryStore
from ..stores.sqlite import SQLiteStore
from .common import (
    CommandError,
    Parser,
    duration,
    format_duration,
)

if TYPE_CHECKING:
    from .._core.record import WorkRecord

_Commands: TypeAlias = "argparse._SubParsersAction[Parser]"

#: The environment variable naming the store when ``--store`` is not given.
STORE_ENV = "WM_ASYNC_STORE"


def add_commands(commands: _Commands) -> None:
    """Add ``list``, ``show``, ``cancel`` and ``prune``."""
    store = Parser(add_help=False)
    store.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV),
        help=f"the store, e.g. sqlite:///wm_async.db (default: ${STORE_ENV})",
    )
    as_json = Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON, for scripts")

    listing = commands.add_parser(
        "list",
        parents=[store, as_json],
        help="list works",
        description="List works, oldest first. Filters combine: OR within one, AND across.",
    )
    listing.add_argument(
        "--state",
        action="append",
        type=str.upper,
        choices=[s.value for s in WorkState],
        help="only works in this state (repeatable)",
    )
    listing.add_argument("--tag", action="append", help="only works with this tag (repeatable)")
    listing.add_argument(
        "--unique-name", action="append", help="only works under this unique name (repeatable)"
    )
    listing.set_defaults(handler=_run_list)

    show = commands.add_parser(
        "show", parents=[store, as_json], help="show one work", description="Show one work."
    )
    show.add_argument("id", metavar="ID", help="the work's id, or its last 8 or more hex digits")
    show.set_defaults(handler=_run_show)

    cancel = commands.add_parser(
        "cancel",
        parents=[store, as_json],
        help="cancel works",
        description=(
            "Cancel unfinished works: one by id, or by tag, unique name, or all. A work "
            "RUNNING in a worker process stops there at once."
        ),
    )
    which = cancel.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "id", metavar="ID", nargs="?", help="the work's id, or its last 8 or more hex digits"
    )
    which.add_argument("--tag", help="every unfinished work with this tag")
    which.add_argument("--unique-name", help="every unfinished work under this unique name")
    which.add_argument("--all", action="store_true", help="every unfinished work")
    cancel.set_defaults(handler=_run_cancel)

    prune = commands.add_parser(
        "prune",
        parents=[store, as_json],
        help="delete finished works",
        description=(
            "Delete finished (SUCCEEDED, FAILED, CANCELLED) works; a finished work that an "
            "unfinished one depends on is kept."
        ),
    )
    prune.add_argument(
        "--older-than",
        metavar="DURATION",
        type=duration,
        help="only works finished longer ago than this (30s, 15m, 2h, 1d, 1w; default: all)",
    )
    prune.set_defaults(handler=_run_prune)


# -- the store


@asynccontextmanager
async def admin_store(url: str | None) -> AsyncIterator[Store]:
    """Open the store ``url`` names for reading and administration, without scheduling.

    :raises CommandError: if no store is named, the URL names a memory store, or a SQLite
        file does not exist (it is not created)
    :raises InvalidRequestError: for a malformed URL
    :raises StoreError: if the store cannot be opened
    """
    if not url:
        raise CommandError(f"no store given: pass --store URL or set {STORE_ENV}", 2)
    store = open_store(url)
    if isinstance(store, MemoryStore):
        raise CommandError(
            f"{mask_url(url)} holds works only inside the process that made it; give a "
            "sqlite:/// or postgresql:// store",
            2,
        )
    if isinstance(store, SQLiteStore) and not await anyio.Path(store.path).is_file():
        raise CommandError(f"no store at {store.path}: the file does not exist")
    async with store:
        yield store


def _run(command: object, *args: object) -> int:
    result: int = anyio.run(command, *args, backend="asyncio")  # type: ignore[arg-type]
    return result


# -- JSON and tables


def print_json(value: object) -> None:
    """Print ``value`` (a WorkInfo, or a list of them) as indented JSON."""
    print(json.dumps(to_json(value), indent=2, sort_keys=True))


def _when(info: WorkInfo, now: float) -> str:
    """When a work is next due, started or finished, relative to now."""
    if info.state is WorkState.ENQUEUED and info.next_schedule_time is not None:
        wait = info.next_schedule_time.timestamp() - now
        return f"due in {format_duration(wait)}" if wait > 0 else "due now"
    if info.state is WorkState.RUNNING and info.started_at is not None:
        return f"started {format_duration(max(now - info.started_at.timestamp(), 0))} ago"
    if info.finished_at is not None:
        return f"finished {format_duration(max(now - info.finished_at.timestamp(), 0))} ago"
    return ""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


# -- list and show


def _run_list(args: argparse.Namespace) -> int:
    return _run(_list, args)


async def _list(args: argparse.Namespace) -> int:
    query = WorkQuery(
        tags=args.tag or (),
        unique_names=args.unique_name or (),
        states=args.state or (() if args.tag or args.unique_name else list(WorkState)),
    )
    async with admin_store(args.store) as store:
        infos = [r.to_info() for r in await store.query(query)]
    if args.json:
        print_json(infos)
        return 0
    if not infos:
        print("no works")
        return 0
    now = SystemClock().now()
    print(
        _table(
            ("ID", "WORKER", "STATE", "ATTEMPTS", "UNIQUE NAME", "WHEN"),
            (
                (
                    str(i.id),
                    i.worker,
                    i.state.value,
                    str(i.run_attempt_count),
                    i.unique_name or "-",
                    _when(i, now),
                )
                for i in infos
            ),
        )
    )
    return 0


#: A short id: the last hex digits of an id (at least 8), as ``wm-async demo`` prints them.
_SHORT_ID = re.compile(r"[0-9a-f]{8,31}")


async def _get(store: Store, text: str) -> WorkRecord:
    """The work whose id is ``text``, or whose id ends with the hex digits ``text`` (a
    short id, read off the demo's rows or a table: found by reading every work's id, so on
    a large store give the whole id).

    :raises CommandError: if no work (or, for a short id, more than one) matches
    """
    from .._core.validators import to_uuid

    short = text.strip().lower()
    if _SHORT_ID.fullmatch(short):
        matches = [
            r
            for r in await store.query(WorkQuery(states=list(WorkState)))
            if r.id.replace("-", "").endswith(short)
        ]
        if not matches:
            raise CommandError(f"no work whose id ends with {short} in the store")
        if len(matches) > 1:
            raise CommandError(
                f"{len(matches)} works have ids ending with {short}; give more of the id"
            )
        return matches[0]
    try:
        work_id = str(to_uuid("id", text))
    except InvalidRequestError:
        raise CommandError(
            f"expected a work id (a UUID, or its last 8 or more hex digits), got {text!r}", 2
        ) from None
    found = await store.get([work_id])
    if not found:
        raise CommandError(f"no work with id {work_id} in the store")
    return found[0]


def _run_show(args: argparse.Namespace) -> int:
    return _run(_show, args)


def _show_lines(info: WorkInfo, now: float) -> list[tuple[str, str]]:
    def data(value: object) -> str:
        return json.dumps(value, sort_keys=True)

    def moment(value: datetime | None) -> str:
        return value.isoformat(timespec="seconds") if value else "-"

    lines = [
        ("id", str(info.id)),
        ("worker", info.worker),
        ("state", info.state.value + (f" ({_when(info, now)})" if _when(info, now) else "")),
        ("attempts", str(info.run_attempt_count)),
        ("tags", ", ".join(sorted(info.tags))),
        ("unique name", info.unique_name or "-"),
        ("input", data(info.input)),
        ("progress", data(info.progress)),
        ("output", data(info.output)),
        ("stop reason", info.stop_reason.value),
        ("next run", moment(info.next_schedule_time)),
        ("enqueued at", moment(info.enqueued_at)),
        ("started at", moment(info.started_at)),
        ("finished at", moment(info.finished_at)),
    ]
    if info.priority:
        lines.insert(4, ("priority", str(info.priority)))
    if info.periodicity is not None:
        p = info.periodicity
        every = (
            f"cron {p.cron!r} ({p.timezone or 'UTC'})"
            if p.cron
            else f"every {format_duration(p.interval.total_seconds() if p.interval else 0)}"
            f", flex {format_duration(p.flex.total_seconds() if p.flex else 0)}"
        )
        lines.append(("periodic", f"{every}; {info.period_count} period(s) done"))
    if info.error is not None:
        lines.append(("error", f"{info.error.type}: {info.error.message}"))
    if info.held_by is not None:
        lines.append(("held by", f"its worker is {info.held_by.value}"))
    return lines


async def _show(args: argparse.Namespace) -> int:
    async with admin_store(args.store) as store:
        record = await _get(store, args.id)
        info = record.to_info()
        now = SystemClock().now()
        due = record.state is WorkState.ENQUEUED and (record.next_run_at or now) <= now
        if due and record.worker in await store.paused_workers():
            # Limits (semantics 50) are declared by the worker processes, not stored.
            info = attrs.evolve(info, held_by=HeldBy.PAUSED)
    if args.json:
        print_json(info)
        return 0
    lines = _show_lines(info, now)
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{label + ':':<{width}} {value}")
    return 0


# -- cancel and prune


async def cancel_records(store: Store, records: Iterable[WorkRecord]) -> list[WorkRecord]:
    """Cancel the unfinished records (compare-and-set, re-reading works that changed
    meanwhile, as ``WorkManager`` does); return the records written as CANCELLED."""
    return await cancel_works(store, records, now=SystemClock().now)


def _run_cancel(args: argparse.Namespace) -> int:
    return _run(_cancel, args)


async def _cancel(args: argparse.Namespace) -> int:
    async with admin_store(args.store) as store:
        if args.id is not None:
            record = await _get(store, args.id)
            if record.state.is_finished:
                if args.json:
                    print_json({"cancelled": [], "running": []})
                else:
                    print(f"work {record.id} is already {record.state.value}; nothing to cancel")
                return 0
            targets = [record]
        else:
            query = WorkQuery(
                tags={args.tag} if args.tag else (),
                unique_names={args.unique_name} if args.unique_name else (),
                states=UNFINISHED_STATES,
            )
            targets = await store.query(query)
        was_running = {r.id for r in targets if r.state is WorkState.RUNNING}
        cancelled = await cancel_records(store, targets)
    running = [r for r in cancelled if r.id in was_running]
    if args.json:  # the ids cancelled, and those of them that were RUNNING
        print_json({"cancelled": [r.id for r in cancelled], "running": [r.id for r in running]})
        return 0
    print(f"cancelled {len(cancelled)} work(s)")
    if running:
        # The cancel's notification reaches the process running the work (PostgreSQL:
        # NOTIFY; SQLite: a datagram, or the manager's poll).
        print(
            f"{len(running)} of them were RUNNING: the worker process running each hears "
            "of the cancel at once and stops it"
        )
    return 0


def _run_prune(args: argparse.Namespace) -> int:
    return _run(_prune, args)


async def _prune(args: argparse.Namespace) -> int:
    older_than: float | None = args.older_than
    before = math.inf if older_than is None else SystemClock().now() - older_than
    async with admin_store(args.store) as store:
        pruned = await store.prune(finished_before=before)
    if args.json:
        print_json({"pruned": pruned})
        return 0
    print(f"pruned {pruned} finished work(s)")
    return 0
