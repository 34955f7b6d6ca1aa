"""Publishing: where every record the manager writes, or learns that another process
wrote, goes: its transitions to the observers (the DEBUG transition log and the app's
listeners), then the event hub (``wait()``, ``watch()``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .observers import transitions_log

if TYPE_CHECKING:
    from .._core.record import WorkRecord
    from .events import EventHub
    from .observers import Observers


class Publisher:
    """Turns written records into events for the observers, and feeds the event hub.

    :param events: the hub that wakes waiters and feeds watchers
    :param observers: the app's listeners (and the transition log)
    """

    __slots__ = ("events", "observers")

    def __init__(self, events: EventHub, observers: Observers) -> None:
        self.events = events
        self.observers = observers

    def __repr__(self) -> str:
        return f"Publisher(events={self.events!r}, observers={self.observers!r})"

    def publish(self, records: Sequence[WorkRecord], external: bool = False) -> None:
        """Publish records just written (``external``: read as changed by another
        process)."""
        observers = self.observers
        if observers.listeners or transitions_log.isEnabledFor(logging.DEBUG):
            observers.emit(records, external=external)
        if observers.batch_listeners:
            observers.emit_batch(records, external=external)
        self.events.publish(records)
