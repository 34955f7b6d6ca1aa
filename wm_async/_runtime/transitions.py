"""Publishing: where every record the manager writes, or learns that another process
wrote, goes: the DEBUG transition log, then the event hub (``wait()``, ``watch()``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._core.model import (
    StopReason,
    WorkState,
)

if TYPE_CHECKING:
    from .._core.record import WorkRecord
    from .events import EventHub

_transitions = logging.getLogger("wm_async.transitions")


class Publisher:
    """Logs state changes and feeds the event hub.

    :param events: the hub that wakes waiters and feeds watchers
    """

    __slots__ = ("_logged_states", "events")

    def __init__(self, events: EventHub) -> None:
        self.events = events
        # (state, attempts) last logged per unfinished work, for the DEBUG transition log.
        self._logged_states: dict[str, tuple[WorkState, int]] = {}

    def __repr__(self) -> str:
        return f"Publisher(events={self.events!r})"

    def publish(self, records: Sequence[WorkRecord]) -> None:
        """Publish records just written (or read as changed by another process)."""
        if _transitions.isEnabledFor(logging.DEBUG):
            self._log_transitions(records)
        self.events.publish(records)

    def _log_transitions(self, records: Sequence[WorkRecord]) -> None:
        """One DEBUG line per state change; progress reports are not one. The state
        before is ``-`` for a work this process has not seen change yet."""
        seen = self._logged_states
        for r in records:
            now = (r.state, r.run_attempt_count)
            # Only unfinished works are remembered, so the map stays small.
            before = seen.pop(r.id, None) if r.state.is_finished else seen.get(r.id)
            if not r.state.is_finished:
                seen[r.id] = now
            if before == now:
                continue
            extra = ""
            if r.stop_reason is not StopReason.NOT_STOPPED:
                extra += f" stop_reason={r.stop_reason.value}"
            if r.state is WorkState.FAILED and r.error is not None:
                extra += f" error={r.error.type}"
            _transitions.debug(
                "work %s (%r): %s -> %s attempts=%d%s",
                r.id,
                r.worker,
                before[0].value if before else "-",
                r.state.value,
                r.run_attempt_count,
                extra,
            )
