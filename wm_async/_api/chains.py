"""Chains: WorkContinuation, a chain of one-time works under construction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .._core.errors import InvalidRequestError
from .._core.mergers import COMBINE_WORKER, ArrayCreatingInputMerger
from .._core.model import WorkQuery
from .requests import OneTimeWorkRequest, PeriodicWorkRequest

if TYPE_CHECKING:
    from .._core.model import ExistingWorkPolicy, WorkInfo


# -- continuations -------------------------------------------------------------------------


class ChainOwner(Protocol):
    """What a continuation needs of the manager that made it (which imports this
    module, so this one names the manager only by what it uses)."""

    async def _enqueue_chain(
        self, last: WorkContinuation, *, connection: object = None
    ) -> bool: ...

    async def get_work_infos(self, query: WorkQuery) -> list[WorkInfo]: ...


class WorkContinuation:
    """A chain of one-time works under construction: each step depends on every work of
    the step before it, and the works of one step run in parallel (semantics 17).

    Made by :meth:`WorkManager.begin_with` or :meth:`WorkManager.begin_unique_work`,
    grown with :meth:`then` and :meth:`combine`, stored with :meth:`enqueue`::

        await manager.begin_with(download_a, download_b).then(merge).then(upload).enqueue()

    A continuation is immutable: ``then`` returns a new one, so one prefix can fork into
    several chains. Cycles cannot be built: a request may appear once in a chain.

    Building is linear in the chain's size: a continuation shares its steps with the one
    it grew from (see :class:`_Steps`), so ``then`` costs the size of its own step, and
    ``ids``, ``combine`` and ``enqueue`` the size of the chain.
    """

    __slots__ = (
        "_enqueued",
        "_manager",
        "_parents",
        "_policy",
        "_requests",
        "_size",
        "_steps",
        "_unique_name",
    )

    def __init__(
        self,
        manager: ChainOwner,
        requests: Sequence[OneTimeWorkRequest],
        parents: Sequence[WorkContinuation] = (),
        *,
        unique_name: str | None = None,
        policy: ExistingWorkPolicy | None = None,
    ) -> None:
        # Internal: use the manager's begin_with / begin_unique_work.
        self._manager = manager
        self._parents = tuple(parents)
        self._requests = _check_step(requests)
        self._unique_name = unique_name
        self._policy = policy
        self._enqueued = False
        steps, size = _Steps.before(self._parents)
        for r in self._requests:
            if r.id in steps.where:
                raise InvalidRequestError(
                    "request", r, "this request is already in the chain (a cycle)"
                )
        # Checked: now this step joins the chain (nothing changed if a check failed).
        steps.nodes.append(self)
        steps.where.update((r.id, size) for r in self._requests)
        self._steps, self._size = steps, size + 1

    def __repr__(self) -> str:
        workers = ", ".join(r.worker for r in self._requests)
        return f"<WorkContinuation [{workers}] after {len(self._parents)} step(s)>"

    @property
    def requests(self) -> tuple[OneTimeWorkRequest, ...]:
        """The works of this (last) step."""
        return self._requests

    @property
    def ids(self) -> tuple[uuid.UUID, ...]:
        """The ids of every work in the chain, earlier steps first."""
        return tuple(r.id for node in self._graph() for r in node._requests)

    @property
    def unique_name(self) -> str | None:
        """The unique name the chain's works are enqueued under, if any."""
        return self._unique_name

    def then(self, *requests: OneTimeWorkRequest) -> WorkContinuation:
        """A continuation whose new step (``requests``, run in parallel) starts once every
        work of this step has succeeded; their outputs are merged into its inputs.

        :raises InvalidRequestError: for no request, a periodic request, or a request
            already in the chain
        """
        return WorkContinuation(self._manager, requests, (self,), unique_name=self._unique_name)

    @staticmethod
    def combine(*continuations: WorkContinuation) -> WorkContinuation:
        """A continuation joining several chains: a pass-through step that waits for the
        last step of each and outputs their merged outputs (ArrayCreatingInputMerger),
        so a following :meth:`then` step receives all of them.

        :raises InvalidRequestError: for no continuation, or continuations of different
            managers
        """
        if not continuations:
            raise InvalidRequestError("continuations", (), "combine needs at least one")
        for c in continuations:
            if not isinstance(c, WorkContinuation):
                raise InvalidRequestError("continuations", c, "expected WorkContinuation objects")
        manager = continuations[0]._manager
        if any(c._manager is not manager for c in continuations):
            raise InvalidRequestError(
                "continuations", continuations, "all must belong to the same WorkManager"
            )
        step = OneTimeWorkRequest(COMBINE_WORKER, input_merger=ArrayCreatingInputMerger)
        return WorkContinuation(manager, (step,), continuations)

    async def enqueue(self, *, connection: object = None) -> None:
        """Store the chain's works that are not stored yet, in one transaction: each one
        BLOCKED until its prerequisites succeed (or at once ENQUEUED, FAILED or CANCELLED
        as semantics 18 says). Enqueueing a continuation again does nothing.

        :param connection: (PostgreSQL) an asyncpg connection in the app's open
            transaction, as for :meth:`WorkManager.enqueue`: the chain is stored if the
            app commits. Its steps are not marked as enqueued (the app's COMMIT
            decides): enqueueing it again stores them after a rollback, and raises
            InvalidRequestError (their ids exist) after a commit
        :raises InvalidRequestError: for an invalid request, a chain joining two
            unique chains, or a ``connection`` the store cannot write through
        :raises UnknownWorkerError: if no worker is registered for a request
        :raises NotRunningError: if the manager is not running
        """
        await self._manager._enqueue_chain(self, connection=connection)

    async def get_work_infos(self) -> list[WorkInfo]:
        """The WorkInfo of every stored work of the chain, earlier steps first."""
        ids = self.ids
        infos = {i.id: i for i in await self._manager.get_work_infos(WorkQuery(ids=ids))}
        return [infos[i] for i in ids if i in infos]

    def _graph(self) -> list[WorkContinuation]:
        """Every step of the chain, each after all of its parents (the first parent's
        steps first, as a depth-first walk finds them), this one last."""
        return self._steps.nodes[: self._size]


