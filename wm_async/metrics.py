"""Prometheus metrics for a :class:`~wm_async.WorkManager`, counted from the records it
publishes.

::

    from wm_async.metrics import exposition, instrument

    manager = wm.WorkManager(store="sqlite:///wm_async.db")
    instrument(manager)  # counts from now on

    # in any web handler: body and content type of the Prometheus text format
    body, content_type = await exposition(manager)

or mount it on its own: ``asgi_app(manager)`` (an ASGI app, e.g. ``app.mount("/metrics",
asgi_app(manager))`` in Starlette or FastAPI) or, in aiohttp,
``app.router.add_get("/metrics", aiohttp_handler(manager))``.

The metrics (``worker`` and ``state`` labels):

- ``wm_async_transitions_total{worker, state}``: state transitions this process wrote,
  by the state entered
- ``wm_async_run_duration_seconds{worker}``: histogram of run durations
- ``wm_async_start_lateness_seconds{worker}``: histogram of how long after its due time a
  run started
- ``wm_async_retries_total{worker}``, ``wm_async_timeouts_total{worker}``,
  ``wm_async_rescues_total{worker}``: runs that ended with a retry, runs stopped by their
  timeout, works that crash recovery put back
- ``wm_async_works{worker, state}``: works in the store by worker and state (every
  process's), read from the store when scraped (one query)

Every process counts what it writes (the transitions another process wrote are that
process's to count), so the counters of several processes add up in Prometheus.

Counting costs a few dictionary updates per transition, in plain Python structures,
done over each batch of records the manager publishes (no event built, no call per
transition); the Prometheus families are built only when scraped. This module needs prometheus_client
(``pip install 'wm_async[metrics]'``), imported when the metrics are created, not when
this module is.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ._api.manager import WorkManager
from ._core.errors import InvalidRequestError, WorkManagerError
from ._core.event import WorkEvent
from ._core.event import seen as seen_code
from ._core.model import StopReason, WorkState
from ._runtime.observers import SEEN_MAX
from ._runtime.services import RunState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from ._core.record import WorkRecord

__all__ = (
    "DEFAULT_BUCKETS",
    "WorkMetrics",
    "aiohttp_handler",
    "asgi_app",
    "exposition",
    "instrument",
)

logger = logging.getLogger("wm_async.metrics")

#: The histograms' bucket upper bounds, in seconds (``+Inf`` is added).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0,
)  # fmt: skip

_RUNNING = WorkState.RUNNING
_ENQUEUED = WorkState.ENQUEUED
_NOT_STOPPED = StopReason.NOT_STOPPED
_TIMEOUT = StopReason.TIMEOUT
_UNKNOWN = StopReason.UNKNOWN

_instrumented: MutableMapping[WorkManager, WorkMetrics] = weakref.WeakKeyDictionary()


#: How many observations a histogram holds before it sorts them into its buckets.
_FOLD_AT = 4096


class _Histogram:
    """One worker's observations: cumulative counts per bucket, their number and sum,
    plus the values observed since the last fold. Observing appends a float to a list
    (an ``array``'s append parses its argument: twice the cost); every
    ``_FOLD_AT`` values are sorted (C speed) and counted into the buckets, one bisection
    per bound."""

    __slots__ = ("bounds", "count", "counts", "pending", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # values <= each bound (cumulative)
        self.count = 0
        self.sum = 0.0
        self.pending: list[float] = []

    def fold(self) -> None:
        """Count the pending values into the buckets."""
        self.counts, self.count, self.sum = self._folded(self.pending)
        self.pending = []

    def _folded(self, pending: list[float]) -> tuple[list[int], int, float]:
        values = sorted(pending)
        counts = [
            n + bisect.bisect_right(values, b)
            for n, b in zip(self.counts, self.bounds, strict=True)
        ]
        # (Values below 0, from a stepped clock, count as 0.)
        positive = values[bisect.bisect_right(values, 0.0) :]
        return counts, self.count + len(values), self.sum + math.fsum(positive)

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """The buckets (``le``, cumulative count; ``+Inf`` last) and the sum, without
        changing anything (a scrape may come from another thread)."""
        counts, count, sum_ = self._folded(self.pending.copy())
        buckets = [(repr(b), float(n)) for b, n in zip(self.bounds, counts, strict=True)]
        buckets.append(("+Inf", float(count)))
        return buckets, sum_


class _Worker:
    """One worker's counters, found with one lookup per event."""

    __slots__ = ("counts", "durations", "lateness")

    def __init__(self, counts: dict[str, int], lateness: _Histogram, durations: _Histogram):
        self.counts = counts
        self.lateness = lateness
        self.durations = durations


class WorkMetrics:
    """The metrics of one manager: a batch listener counting its transitions, and a
    Prometheus collector registered in ``registry`` (see :func:`instrument`).

    :ivar registry: the Prometheus registry it is registered in
    """

    def __init__(
        self,
        manager: WorkManager,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError as exc:  # pragma: no cover - the test extra installs it
            raise ImportError(
                f"wm_async.metrics needs prometheus_client: pip install 'wm_async[metrics]' "
                f"({exc})"
            ) from exc
        bounds = [float(b) for b in buckets]
        if not bounds or bounds[0] <= 0 or any(b <= a for a, b in itertools.pairwise(bounds)):
            raise InvalidRequestError("buckets", buckets, "expected increasing positive bounds")
        self._manager = weakref.ref(manager)
        self._bounds = bounds
        self._transitions: dict[str, dict[str, int]] = {}
        self._durations: dict[str, _Histogram] = {}
        self._lateness: dict[str, _Histogram] = {}
        self._retries: dict[str, int] = {}
        self._timeouts: dict[str, int] = {}
        self._rescues: dict[str, int] = {}
        self._counts: dict[tuple[str, WorkState], int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registry: CollectorRegistry = (
            CollectorRegistry(auto_describe=True) if registry is None else registry
        )
        self._count = self._counter()
        self.registry.register(self)
        manager._services.observers.batch_listeners.append(self._count)

    def __repr__(self) -> str:
        total = sum(n for counts in self._transitions.values() for n in counts.values())
        return f"WorkMetrics(transitions={total})"

    # -- counting (a batch listener: runs in the event loop, for every batch of records
    # the manager publishes)

    def observe(self, event: WorkEvent) -> None:
        """Count the transition of ``event``'s record, as the manager's are counted (the
        state before is the one these metrics last saw of the work)."""
        record, _, external = event
        self._count([record], external)

    def _counter(self) -> Callable[[Sequence[WorkRecord], bool], None]:
        # One closure over the counters, called with each batch of records published:
        # no event per transition, no call per record; local names are read faster than
        # attributes. The counters keep their own "before" of each unfinished work (the
        # events' seen map, which exists only while an event listener does). States are
        # compared by identity and keys hold the state's value (an enum's hash is Python
        # code).
        transitions, retries = self._transitions, self._retries
        timeouts, rescues = self._timeouts, self._rescues
        durations, lateness, bounds = self._durations, self._lateness, self._bounds
        running, enqueued, blocked = _RUNNING, _ENQUEUED, WorkState.BLOCKED
        succeeded = WorkState.SUCCEEDED
        running_name, enqueued_name = running.value, enqueued.value
        succeeded_name = succeeded.value
        not_stopped, timeout, unknown = _NOT_STOPPED, _TIMEOUT, _UNKNOWN
        fold_at, seen_max = _FOLD_AT, SEEN_MAX
        seen: dict[str, int] = {}
        per_worker: dict[str, _Worker] = {}

        def worker_of(worker: str) -> _Worker:
            found = per_worker[worker] = _Worker(
                transitions.setdefault(worker, {}),
                lateness.setdefault(worker, _Histogram(bounds)),
                durations.setdefault(worker, _Histogram(bounds)),
            )
            return found

        def see(records: Sequence[WorkRecord]) -> None:
            # Records another process wrote (that process counts them): remembered only.
            for record in records:
                code = seen_code(record.state, record.run_attempt_count)
                if code is None:
                    seen.pop(record.id, None)
                else:
                    seen[record.id] = code

        def count(records: Sequence[WorkRecord], external: bool) -> None:
            if external:
                see(records)
            else:
                count_own(records)
            while len(seen) > seen_max:
                del seen[next(iter(seen))]  # the work seen first
            for w in per_worker.values():  # (a handful of workers; once per batch)
                if len(w.lateness.pending) >= fold_at:
                    w.lateness.fold()
                if len(w.durations.pending) >= fold_at:
                    w.durations.fold()

        def count_own(records: Sequence[WorkRecord]) -> None:
            # What was last seen of each unfinished work is an int (attempts * 4 + 0
            # ENQUEUED, 1 RUNNING, 2 BLOCKED): no allocation the garbage collector would
            # count, nor traverse while the work waits. The transitions of most works (a
            # new enqueue, a claim, a success) take the shortest paths.
            seen_get, seen_pop = seen.get, seen.pop
            name: str | None = None
            w = cast("_Worker", None)  # (set with name, before its first use)
            for record in records:
                state, key = record.state, record.id
                if state is running:
                    code = record.run_attempt_count * 4 + 1
                    if seen_get(key) == code:
                        continue  # a progress report, or a record published again
                    seen[key] = code
                    worker = record.worker
                    if worker is not name:
                        w = per_worker.get(worker) or worker_of(worker)
                        name = worker
                    counts = w.counts
                    counts[running_name] = counts.get(running_name, 0) + 1
                    due = record.next_run_at  # the due time it was claimed at
                    started = record.started_at
                    if due is not None and started is not None:
                        # (below 0, from a stepped clock, counts as 0)
                        w.lateness.pending.append(started - due)
                    continue
                if state is succeeded:  # (the end of most runs)
                    before = seen_pop(key, None)
                    if (
                        before is not None
                        and before & 3 == 1  # out of RUNNING
                        and record.stop_reason is not_stopped
                    ):
                        worker = record.worker
                        if worker is not name:
                            w = per_worker.get(worker) or worker_of(worker)
                            name = worker
                        counts = w.counts
                        counts[succeeded_name] = counts.get(succeeded_name, 0) + 1
                        started, end = record.started_at, record.finished_at
                        if started is not None and end is not None:
                            w.durations.pending.append(end - started)
                        continue
                elif state is enqueued:
                    code = record.run_attempt_count * 4
                    before = seen_get(key)
                    if before == code:
                        continue  # published again
                    seen[key] = code
                    if before is None and record.stop_reason is not_stopped:
                        # enqueued (or seen here first): a count, nothing else
                        worker = record.worker
                        if worker is not name:
                            w = per_worker.get(worker) or worker_of(worker)
                            name = worker
                        counts = w.counts
                        counts[enqueued_name] = counts.get(enqueued_name, 0) + 1
                        continue
                elif state is blocked:
                    code = record.run_attempt_count * 4 + 2
                    before = seen_get(key)
                    if before == code:
                        continue  # published again
                    seen[key] = code
                else:  # finished: forgotten
                    before = seen_pop(key, None)
                worker = record.worker
                if worker is not name:
                    w = per_worker.get(worker) or worker_of(worker)
                    name = worker
                counts = w.counts
                value = state._value_
                counts[value] = counts.get(value, 0) + 1
                was = -1 if before is None else before & 3  # (-1: not seen; 1: RUNNING)
                if was == 1:
                    started = record.started_at
                    end = record.last_enqueue_time if state is enqueued else record.finished_at
                    if started is not None and end is not None:
                        w.durations.pending.append(end - started)
                elif was >= 0 or state is blocked:
                    continue
                reason = record.stop_reason
                if reason is not_stopped:
                    if was == 1 and state is enqueued and record.run_attempt_count > 0:
                        retries[worker] = retries.get(worker, 0) + 1
                elif reason is timeout:
                    timeouts[worker] = timeouts.get(worker, 0) + 1
                elif reason is unknown and state is enqueued:
                    rescues[worker] = rescues.get(worker, 0) + 1

        return count

    # -- the store's counts (gauges)

    async def refresh(self) -> None:
        """Read the works by worker and state from the store (one query), for the
        ``wm_async_works`` gauges; a manager that is not running keeps the last read.
        :func:`exposition` calls it before every scrape."""
        manager = self._manager()
        if manager is None or manager.state is not RunState.STARTED:
            return
        self._loop = asyncio.get_running_loop()
        try:
            self._counts = await manager.count_works()
        except WorkManagerError as exc:
            logger.warning("metrics: counting the works failed: %s", exc)

    def _refresh_from_thread(self) -> None:
        # A scrape served by another thread (prometheus_client's own HTTP server):
        # read the counts in the manager's loop, briefly.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return  # (exposition refreshed first)
        try:
            asyncio.run_coroutine_threadsafe(self.refresh(), loop).result(timeout=5)
        except Exception as exc:  # noqa: BLE001  # a scrape must not fail for the gauges
            logger.warning("metrics: counting the works failed: %r", exc)

    # -- the Prometheus collector

    def collect(self) -> Iterator[Metric]:
        """The metric families (prometheus_client's collector protocol)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        self._refresh_from_thread()
        transitions = CounterMetricFamily(
            "wm_async_transitions",
            "State transitions written by this process, by the state entered.",
            labels=("worker", "state"),
        )
        for worker, counts in sorted(self._transitions.copy().items()):
            for state, n in sorted(counts.copy().items()):
                transitions.add_metric((worker, state), n)
        yield transitions
        for name, doc, values in (
            ("wm_async_retries", "Runs that ended with a retry.", self._retries),
            ("wm_async_timeouts", "Runs stopped by their timeout.", self._timeouts),
            ("wm_async_rescues", "Works put back by crash recovery.", self._rescues),
        ):
            family = CounterMetricFamily(name, doc, labels=("worker",))
            for worker, n in sorted(values.copy().items()):
                family.add_metric((worker,), n)
            yield family
        for name, doc, hists in (
            ("wm_async_run_duration_seconds", "How long runs took.", self._durations),
            (
                "wm_async_start_lateness_seconds",
                "How long after its due time a run started.",
                self._lateness,
            ),
        ):
            histogram = HistogramMetricFamily(name, doc, labels=("worker",))
            for worker, hist in sorted(hists.copy().items()):
                buckets, sum_ = hist.snapshot()
                histogram.add_metric((worker,), buckets, sum_)
            yield histogram
        works = GaugeMetricFamily(
            "wm_async_works",
            "Works in the store by worker and state (read when scraped).",
            labels=("worker", "state"),
        )
        for (worker, work_state), n in sorted(self._counts.items(), key=_by_name):
            works.add_metric((worker, work_state.value), n)
        yield works


def _by_name(item: tuple[tuple[str, WorkState], int]) -> tuple[str, str]:
    return item[0][0], item[0][1].value


def instrument(
    manager: WorkManager,
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> WorkMetrics:
    """Count ``manager``'s transitions from now on, as Prometheus metrics in ``registry``
    (by default a registry of its own; pass ``prometheus_client.REGISTRY`` to join the
    process's default one). Idempotent: a manager already instrumented gets its metrics
    back.

    :raises InvalidRequestError: if ``manager`` is not a WorkManager, or ``buckets`` are
        not increasing positive numbers
    """
    if not isinstance(manager, WorkManager):
        raise InvalidRequestError("manager", manager, "expected a WorkManager")
    metrics = _instrumented.get(manager)
    if metrics is None:
        metrics = _instrumented[manager] = WorkMetrics(manager, registry, buckets=buckets)
    return metrics


async def exposition(manager: WorkManager) -> tuple[bytes, str]:
    """The body and content type of a Prometheus scrape of ``manager``'s metrics (those
    of :func:`instrument`, which this calls if nothing did): the store's counts are read
    first (one query).

    :raises InvalidRequestError: if ``manager`` is not a WorkManager
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics = instrument(manager)
    await metrics.refresh()
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def asgi_app(
    manager: WorkManager,
) -> Callable[[MutableMapping[str, Any], _Receive, _Send], Awaitable[None]]:
    """An ASGI application serving :func:`exposition` (to any path it is mounted at):
    ``app.mount("/metrics", asgi_app(manager))`` in Starlette or FastAPI.

    :raises InvalidRequestError: if ``manager`` is not a WorkManager
    """
    instrument(manager)

    async def app(scope: MutableMapping[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return  # (lifespan: the app that mounts this one runs the manager)
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, body, content_type = 405, b"method not allowed\n", "text/plain"
        else:
            body, content_type = await exposition(manager)
            status = 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def aiohttp_handler(manager: WorkManager) -> Callable[[Any], Awaitable[Any]]:
    """An aiohttp request handler serving :func:`exposition`:
    ``app.router.add_get("/metrics", aiohttp_handler(manager))``.

    :raises InvalidRequestError: if ``manager`` is not a WorkManager
    """
    from aiohttp import web

    instrument(manager)

    async def handler(request: web.Request) -> web.Response:
        body, content_type = await exposition(manager)
        # aiohttp wants the charset apart from the media type.
        media, _, params = content_type.partition(";")
        charset = params.split("charset=")[-1].strip() if "charset=" in params else None
        return web.Response(body=body, content_type=media.strip(), charset=charset)

    return handler
