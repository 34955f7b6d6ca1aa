"""TestHooks: what :mod:`wm_async.testing`'s ``TestDriver`` changes in a running manager,
in one object the runtime consults, so that no test-only parameter reaches a store.

Production code pays one empty-set check per dispatcher turn for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._core import lifecycle
from .._core.model import WorkState

if TYPE_CHECKING:
    from .._core.record import WorkRecord
    from ..stores._base import Store


@attrs.define(eq=False)
class TestHooks:
    """Works whose constraints ``TestDriver.set_all_constraints_met`` declared met.

    Such a work runs whatever its signals say, and losing a signal no longer stops it.
    The store's claim skips works whose signals are false, so the dispatcher claims
    these itself, one compare-and-set each (:meth:`claim_forced`). (On PostgreSQL such a
    claim's lease starts at the run's first renewal, half a lease later.)
    """

    __test__ = False  # not a pytest test class

    constraints_met: set[str] = attrs.field(factory=set)

    def ignores_signals(self, work_id: str) -> bool:
        """Whether the work runs whatever its signals say."""
        return work_id in self.constraints_met

    async def claim_forced(
        self, store: Store, *, now: float, owner: str, limit: int
    ) -> tuple[list[WorkRecord], float | None]:
        """Claim the due ENQUEUED works among those declared met (up to ``limit``);
        return them and the earliest due time of the others still waiting."""
        if not self.constraints_met or limit <= 0:
            return [], None
        changes: list[lifecycle.Change] = []
        later: float | None = None
        for record in sorted(await store.get(self.constraints_met), key=lambda r: r.id):
            if record.state is not WorkState.ENQUEUED or record.next_run_at is None:
                continue
            if record.next_run_at > now:
                later = record.next_run_at if later is None else min(later, record.next_run_at)
            elif len(changes) < limit:
                changes.append(
                    lifecycle.Change(record, lifecycle.claim(record, now=now, owner=owner))
                )
        return (await store.apply(changes) if changes else []), later
