"""A process of ``test_sqlite_peers.py`` (not a test module): it opens a SQLite file with
a plain SQLiteStore and follows it, printing what its listener hears, one line each:
``ready <address>`` once it follows, ``wake``, and ``changed <id,id,…>`` (``changed *``
for "anything"). It stops, unlisting itself, when its stdin closes. With a third
argument ``nosockets`` it follows as on a platform without the sockets (by polling)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio

from wm_async.stores import _sqlite_peers
from wm_async.stores._base import StoreListener
from wm_async.stores.sqlite import SQLiteStore


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(path: str, poll_interval: float) -> None:
    async def changed(ids: Sequence[str] | None) -> None:
        say("changed " + ("*" if ids is None else ",".join(ids)))

    listener = StoreListener(
        now=lambda: 0.0, real_time=True, wake=lambda: say("wake"), changed=changed
    )
    store = SQLiteStore(path, poll_interval=poll_interval)
    async with store, anyio.create_task_group() as tg:
        await tg.start(store.follow, listener)
        say("ready " + ",".join(store._notifier._own))
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the parent closes it
        tg.cancel_scope.cancel()
    say("closed")


if __name__ == "__main__":
    if sys.argv[3:] == ["nosockets"]:
        _sqlite_peers.SUPPORTED = False  # type: ignore[misc]
    anyio.run(main, sys.argv[1], float(sys.argv[2]))
