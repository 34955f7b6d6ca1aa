"""A failing store, as the scheduler rides it out: how long to wait before trying again,
and saying once that the store fails and once that it recovered."""

from __future__ import annotations

import logging

from .._core.errors import StoreError

logger = logging.getLogger("wm_async.scheduler")

#: A failing store call (disk full, database restarting) is retried after this many
#: seconds, doubling up to STORE_RETRY_MAX, for as long as the manager runs.
STORE_RETRY_FIRST = 0.05
STORE_RETRY_MAX = 2.0


def backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row."""
    return min(STORE_RETRY_FIRST * (1 << min(failures - 1, 16)), STORE_RETRY_MAX)


class StoreHealth:
    """Whether the scheduler's store calls fail: an ERROR when they start failing, a
    WARNING when the store recovers, and DEBUG lines in between."""

    __slots__ = ("failing",)

    def __init__(self) -> None:
        self.failing = False

    def __repr__(self) -> str:
        return f"StoreHealth(failing={self.failing})"

    def failed(self, exc: StoreError, doing: str) -> None:
        """A store call failed while ``doing`` something (it will be retried)."""
        if not self.failing:
            self.failing = True
            logger.error("store failed while %s; retrying until it recovers: %s", doing, exc)
        else:
            logger.debug("store still failing while %s: %s", doing, exc)

    def recovered(self) -> None:
        """A store call succeeded."""
        if self.failing:
            self.failing = False
            logger.warning("store recovered")
