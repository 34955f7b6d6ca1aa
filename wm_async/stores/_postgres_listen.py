"""PostgresStore's change feed: LISTEN for the ids other processes wrote, wake the
dispatcher, poll when notifications may have been missed, reconnect when the
connection drops; and the rescuer, which re-enqueues works whose lease expired on a
timer of its own."""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
import asyncpg
import attrs
from anyio.abc import TaskStatus

from .._core.redact import mask_text

if TYPE_CHECKING:
    from ._base import StoreListener

logger = logging.getLogger("wm_async.stores.postgres")

#: Reconnection delays: from this, doubling, up to _RECONNECT_MAX (jittered ±25 %).
_RECONNECT_MIN: Final = 0.1
_RECONNECT_MAX: Final = 5.0
#: Bound on closing the connection (a dead server must not hang the loop).
_CLOSE_TIMEOUT: Final = 5.0


def _jitter(seconds: float) -> float:
    # Jitter spreads the polls of many processes started together over time.
    return seconds * random.uniform(0.75, 1.25)  # not cryptographic


@attrs.define(eq=False, repr=False)
class ChangeFeed:
    """One LISTEN connection and what it tells a :class:`StoreListener`.

    Payloads are ``'<sender> <d|-> id,id,…'`` (see ``_postgres_sql._notifying``):
    our own ones are skipped (the manager published those changes already), ``d`` wakes
    the dispatcher, the ids go to ``listener.changed`` (``*`` for ids: anything may have
    changed, ``changed(None)``).

    :ivar poll_interval: the fallback poll, when the listener runs in real time
    """

    dsn: str
    channel: str
    sender: str
    poll_interval: float
    _inbox: deque[str] = attrs.field(init=False, factory=deque)
    _arrived: anyio.Event = attrs.field(init=False, factory=anyio.Event)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self._inbox.append(payload)
        self._arrived.set()

    async def run(
        self,
        listener: StoreListener,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow changes until cancelled; ready once the first connection listens (or
        failed: the feed keeps retrying, and the manager runs meanwhile)."""
        started = False
        failures = 0
        while True:
            lost = anyio.Event()
            conn: Any = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10)
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._on_notify)
            except Exception as exc:  # noqa: BLE001  # any failure: reconnect later
                await _close(conn)
                if not started:
                    task_status.started()
                    started = True
                failures += 1
                delay = min(_RECONNECT_MIN * 2 ** (failures - 1), _RECONNECT_MAX)
                shown = mask_text(repr(exc), secrets_of=self.dsn)  # may quote the DSN
                logger.warning(
                    "listening for changes failed (%s); retrying in %.1fs", shown, delay
                )
                await anyio.sleep(_jitter(delay))
                continue
            try:
                if started:  # a reconnection: notifications may have been missed
                    logger.info("listening for changes again")
                    listener.wake()
                    await _tell(listener, None)
                else:
                    task_status.started()
                    started = True
                failures = 0
                while not lost.is_set() and not conn.is_closed():
                    wait = _jitter(self.poll_interval) if listener.real_time else None
                    with anyio.move_on_after(wait) as scope:
                        await self._arrived.wait()
                    self._arrived = anyio.Event()
                    if self._inbox:
                        await self._deliver(listener)
                    if scope.cancelled_caught:  # the fallback poll
                        listener.wake()
            finally:
                await _close(conn)

    async def _deliver(self, listener: StoreListener) -> None:
        ids: list[str] = []
        due = anything = False
        inbox = self._inbox
        while inbox:
            sender, _, rest = inbox.popleft().partition(" ")
            if sender == self.sender:
                continue
            flag, _, listed = rest.partition(" ")
            due = due or flag == "d"
            if listed == "*":  # anything may have changed (a worker paused or resumed)
                anything = True
            elif listed:
                ids += listed.split(",")
        if anything:  # re-read first (paused workers among it), then claim
            await _tell(listener, None)
        if due:
            listener.wake()
        if ids and not anything:
            await _tell(listener, ids)


async def rescue_expired(
    listener: StoreListener,
    interval: float,
    rescue: Callable[[float], Awaitable[list[str]]],
) -> None:
    """Every ``interval`` (jittered), call ``rescue`` (re-enqueue the works whose lease
    expired, given ``now``; their ids) and tell ``listener`` about the works it
    re-enqueued (this process skips its own notifications), until cancelled.

    A timer of its own, not the change feed's fallback poll: that one runs only after a
    poll interval without notifications, which never comes while other processes keep
    writing. A failure is logged and the next interval tries again.
    """
    while True:
        await anyio.sleep(_jitter(interval))
        try:
            rescued = await rescue(listener.now())
        except Exception:
            logger.exception("re-enqueueing expired leases failed; will retry")
            continue
        if rescued:
            listener.wake()
            await _tell(listener, rescued)


async def _tell(listener: StoreListener, ids: Sequence[str] | None) -> None:
    try:
        await listener.changed(ids)
    except Exception:
        logger.exception("handling other processes' changes failed")


async def _close(conn: Any) -> None:
    if conn is None:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT) as scope:
        try:
            await conn.close()
        except Exception:  # noqa: BLE001  # the connection is being dropped anyway
            conn.terminate()
    if scope.cancelled_caught:
        conn.terminate()
