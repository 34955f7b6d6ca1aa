"""What the conformance tests share: a fixed time and short-hands for records and claims.

Tests build records with :func:`record` and drive them through the store's public
operations only; the expected results come from :mod:`wm_async._core.lifecycle`, which
decides every transition (a store persists, it does not decide).
"""

from __future__ import annotations

from ..._api.requests import OneTimeWorkRequest
from ..._core.record import WorkRecord
from ...stores import (
    Claimed,
    ClaimParams,
    Store,
)

#: The time the tests run at (UTC epoch seconds).
NOW = 1_700_000_000.0


def record(
    worker: str = "w", *, at: float = NOW, unique_name: str | None = None, **kw: object
) -> WorkRecord:
    """A new ENQUEUED record enqueued at ``at`` (so due at ``at`` + initial_delay)."""
    request = OneTimeWorkRequest(worker, **kw)  # type: ignore[arg-type]
    return WorkRecord.from_request(request, now=at, unique_name=unique_name)


async def claim_due(
    store: Store, *, now: float = NOW, limit: int = 100, blocked: set[str] | None = None
) -> Claimed:
    """Claim for the owner ``"me"`` what is due at ``now``, with ``blocked`` signals
    false."""
    params = ClaimParams(
        now=now, limit=limit, owner="me", blocked_signals=frozenset(blocked or ())
    )
    return await store.claim_due(params)


async def running(store: Store, work: WorkRecord, *, now: float = NOW) -> WorkRecord:
    """Insert ``work`` (due by ``now``) and claim it."""
    await store.insert([work])
    claimed = await claim_due(store, now=now)
    assert [r.id for r in claimed.records] == [work.id]
    return claimed.records[0]


def ids(records: list[WorkRecord]) -> list[str]:
    """The records' ids, in order."""
    return [r.id for r in records]


def by_id(records: list[WorkRecord]) -> dict[str, WorkRecord]:
    """The records by id (for results whose order a store may choose)."""
    found = {r.id: r for r in records}
    assert len(found) == len(records), "a record is listed twice"
    return found
