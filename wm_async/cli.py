"""The ``wm-async`` command (also ``python -m wm_async``).

Subcommands:

- ``worker MODULE:ATTRIBUTE``: run an app's manager until SIGINT or SIGTERM (a second
  signal forces the stop);
- ``enqueue WORKER``: store one work (``--input JSON``, ``--delay``, ``--unique NAME
  --policy P``, ``--tag T``), also while a worker process runs on the store;
- ``list``, ``show ID``, ``cancel``, ``prune``: look at and change the works in a store
  (``--store URL`` or ``WM_ASYNC_STORE``), also while a worker process runs on it;
- ``pause NAME``, ``resume NAME``: pause and resume a worker in every process;
- ``dashboard``: serve the web dashboard of a store (``wm_async.dashboard``);
- ``demo``: a tour of wm_async on a temporary SQLite store.

Each subcommand adds its parser to the ``commands`` group and sets a ``handler``
default: ``handler(args) -> int`` does the work and returns the exit status. :func:`main`
parses, dispatches, and turns errors into one ``wm-async: error: …`` line on stderr
instead of a traceback: status 2 for bad arguments, 1 for anything else that failed
(an unreachable store, an unknown id). ``--traceback`` (before the subcommand) prints
the traceback too, such as where an app's module failed to import.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeAlias

import anyio

from ._api.manager import WorkManager
from ._cli import admin as _cli_admin
from ._cli import dashboard as _cli_dashboard
from ._cli import demo as _cli_demo
from ._cli import enqueue as _cli_enqueue
from ._cli import pause as _cli_pause
from ._cli.common import (
    CommandError,
    Exit,
    Parser,
    one_line,
    unwrap,
)
from ._core.errors import (
    InvalidRequestError,
    WorkManagerError,
)
from ._core.redact import mask_text
from ._core.version import __version__

__all__ = ("build_parser", "main")

_PROG = "wm-async"

#: What a subcommand runs: takes the parsed arguments, returns the exit status.
_Handler: TypeAlias = Callable[[argparse.Namespace], int]
_Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def build_parser() -> argparse.ArgumentParser:
    """The ``wm-async`` argument parser, with every subcommand."""
    parser = Parser(
        prog=_PROG,
        description="Durable background work for asyncio, as Android's WorkManager does it.",
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, print its traceback too (e.g. where an app's module failed to import)",
    )
    commands: _Commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    _add_worker(commands)
    _cli_enqueue.add_command(commands)
    _cli_admin.add_commands(commands)
    _cli_pause.add_commands(commands)
    _cli_dashboard.add_command(commands)
    _cli_demo.add_command(commands)
    return parser


def _fail(message: str, status: int, exc: BaseException | None = None) -> int:
    if exc is not None:  # --traceback: the error's own, and that of what caused it
        # Masked like the message: a frame's line may quote a store URL with its password.
        shown = "".join(traceback.format_exception(exc))
        print(mask_text(shown), end="", file=sys.stderr)
    # Masked: a message may quote a store URL (--store, or the app's) with its password.
    print(f"{_PROG}: error: {one_line(mask_text(message))}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wm-async`` command and return its exit status.

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``)
    :return: 0 on success, 1 if the command failed, 2 for bad arguments, 130 if
        interrupted
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except Exit as exit_:
        return exit_.status
    handler: _Handler = args.handler
    try:
        return handler(args)
    except BaseException as raised:
        exc = unwrap(raised)
        shown = exc if args.traceback else None
        if isinstance(exc, CommandError):
            return _fail(str(exc), exc.status, shown)
        if isinstance(exc, InvalidRequestError):
            return _fail(str(exc), 2, shown)
        if isinstance(exc, WorkManagerError):
            return _fail(str(exc), 1, shown)
        if isinstance(exc, BrokenPipeError):  # `wm-async list | head`: not an error
            # Python would complain again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if isinstance(exc, KeyboardInterrupt):
            print(f"{_PROG}: interrupted", file=sys.stderr)
            return 130
        raise


# -- worker


def _add_worker(commands: _Commands) -> None:
    worker = commands.add_parser(
        "worker",
        help="run an app's WorkManager until SIGINT or SIGTERM",
        description=(
            "Import MODULE, take its WorkManager ATTRIBUTE (or call it, if it is a function "
            "returning one) and run it. SIGINT (Ctrl-C) or SIGTERM stops it gracefully: no "
            "new runs start, running work gets the manager's shutdown_grace, then goes back "
            "to ENQUEUED. A second signal cuts the grace short. The current directory is "
            "importable, as with 'python -m'."
        ),
    )
    worker.add_argument(
        "app", metavar="MODULE:ATTRIBUTE", help="where the manager is, e.g. myapp.tasks:manager"
    )
    worker.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="what the wm_async loggers print to stderr (default: %(default)s; debug shows "
        "every state change)",
    )
    worker.set_defaults(handler=_run_worker)


def _load_manager(spec: str) -> WorkManager:
    """The manager ``MODULE:ATTRIBUTE`` names (a WorkManager or a function returning one).

    :raises CommandError: if it cannot be imported or is not a WorkManager
    """
    module_name, sep, attribute = spec.partition(":")
    if not (sep and module_name and attribute):
        raise CommandError(
            f"expected MODULE:ATTRIBUTE (like myapp.tasks:manager), got {spec!r}", 2
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: object = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc} "
            "(wm-async --traceback worker ... shows where)"
        ) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if inspect.iscoroutinefunction(found):  # calling it would make a coroutine nobody awaits
        raise CommandError(
            f"{spec} is an async function; give a WorkManager, or a plain (not async) "
            "function returning one"
        )
    if not isinstance(found, WorkManager) and callable(found):
        try:
            found = found()
        except Exception as exc:
            raise CommandError(
                f"{spec}() raised {type(exc).__name__}: {exc} "
                "(wm-async --traceback worker ... shows where)"
            ) from exc
        if inspect.iscoroutine(found):  # e.g. a callable object whose __call__ is async
            found.close()
            raise CommandError(
                f"{spec}() returned a coroutine; give a WorkManager, or a plain (not async) "
                "function returning one"
            )
    if not isinstance(found, WorkManager):
        raise CommandError(
            f"{spec} is a {type(found).__name__}, not a WorkManager (or a function returning one)"
        )
    return found


def _run_worker(args: argparse.Namespace) -> int:
    manager = _load_manager(args.app)
    # The wm_async loggers at the chosen level; other libraries' only from WARNING up.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("wm_async").setLevel(args.log_level.upper())
    return anyio.run(_serve, manager, backend="asyncio")


def _say(message: str) -> None:
    print(f"{_PROG} worker: {message}", flush=True)


async def _serve(manager: WorkManager) -> int:
    forced = False
    stop = anyio.Event()
    with (
        anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        anyio.CancelScope() as everything,
    ):

        async def follow_signals() -> NoReturn:
            nonlocal forced
            async for signum in signals:
                name = signal.Signals(signum).name
                if not stop.is_set():
                    _say(
                        f"{name}: stopping; running work has {manager.shutdown_grace:g}s to "
                        "finish (send the signal again to stop at once)"
                    )
                    stop.set()
                else:
                    _say(f"{name} again: stopping at once")
                    forced = True
                    everything.cancel()
            raise AssertionError("signal receivers never end")  # pragma: no cover

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_signals, name="wm-async worker signals")
            async with manager:
                names = manager.statistics()["workers"]
                assert isinstance(names, list)
                workers = ", ".join(names) or "none"
                store = mask_text(repr(manager.store))
                _say(f"running {store} with workers: {workers} (Ctrl-C to stop)")
                await stop.wait()
            tg.cancel_scope.cancel()
    if forced:
        _say("stopped at once; interrupted work runs again on the next start")
        return 1
    _say("stopped")
    return 0
