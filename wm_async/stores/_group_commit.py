"""Group commit: the writes of concurrent callers run together, in one transaction.

Whichever caller finds no batch in progress leads: it lets the callers of the same
moment join, takes everything queued as one batch, runs it, wakes every caller of the
batch with its own result or error, and hands the lead to the first caller queued
meanwhile (so nobody serves others for longer than one batch). There is no background
task; a caller cancelled before its batch started is taken out of the queue and never
runs, and a batch once started is never left half done (the leader is shielded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import attrs


@attrs.define(eq=False)
class Op:
    """One caller's write, queued for the next batch: the store sets its ``result`` or
    ``error`` while it runs the batch."""

    arg: Any
    # result ready, or: lead. An asyncio Event: one is made per write, and anyio's costs
    # ten times as much to create (it looks up the backend); the scheduler is asyncio's.
    wake: asyncio.Event = attrs.field(factory=asyncio.Event)
    queued: bool = True  # not yet taken into a batch
    promoted: bool = False  # handed the lead while queued
    result: Any = None
    error: BaseException | None = None


_OpT = TypeVar("_OpT", bound=Op)


def _others_ready() -> bool:
    """Whether other callbacks wait to run in this loop iteration: only they could
    join a batch at a checkpoint. A lone caller (one producer awaiting each enqueue)
    then skips the checkpoint, a turn of the loop. On a loop without asyncio's ready
    queue (uvloop): always assumed."""
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is None or len(ready) > 0


@attrs.define(eq=False)
class GroupCommit(Generic[_OpT]):
    """The leader/follower batching of one store's writes.

    :param run: runs one batch, setting each op's ``result`` or ``error`` (an exception
        it raises is given to every op of the batch)
    """

    _run: Callable[[list[_OpT]], Awaitable[None]]
    queue: list[_OpT] = attrs.field(init=False, factory=list)
    busy: bool = attrs.field(init=False, default=False)  # a leader runs, or is handed over
    _idle: anyio.Event | None = attrs.field(init=False, default=None)

    async def submit(self, op: _OpT, *, gather: bool = True) -> Any:
        """Queue ``op``, wait until a batch holding it has run (leading that batch if
        no other caller does) and return its result or raise its error.

        :param gather: whether a caller who leads at once lets concurrent callers join
            its batch first (a promoted follower always does)
        """
        self.queue.append(op)
        if self.busy:
            try:
                await op.wake.wait()
            except BaseException:
                if op.queued:  # cancelled before its batch started: it never runs
                    self.queue.remove(op)
                    if op.promoted:
                        self._hand_off()
                raise
            if op.queued:  # promoted: lead the batch that holds this op
                await self._lead(gather=True)
        else:
            self.busy = True
            await self._lead(gather=gather)
        if op.error is not None:
            raise op.error
        return op.result

    async def idle(self) -> None:
        """Wait until no batch runs or waits to (the store stops accepting writes first)."""
        if self.busy:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def _lead(self, *, gather: bool) -> None:
        """Run one batch (every queued op), then hand the lead to the next queued caller."""
        try:
            with anyio.CancelScope(shield=True):  # a batch is never left half done
                if gather and _others_ready():
                    await anyio.lowlevel.checkpoint()  # let concurrent callers join
                batch, self.queue = self.queue, []
                for op in batch:
                    op.queued = False
                try:
                    await self._run(batch)
                except BaseException as exc:  # a bug: never leave a follower without an answer
                    for op in batch:
                        op.error = op.error or exc
                    if not isinstance(exc, Exception):
                        raise
                finally:
                    for op in batch:
                        op.wake.set()
        finally:
            self._hand_off()

    def _hand_off(self) -> None:
        if self.queue:
            first = self.queue[0]
            first.promoted = True
            first.wake.set()
        else:
            self.busy = False
            if self._idle is not None:
                self._idle.set()
