"""``wm-async dashboard``: serve the dashboard of a store on its own (uvicorn).

It runs a producer manager (``run_work=False``: it runs no work and takes no lock), so
it reads beside the worker processes of a SQLite file or a PostgreSQL database. It
listens on 127.0.0.1 unless told otherwise, and refuses another address without a
token unless ``--insecure-no-auth`` says so.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from typing import TypeAlias

import anyio

from .._api.manager import WorkManager
from .._core.redact import mask_url
from ..stores.memory import MemoryStore
from ..stores.sqlite import SQLiteStore
from .admin import STORE_ENV
from .common import CommandError, Parser

_Commands: TypeAlias = "argparse._SubParsersAction[Parser]"

#: The environment variable holding the token (safer than --token, which ps shows).
TOKEN_ENV = "WM_ASYNC_DASHBOARD_TOKEN"


def add_command(commands: _Commands) -> None:
    """Add ``dashboard``."""
    parser = commands.add_parser(
        "dashboard",
        help="serve the web dashboard of a store",
        description=(
            "Serve the dashboard (overview, works, a work, actions, live updates) of a "
            "store, beside its worker processes. Actions need the token: one is made up "
            f"and printed unless --token or ${TOKEN_ENV} gives one; --read-only offers "
            "none. Needs uvicorn (pip install 'wm_async[dashboard]')."
        ),
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV),
        help=f"the store, e.g. sqlite:///wm_async.db (default: ${STORE_ENV})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8700, help="port (default: %(default)s)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the token (16+ characters; default: ${TOKEN_ENV}, else a random one)",
    )
    parser.add_argument("--read-only", action="store_true", help="offer no action")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="with --read-only: serve a non-loopback address without a token",
    )
    parser.add_argument("--title", default="wm_async", help="the pages' title")
    parser.set_defaults(handler=_run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run(args: argparse.Namespace) -> int:
    if not args.store:
        raise CommandError(f"no store given: pass --store URL or set {STORE_ENV}", 2)
    if not 0 < args.port < 65536:
        raise CommandError(f"--port {args.port}: expected 1 to 65535", 2)
    try:
        import uvicorn
    except ImportError:
        raise CommandError(
            "the dashboard needs uvicorn: pip install 'wm_async[dashboard]'"
        ) from None
    from ..dashboard import Dashboard

    token = args.token
    if args.read_only:
        if token is None and not _loopback(args.host) and not args.insecure_no_auth:
            raise CommandError(
                f"refusing to serve {args.host} without a token: give --token (or "
                f"${TOKEN_ENV}), or --insecure-no-auth if something else protects it",
                2,
            )
    elif token is None:
        token = secrets.token_urlsafe(24)
    manager = WorkManager(store=args.store, run_work=False)
    store = manager.store
    if isinstance(store, MemoryStore):
        raise CommandError(
            "a memory:// store lives inside one process; give sqlite or postgresql", 2
        )
    if isinstance(store, SQLiteStore) and not os.path.isfile(store.path):
        raise CommandError(f"no store at {store.path}: the file does not exist")
    dashboard = Dashboard(
        manager,
        token=token,
        read_only=args.read_only,
        allow_remote=args.insecure_no_auth,
        title=args.title,
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    print(f"wm-async dashboard: {mask_url(args.store)} on {url}", flush=True)
    if token is not None and args.token is None:
        print(f"wm-async dashboard: log in at {url}login?token={token}", flush=True)
    elif token is not None:
        print("wm-async dashboard: log in with the token you gave", flush=True)
    config = uvicorn.Config(
        dashboard, host=args.host, port=args.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        async with manager:
            await server.serve()

    anyio.run(serve, backend="asyncio")
    print("wm-async dashboard: stopped", file=sys.stderr)
    return 0
