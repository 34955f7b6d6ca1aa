"""WorkExplanation: why a work is (not) running, in fields and in words."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import attrs

from .limits import HELD_REASONS, HeldBy
from .model import WorkInfo, WorkState


@attrs.frozen(kw_only=True)
class WorkExplanation:
    """Why a work is (not) running, from ``manager.explain(id)``.

    :ivar info: the work's WorkInfo
    :ivar due_at: when an ENQUEUED work's delay or backoff ends (UTC), if in the future
    :ivar unmet_signals: each needed signal that does not hold now, with the reason
    :ivar capacity_full: no work can be claimed now: every ``max_concurrency`` place is
        taken, or as many outcomes wait to be written
    :ivar reasons: the above in words, most important first
    :ivar worker_paused: the work's worker is paused (``manager.pause_worker``)
    :ivar held_by: the worker's limit that holds the due work back (semantics 50), or
        :attr:`HeldBy.PAUSED`; ``None`` if none does
    """

    info: WorkInfo
    due_at: datetime | None
    unmet_signals: Mapping[str, str]
    capacity_full: bool
    reasons: tuple[str, ...]
    worker_paused: bool = False
    held_by: HeldBy | None = None

    @classmethod
    def build(
        cls,
        info: WorkInfo,
        *,
        now: float,
        due: float | None,
        unmet_signals: Mapping[str, str],
        capacity_full: bool,
        worker_paused: bool = False,
        held_by: HeldBy | None = None,
    ) -> WorkExplanation:
        """Assemble the explanation and its sentences."""
        reasons: list[str] = []
        due_at = None
        state = info.state
        if state.is_finished:
            reasons.append(f"finished: {state.value}")
        elif state is WorkState.RUNNING:
            reasons.append("running")
        elif state is WorkState.BLOCKED:
            reasons.append("waiting for its prerequisites to succeed")
        else:
            if worker_paused:
                reasons.append(
                    f"its worker {info.worker!r} is paused: it waits for resume_worker()"
                )
            if due is not None and due > now:
                due_at = datetime.fromtimestamp(due, UTC)
                reasons.append(f"delayed until {due_at.isoformat()} ({due - now:.1f}s from now)")
            for name, why in unmet_signals.items():
                reasons.append(f"waiting for signal {name!r}: {why}")
            if held_by in HELD_REASONS and due_at is None:
                reasons.append(f"due, but its worker {info.worker!r} {HELD_REASONS[held_by]}")
            if capacity_full and due_at is None and not unmet_signals and not worker_paused:
                reasons.append("due, but every max_concurrency slot is taken")
            if not reasons:
                reasons.append("due now; it starts at the next dispatch")
        return cls(
            info=info,
            due_at=due_at,
            unmet_signals=dict(unmet_signals) if state is WorkState.ENQUEUED else {},
            capacity_full=capacity_full,
            reasons=tuple(reasons),
            worker_paused=worker_paused and state is WorkState.ENQUEUED,
            held_by=held_by if state is WorkState.ENQUEUED else None,
        )

    def __str__(self) -> str:
        return f"work {self.info.id} ({self.info.worker}): " + "; ".join(self.reasons)