class _Steps:
    """The steps of a chain, shared by the continuations grown from one another.

    A continuation's chain is ``nodes[:size]`` (its ``_size``; it is the last of them),
    and ``where`` maps the id of every request in ``nodes`` to the index of its step.
    ``then`` on the continuation that ends ``nodes`` (the usual case) appends the new
    step in place: the continuations before it do not see it, their chains end earlier.
    ``then`` on an earlier one (a fork) finds its place taken and starts a copy of its
    own chain, so forks never see each other's requests; a copy costs the chain's size,
    once per fork. ``combine`` copies the union of its chains.
    """

    __slots__ = ("nodes", "where")

    def __init__(self, nodes: list[WorkContinuation]) -> None:
        self.nodes = nodes
        # A request in two steps (two begin_with of one request, combined) keeps its first
        # step; enqueueing such a chain is refused, as a work stored twice.
        self.where: dict[uuid.UUID, int] = {}
        for index in reversed(range(len(nodes))):
            self.where.update((r.id, index) for r in nodes[index]._requests)

    @classmethod
    def before(cls, parents: tuple[WorkContinuation, ...]) -> tuple[_Steps, int]:
        """The steps a new step after ``parents`` joins, and its index in them: the
        parent's own when it ends them, else a new copy (nothing is changed here)."""
        if len(parents) == 1:
            parent = parents[0]
            if len(parent._steps.nodes) == parent._size:
                return parent._steps, parent._size
            return cls(parent._graph()), parent._size
        seen: set[int] = set()
        union: list[WorkContinuation] = []
        for p in parents:
            for node in p._graph():
                if id(node) not in seen:
                    seen.add(id(node))
                    union.append(node)
        return cls(union), len(union)


def _check_step(requests: Sequence[object]) -> tuple[OneTimeWorkRequest, ...]:
    if not requests:
        raise InvalidRequestError("requests", (), "a chain step needs at least one request")
    ids: set[uuid.UUID] = set()
    for r in requests:
        if isinstance(r, PeriodicWorkRequest):
            raise InvalidRequestError("request", r, "periodic work cannot be chained")
        if not isinstance(r, OneTimeWorkRequest):
            raise InvalidRequestError("request", r, "expected OneTimeWorkRequest objects")
        if r.id in ids:
            raise InvalidRequestError("request", r, "this request is twice in the step")
        ids.add(r.id)
    return tuple(requests)  # type: ignore[arg-type]  # checked above
