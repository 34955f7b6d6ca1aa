"""Live updates: server-sent events fed by ``manager.watch()`` (a work's page, the
works of a list page) or by the overview's aggregates, re-read at most once a second
for every open overview together; and the transitions the dashboard has seen."""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final, Generic, TypeVar

import anyio

from .._core.errors import WorkManagerError
from .._core.model import WorkInfo
from ._http import SECURITY_HEADERS, Receive, Send

_V = TypeVar("_V")
#: Works whose transitions the dashboard remembers, and entries per work.
LOG_WORKS: Final = 10_000
LOG_ENTRIES: Final = 50
#: Seconds between keep-alive comments on an idle stream.
PING: Final = 15.0


class TransitionLog:
    """The transitions of works this dashboard process saw through its live feeds
    (bounded: the last :data:`LOG_ENTRIES` of the last :data:`LOG_WORKS` works)."""

    def __init__(self) -> None:
        self._works: OrderedDict[str, deque[tuple[float, str, str]]] = OrderedDict()

    def saw(self, info: WorkInfo, at: float) -> str | None:
        """Record ``info``'s state if it differs from the last seen; return the entry's
        text, or ``None`` if nothing changed."""
        wid = str(info.id)
        key = f"{info.state.value}/{info.run_attempt_count}/{info.generation}"
        entries = self._works.get(wid)
        if entries is None:
            entries = self._works[wid] = deque(maxlen=LOG_ENTRIES)
            if len(self._works) > LOG_WORKS:
                self._works.popitem(last=False)
        else:
            self._works.move_to_end(wid)
        if entries and entries[-1][1] == key:
            return None
        text = f"seen {info.state.value} (attempt {info.run_attempt_count})"
        if info.state.value == "ENQUEUED" and info.stop_reason.value != "NOT_STOPPED":
            text += f", stopped: {info.stop_reason.value}"
        entries.append((at, key, text))
        return text

    def entries(self, work_id: str) -> list[tuple[float, str]]:
        """What was seen of a work, oldest first."""
        return [(at, text) for at, _, text in self._works.get(work_id, ())]


def event(data: Mapping[str, object]) -> bytes:
    """One server-sent event named ``update`` carrying ``data`` as JSON."""
    return b"event: update\ndata: " + json.dumps(data).encode() + b"\n\n"


async def stream(
    send: Send,
    receive: Receive,
    updates: Callable[[], AsyncIterator[bytes]],
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Serve ``updates()`` as ``text/event-stream`` until the client goes away (or the
    updates end), with a keep-alive comment every :data:`PING` seconds."""
    headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS]
    headers += [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"x-accel-buffering", b"no"),
    ]
    headers += extra_headers or []
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    lock = anyio.Lock()
    gone = False

    async with anyio.create_task_group() as tg:

        async def write(chunk: bytes) -> None:
            nonlocal gone
            async with lock:
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except OSError:  # the client went away mid-write
                    gone = True
                    tg.cancel_scope.cancel()

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        async def pings() -> None:
            while True:
                await anyio.sleep(PING)
                await write(b": ping\n\n")

        async def feed() -> None:
            await write(b"retry: 2000\n\n")
            try:
                async for chunk in updates():
                    await write(chunk)
            except WorkManagerError as exc:  # the manager stopped, the store failed
                await write(b": ended: " + str(exc).encode()[:200].replace(b"\n", b" ") + b"\n\n")
            tg.cancel_scope.cancel()

        tg.start_soon(until_disconnect)
        tg.start_soon(pings)
        tg.start_soon(feed)
    if gone:
        return
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(Exception):  # the client is gone: nothing to finish
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class SharedRead(Generic[_V]):
    """One read of the overview at a time for every open overview page of the same
    window together (each page renders it for its user), and at most one a second, or one per five times the last read's
    duration if longer (a 24-hour window over a million works takes a second or more:
    the store is not kept busy with it)."""

    def __init__(self, read: Callable[[str], Awaitable[_V]], *, every: float = 1.0) -> None:
        self._read = read
        self._every = every
        #: key -> (when the read ended, the rendering, how long it took)
        self._cache: dict[str, tuple[float, _V, float]] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, key: str, *, fresh: bool = False) -> _V:
        """The latest read for ``key``, read again once it is old enough (``fresh``:
        now; a page's first view, which its live feed must not go back from)."""
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            cached = self._cache.get(key)
            now = anyio.current_time()
            if (
                not fresh
                and cached is not None
                and now - cached[0] < max(self._every, 5 * cached[2])
            ):
                return cached[1]
            value = await self._read(key)
            ended = anyio.current_time()
            self._cache[key] = (ended, value, ended - now)
            return value
