"""The walk that resolves the BLOCKED dependents of finished works, level by level, for
every store. The store reads and writes (:class:`DependentsIO`); the decisions are the
lifecycle's (:func:`~wm_async._core.lifecycle.split_level` and the functions after it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from .._core import lifecycle

if TYPE_CHECKING:
    from .._core.data import Data
    from .._core.record import WorkRecord

_O = TypeVar("_O")


class DependentsIO(Protocol):
    """What the walk asks of a store, inside the transaction that finished the works."""

    async def stopped(self, ids: list[str]) -> Iterable[tuple[str, WorkRecord]]:
        """The BLOCKED dependents of the works ``ids``: ``(prerequisite id, dependent)``
        for each edge."""

    async def count(self, ids: list[str]) -> Iterable[tuple[int, WorkRecord]]:
        """Count the success of the works ``ids`` in their BLOCKED dependents; return
        ``(prerequisites still waited for, dependent)`` for each of those."""

    async def outputs(self, ready: list[WorkRecord]) -> Sequence[Sequence[Data]]:
        """The direct prerequisites' outputs of each ``ready`` work, in position order."""

    async def write(self, records: list[WorkRecord]) -> None:
        """Store the dependents resolved (they were BLOCKED; they wait for nothing now)."""


async def propagate(
    io: DependentsIO, ended: Mapping[str, tuple[WorkRecord, _O]]
) -> list[tuple[_O, WorkRecord]]:
    """Resolve the BLOCKED dependents of the ``ended`` works (id -> (record, origin)),
    level by level; return ``(origin, record)`` for each dependent written, its origin
    being that of a work that resolved it (semantics 19 and 29)."""
    out: list[tuple[_O, WorkRecord]] = []
    level = ended
    while level:
        stopped, succeeded = lifecycle.split_level(level)
        resolved: list[tuple[_O, WorkRecord]] = []
        if stopped:  # failures and cancellations first: they win over a success
            resolved = lifecycle.stop_dependents(stopped, await io.stopped(list(stopped)))
            if resolved:
                await io.write([r for _, r in resolved])
        if succeeded:
            ready = lifecycle.ready_dependents(await io.count([r.id for r, _ in succeeded]))
            if ready:
                outputs = await io.outputs(ready)
                unblocked = lifecycle.unblock_dependents(
                    succeeded, zip(ready, outputs, strict=True)
                )
                await io.write([r for _, r in unblocked])
                resolved += unblocked
        out += resolved
        level = lifecycle.next_level(resolved)
    return out
