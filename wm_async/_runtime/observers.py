"""Observers: what an app hooks into a manager (semantics 52): middleware around every
worker call, listeners of every state transition (as :class:`WorkEvent` values), and
propagators that store headers with every work enqueued. The DEBUG transition log is
one of the listeners.

With nothing registered (and the transition log off), publishing pays two attribute
checks per batch of records and a run one tuple check: no event is built.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from .._core.data import FrozenData
from .._core.event import Listener, Propagator, Seen, WorkEvent
from .._core.model import StopReason, WorkState

_RUNNING, _ENQUEUED, _BLOCKED = WorkState.RUNNING, WorkState.ENQUEUED, WorkState.BLOCKED
_tuple_new = tuple.__new__
#: The context of the thread a call came from, when it is not the enqueuing task's own
#: (a SyncClient's calls run in its loop thread): propagators run in it.
CALLER_CONTEXT: contextvars.ContextVar[contextvars.Context | None] = contextvars.ContextVar(
    "wm_async_caller_context", default=None
)
#: How many unfinished works the "before" of events is remembered for (about 100 bytes
#: each): past it, the work seen first is forgotten (its next event has no
#: ``from_state``). Bounds a producer that enqueues works it never sees finish.
SEEN_MAX = 100_000

if TYPE_CHECKING:
    from .._core.data import Data
    from .._core.record import WorkRecord
    from .executor import Middleware

#: What ``Observers.batch_listeners`` holds: called with each batch of records published
#: and whether they were written by another process.
BatchListener: TypeAlias = "Callable[[Sequence[WorkRecord], bool], None]"

#: The DEBUG transition log (one line per state change).
transitions_log = logging.getLogger("wm_async.transitions")
logger = logging.getLogger("wm_async.events")


def log_event(event: WorkEvent) -> None:
    """The DEBUG transition log's line for ``event`` (the state before is ``-`` for a
    work this process has not seen change yet)."""
    extra = ""
    if event.stop_reason is not StopReason.NOT_STOPPED:
        extra += f" stop_reason={event.stop_reason.value}"
    if event.to_state is WorkState.FAILED and event.error is not None:
        extra += f" error={event.error.type}"
    transitions_log.debug(
        "work %s (%r): %s -> %s attempts=%d%s",
        event.work_id,
        event.worker,
        event.from_state.value if event.from_state else "-",
        event.to_state.value,
        event.attempt,
        extra,
    )


class Observers:
    """The middleware, listeners and propagators of one manager (shared by its starts)."""

    __slots__ = ("_seen", "batch_listeners", "listeners", "middleware", "propagators")

    def __init__(self) -> None:
        #: Called with every event, in registration order.
        self.listeners: list[Listener] = []
        #: Called with every batch of records published, and whether they are external
        #: (wm_async's own metrics: no event per transition; each keeps what it saw).
        self.batch_listeners: list[BatchListener] = []
        #: Around every worker call, outermost first (a tuple: runs read it unlocked).
        self.middleware: tuple[Middleware, ...] = ()
        #: Fill the headers stored with each work enqueued.
        self.propagators: list[Propagator] = []
        # (state, attempts) last seen per unfinished work, as an int: the "before" of the
        # next event (only unfinished works are remembered, so the map stays small).
        self._seen: dict[str, Seen] = {}

    def __repr__(self) -> str:
        return (
            f"Observers(listeners={len(self.listeners)}, middleware={len(self.middleware)}, "
            f"propagators={len(self.propagators)}, batch_listeners={len(self.batch_listeners)})"
        )

    def headers(self) -> Data | None:
        """The headers the propagators give for works enqueued now (``None``: none)."""
        if not self.propagators:
            return None
        carrier: dict[str, str] = {}
        caller = CALLER_CONTEXT.get()
        for propagate in self.propagators:
            try:
                if caller is None:
                    propagate(carrier)
                else:
                    caller.run(propagate, carrier)
            except Exception:
                logger.exception("propagator %r failed; its headers are not stored", propagate)
        if not carrier:
            return None
        return FrozenData({str(k): str(v) for k, v in carrier.items()})

    def emit_batch(self, records: Sequence[WorkRecord], *, external: bool = False) -> None:
        """``records`` (as :meth:`emit` takes them) to every batch listener."""
        for listener in self.batch_listeners:
            try:
                listener(records, external)
            except Exception:
                logger.exception("batch listener %r failed", listener)

    def emit(self, records: Sequence[WorkRecord], *, external: bool = False) -> None:
        """The events of ``records`` (just written, or read as written elsewhere when
        ``external``), to the transition log (if on) and every listener."""
        log = transitions_log.isEnabledFor(logging.DEBUG)
        listeners = self.listeners
        only = listeners[0] if len(listeners) == 1 else None  # (no loop per event)
        seen = self._seen
        new, event_type = _tuple_new, WorkEvent
        for r in records:
            # (Identity tests: an enum's hash is Python code. What is seen of a work is
            # an int, see WorkEvent's Seen: no allocation the collector tracks.)
            state, key = r.state, r.id
            if state is _RUNNING:
                code = r.run_attempt_count * 4 + 1
            elif state is _ENQUEUED:
                code = r.run_attempt_count * 4
            elif state is _BLOCKED:
                code = r.run_attempt_count * 4 + 2
            else:
                code = -1  # finished: forgotten
            if code < 0:
                before = seen.pop(key, None)
            else:
                before = seen.get(key)
                if before == code:
                    continue  # a progress report, or a record published again
                seen[key] = code
                if before is None and len(seen) > SEEN_MAX:
                    del seen[next(iter(seen))]  # the work seen first
            event = new(event_type, (r, before, external))  # WorkEvent(r, before, external)
            if log:
                log_event(event)
            if only is not None:
                try:
                    only(event)
                except Exception:
                    logger.exception("event listener %r failed on %s", only, event)
                continue
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception("event listener %r failed on %s", listener, event)
