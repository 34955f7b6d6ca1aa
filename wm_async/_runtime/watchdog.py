"""The blocked-loop watchdog: a thread that notices when the event loop stops turning
while works run, and logs which work's task (worker name and work id) holds it.

A worker that calls blocking code (``time.sleep``, a synchronous HTTP client, a long
computation) inside ``async def`` stalls every other work, the dispatcher and the whole
application. The loop cannot report that itself, so a daemon thread pings it: while runs
are in progress it schedules a no-op callback on the loop every quarter threshold, and
when one has waited longer than the threshold it reads the loop's current task (the
scheduler says which work a runner task runs) and the code it is executing, and logs a
WARNING; another when the loop turns again. With nothing running the thread sleeps until
the scheduler wakes it (:meth:`LoopWatchdog.wake`), so an idle manager costs nothing;
with runs in progress the cost is a few callbacks a second.

It measures real time (``time.monotonic``), not the manager's clock: a stalled loop is a
real-time fact, and a virtual clock must not see the watchdog at all.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("wm_async.watchdog")

#: The watchdog thread's name (one per running manager).
THREAD_NAME = "wm_async loop watchdog"


class LoopWatchdog:
    """Warns when the running loop has not turned for ``threshold`` seconds while
    ``busy()`` (works are running).

    :param threshold: seconds without a loop turn before warning
    :param busy: called from the thread; true while works run (must be thread-safe)
    """

    def __init__(
        self,
        threshold: float,
        busy: Callable[[], bool],
        describe: Callable[[asyncio.Task[object]], str | None] = lambda task: None,
    ) -> None:
        self.threshold = threshold
        self._busy = busy
        self._describe = describe  # what a task is doing (the work it runs), if known
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when runs start, or to stop
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._acked = 0  # written on the loop, read by the thread

    def __repr__(self) -> str:
        return f"LoopWatchdog(threshold={self.threshold})"

    def start(self) -> None:
        """Start watching the running loop (call on the loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Runs have started: watch the loop again (call on the loop, or anywhere)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (it wakes at once and exits)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=1.0)

    def _ack(self, seq: int) -> None:
        self._acked = seq

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        period = self.threshold / 4
        sent = 0  # sequence number of the last ping
        sent_at = 0.0
        reported: str | None = None  # the culprit of the block being reported
        while not self._stop.wait(period):
            now = time.monotonic()
            if self._acked == sent:  # the loop answered the last ping (or none was sent)
                if reported is not None:
                    logger.warning(
                        "the event loop turned again after %.2fs blocked by %s",
                        now - sent_at,
                        reported,
                    )
                    reported = None
                # Cleared before asking busy() and _stop, both set before wake() and
                # stop() set _wake: neither is missed.
                self._wake.clear()
                if not self._busy():
                    if not self._stop.is_set():
                        self._wake.wait()  # nothing runs: sleep until runs start (or stop)
                    continue
                sent += 1
                sent_at = now
                try:
                    loop.call_soon_threadsafe(self._ack, sent)
                except RuntimeError:  # the loop is closed: nothing left to watch
                    return
            elif reported is None and now - sent_at > self.threshold:
                reported = self._culprit(loop)
                logger.warning(
                    "the event loop has been blocked for %.2fs (blocked_loop_warning=%ss) "
                    "by %s; a worker must not call blocking code in 'async def': await "
                    "instead, or register a plain 'def' worker (it runs in a thread)",
                    now - sent_at,
                    self.threshold,
                    reported,
                )

    def _culprit(self, loop: asyncio.AbstractEventLoop) -> str:
        """The loop's current task and the code it executes, in words."""
        try:
            task = asyncio.current_task(loop)
        except RuntimeError:  # pragma: no cover - the loop closed meanwhile
            task = None
        if task is None:
            who = "code outside any task"
        else:
            who = f"task {task.get_name()!r}"
            doing = self._describe(task)
            if doing is not None:
                who += f" running {doing}"
        frame = sys._current_frames().get(self._loop_thread)
        if frame is not None:
            code = frame.f_code
            who += f" at {code.co_filename}:{frame.f_lineno} in {code.co_name}"
        return who
