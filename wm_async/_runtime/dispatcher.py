"""The dispatcher: the one task that claims due work and hands it to the runners.

The store is the due-heap: ``claim_due`` returns the works due now and the next due time,
so the dispatcher sleeps exactly until then or until woken (new work, a finished run, a
signal change, shutdown). It never polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from .._core.errors import StoreError
from .._core.model import NO_CONSTRAINTS
from ..stores._base import (
    Claimed,
    ClaimParams,
)
from .constraints import stop_reason_for
from .health import backoff

if TYPE_CHECKING:
    from .._clock import Clock
    from .._core.limits import HeldBy, WorkerLimits
    from .._core.record import WorkRecord
    from ..stores._base import Store
    from .executor import RunHandle
    from .health import StoreHealth
    from .hooks import TestHooks
    from .runners import RunnerPool
    from .runs import RunTable
    from .settle import Settle

#: Most works claimed per dispatcher turn. Between turns the loop runs the works just
#: claimed, so the first of a large backlog starts after one batch, not after all of it.
#: (256 rather than 128: the memory store runs a backlog about 5% faster, and a turn
#: still holds the loop for well under a millisecond.)
CLAIM_BATCH = 256


class Dispatcher:
    """Claims due works while places are free, and sleeps until the next is due."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        owner: str,
        runs: RunTable,
        pool: RunnerPool,
        blocked_signals: Callable[[], frozenset[str]],
        paused_workers: Callable[[], frozenset[str]],
        limits: Mapping[str, WorkerLimits],
        report_held: Callable[[Mapping[str, HeldBy]], None],
        require_signals: Callable[[frozenset[str]], None],
        hooks: TestHooks,
        settle: Settle,
        health: StoreHealth,
    ) -> None:
        self._store = store
        self._clock = clock
        self._owner = owner
        self._runs = runs
        self._pool = pool
        self._blocked_signals = blocked_signals
        self._paused_workers = paused_workers
        self._limits = limits
        self._report_held = report_held
        self._require_signals = require_signals
        self._hooks = hooks
        self._settle = settle
        self._health = health
        # An asyncio.Event: one is made per turn, and anyio.Event() looks up the async
        # backend each time.
        self._wakeup = asyncio.Event()
        self._scope: anyio.CancelScope | None = None
        # While asleep after a claim: the next due time that claim read (None: awake, or
        # asleep with nothing due, until woken).
        self._asleep_until: float | None = None
        # From the start of a turn until it sleeps: a claim may be in flight, and works
        # committed meanwhile may be missing from its next due time; the earliest due
        # time of those (see wake_for) then ends its sleep.
        self._claiming = False
        self._due_by: float | None = None
        #: Set once the dispatcher has stopped (after a claim in flight ended).
        self.done = anyio.Event()

    def __repr__(self) -> str:
        return f"Dispatcher(owner={self._owner!r})"

    def _start(self, records: list[WorkRecord], claimed_at: float) -> None:
        handles = self._pool.start(records, claimed_at)
        constrained = [h for h in handles if h.record.constraints is not NO_CONSTRAINTS]
        if constrained:
            self._check_signals(constrained)

    def _check_signals(self, handles: list[RunHandle]) -> None:
        """Stop, before they start, the claimed runs whose signals do not hold here.

        A claim skips works needing a signal this process knows to be false; but a work
        enqueued by another process (PostgreSQL) may need a signal this one has not been
        watching, and so was claimed. Watching starts now; until the signal reads true
        such a run is undone without spending an attempt (the next claim parks the
        work), so a work never runs where its constraints do not hold. (Synchronous with
        the start: no runner takes these runs before this returns.)"""
        self._require_signals(frozenset().union(*(h.record.signal_names for h in handles)))
        blocked = self._blocked_signals()
        if not blocked:
            return
        for handle in handles:
            if self._hooks.ignores_signals(handle.record.id):
                continue
            unmet = sorted(handle.record.signal_names & blocked)
            if unmet:
                handle.stop(stop_reason_for(unmet[0]))

    def wake(self) -> None:
        """Make the dispatcher look at the store again (coalesced until it does)."""
        if not self._wakeup.is_set():
            self._wakeup.set()
            settle = self._settle
            settle.dispatcher_asleep = False
            settle.touch()

    def wake_for(self, due: float | None) -> None:
        """Wake the dispatcher for new works due at ``due`` at the earliest (``None``:
        unknown), unless it will claim by then anyway: asleep until no later than
        ``due``, its claim then, made after these works were committed, finds them; in
        the middle of a turn, it sleeps until ``due`` at the latest. A producer
        enqueueing delayed works so costs no claim per call."""
        if due is not None:
            if self._claiming:
                if self._due_by is None or due < self._due_by:
                    self._due_by = due
                return
            until = self._asleep_until
            if until is not None and due >= until:
                return
        self.wake()

    def stop(self) -> None:
        """Stop claiming (a claim in flight finishes first: wait for :attr:`done`)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and dispatch until :meth:`stop`."""
        try:
            await self._loop(task_status)
        finally:
            self.done.set()

    def _until(self, deadline: float | None) -> float | None:
        """``deadline``, or earlier if works committed during this turn are due first."""
        due_by = self._due_by
        if due_by is not None and (deadline is None or due_by < deadline):
            return due_by
        return deadline

    def _sleeping(self) -> None:
        settle = self._settle
        settle.dispatcher_asleep = not self._wakeup.is_set()
        settle.touch()

    async def _loop(self, task_status: TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            task_status.started()
            store, clock, runs, settle = self._store, self._clock, self._runs, self._settle
            failures = 0
            full_claims = 0
            while True:
                self._wakeup = asyncio.Event()  # before claiming: a wake-up during it counts
                self._claiming, self._due_by = True, None
                settle.dispatcher_asleep = False
                settle.touch()
                free = runs.claimable()
                if free <= 0:
                    self._claiming = False
                    self._sleeping()
                    await clock.sleep_until(None, self._wakeup)  # a finishing run wakes us
                    continue
                params = ClaimParams(
                    now=clock.now(),
                    limit=min(free, CLAIM_BATCH),
                    owner=self._owner,
                    blocked_signals=self._blocked_signals(),
                    paused_workers=self._paused_workers(),
                    limits=self._limits,
                    returned={w: frozenset(ids) for w, ids in runs.returned_by_worker.items()},
                )
                # Shielded: works claimed must get their tasks, or they would sit RUNNING
                # until the next start's recovery.
                sent = clock.monotonic()  # the claims' leases last from no earlier
                with anyio.CancelScope(shield=True), settle.tracked():
                    claimed: Claimed | None = None
                    try:
                        claimed = await store.claim_due(params)
                    except StoreError as exc:
                        self._health.failed(exc, "claiming due work")
                    else:
                        self._health.recovered()
                    if claimed is not None and claimed.records:
                        self._start(claimed.records, sent)
                    if claimed is not None and self._hooks.constraints_met:
                        claimed = await self._claim_forced(params, claimed, sent)
                if claimed is None:
                    failures += 1
                    self._claiming = False
                    self._sleeping()
                    retry = self._until(clock.now() + backoff(failures))
                    await clock.sleep_until(retry, self._wakeup)
                    continue
                failures = 0
                # The limited workers whose due works this claim held back, and by what
                # (semantics 50).
                self._report_held(claimed.held)
                if claimed.records and len(claimed.records) >= min(free, CLAIM_BATCH):
                    # More may be due: claim again, the first time at once, before the
                    # runners start the works just claimed: a store with a writer thread
                    # then writes that claim while the loop runs them. A store that
                    # answers without suspending gets a checkpoint every other claim, so
                    # a backlog never holds the loop for long.
                    full_claims += 1
                    if full_claims % 2 == 0:
                        await anyio.lowlevel.checkpoint()
                    continue
                full_claims = 0
                deadline = self._until(claimed.next_due)
                self._claiming = False
                self._sleeping()
                self._asleep_until = deadline
                try:
                    await clock.sleep_until(deadline, self._wakeup)
                finally:
                    self._asleep_until = None

    async def _claim_forced(self, params: ClaimParams, claimed: Claimed, sent: float) -> Claimed:
        """The works TestDriver declared met, which the store's claim skipped if their
        signals are false (see :class:`TestHooks`)."""
        try:
            forced, later = await self._hooks.claim_forced(
                self._store,
                now=params.now,
                owner=self._owner,
                limit=params.limit - len(claimed.records),
            )
        except StoreError as exc:
            self._health.failed(exc, "claiming due work")
            return claimed
        if forced:
            self._start(forced, sent)
        due = [t for t in (claimed.next_due, later) if t is not None]
        return Claimed(
            records=[*claimed.records, *forced],
            next_due=min(due, default=None),
            held=claimed.held,
        )
